"""VisualizationCallback inside a real Hugging Face Trainer with a tiny GPT-2."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, default_data_collator  # noqa: E402

from hf_helpers import LINES, dataset, read, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]



def tokens_of(tok, text: str) -> list[str]:
    from seqviz_trackers.format.tokens import token_strings

    return token_strings(tok, tok(text)["input_ids"])


class ModeSpy(TrainerCallback):
    """Records the model's train/eval mode after the callbacks before it ran."""

    def __init__(self):
        self.modes: list[tuple[str, bool]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.modes.append(("step", model.training))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.modes.append(("evaluate", model.training))


def test_probe_is_the_same_eval_examples_at_every_evaluation(tmp_path):
    tok = tokenizer()
    data = dataset(tok)
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=4)
    before, after = ModeSpy(), ModeSpy()
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, eval_on_start=True),
                      train_dataset=data, eval_dataset=data, processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[before, viz, after])
    trainer.train()

    entries = read(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [0, 2, 4]
    assert viz.probe_forwards == 3
    for entry in entries:
        assert entry["metadata"]["source"] == "evaluate"
        assert math.isfinite(entry["metadata"]["eval_loss"])
        assert [s["name"] for s in entry["sequences"]] == ["eval[0]", "eval[1]", "eval[2]", "eval[3]"]
        for seq, line in zip(entry["sequences"], LINES):
            assert seq["tokens"] == tokens_of(tok, line)  # right padding removed
            assert len(seq["predictions"]) == len(seq["tokens"]) - 1
    # The probe changes nothing in the trainer's view of the model's mode.
    assert before.modes == after.modes


def test_every_n_steps_probes_training_examples_in_eval_mode(tmp_path):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2, every_n_steps=1)
    spy = ModeSpy()
    model = tiny_model(len(tok))
    probe_modes: list[bool] = []
    model.register_forward_hook(lambda m, i, o: None if torch.is_grad_enabled() else probe_modes.append(m.training))
    trainer = Trainer(model=model, args=training_args(tmp_path, max_steps=3, eval_strategy="no"),
                      train_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz, spy])
    trainer.train()

    entries = read(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert {e["metadata"]["source"] for e in entries} == {"train_step"}
    assert [s["name"] for s in entries[0]["sequences"]] == ["train[0]", "train[1]"]
    assert probe_modes == [False, False, False]  # the probe ran in eval mode...
    assert spy.modes == [("step", True)] * 3  # ...and training mode was restored


def test_left_padding(tmp_path):
    tok = tokenizer(side="left")
    data = dataset(tok)
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=3)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path), eval_dataset=data,
                      processing_class=tok, data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=[viz])
    trainer.evaluate()

    (entry,) = read(tmp_path / "viz.jsonl")
    for seq, line in zip(entry["sequences"], LINES):
        assert seq["tokens"] == tokens_of(tok, line)
        assert [p["position"] for p in seq["predictions"]] == list(range(len(seq["tokens"]) - 1))


def test_masked_labels_are_not_predicted(tmp_path):
    tok = tokenizer()
    lm_collator = DataCollatorForLanguageModeling(tok, mlm=False)

    def collator(features):
        batch = lm_collator(features)
        batch["labels"][:, :3] = -100  # a "prompt" of three tokens
        return batch

    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path), eval_dataset=dataset(tok),
                      processing_class=tok, data_collator=collator, callbacks=[viz])
    trainer.evaluate()

    (entry,) = read(tmp_path / "viz.jsonl")
    for seq, line in zip(entry["sequences"], LINES):
        ids = tok(line)["input_ids"]
        assert seq["tokens"] == tokens_of(tok, line)  # the prompt is still shown...
        assert [p["position"] for p in seq["predictions"]] == list(range(2, len(ids) - 1))  # ...not scored
        assert [p["target_token_id"] for p in seq["predictions"]] == ids[3:]


def test_probe_texts_with_a_tokenizer_without_pad_token(tmp_path):
    tok = tokenizer(pad=False)
    assert tok.pad_token_id is None
    same_length = [{"input_ids": ids, "labels": ids} for ids in (tok(line)["input_ids"][:6] for line in LINES)]
    texts = ["To be, or not to be", "The slings and arrows of outrageous fortune"]
    viz = VisualizationCallback(tmp_path / "viz.jsonl", probe_texts=texts)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, max_steps=2), train_dataset=same_length,
                      eval_dataset=same_length, processing_class=tok, data_collator=default_data_collator,
                      callbacks=[viz])
    trainer.train()

    entries = read(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [2]
    seqs = entries[0]["sequences"]
    assert [s["name"] for s in seqs] == ["probe[0]", "probe[1]"]
    assert [s["tokens"] for s in seqs] == [tokens_of(tok, t) for t in texts]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model(tmp_path, dtype):
    tok = tokenizer()
    model = tiny_model(len(tok)).to(dtype)
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2)
    trainer = Trainer(model=model, args=training_args(tmp_path), eval_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    trainer.evaluate()

    (entry,) = read(tmp_path / "viz.jsonl")
    assert entry["step"] == 0 and math.isfinite(entry["loss"])
    probs = [p["target_prob"] for s in entry["sequences"] for p in s["predictions"]]
    assert probs and all(0 < p < 1 for p in probs)


def test_tokenizer_found_in_the_data_collator(tmp_path):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=1)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, max_steps=2), train_dataset=dataset(tok),
                      eval_dataset=dataset(tok), data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=[viz])
    assert trainer.processing_class is None
    trainer.train()
    (entry,) = read(tmp_path / "viz.jsonl")
    assert entry["sequences"][0]["tokens"] == tokens_of(tok, LINES[0])


def test_tokenizer_given_to_the_callback(tmp_path):
    tok = tokenizer()
    same_length = [{"input_ids": ids, "labels": ids} for ids in (tok(line)["input_ids"][:6] for line in LINES)]
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=1, tokenizer=tok)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, max_steps=2), train_dataset=same_length,
                      eval_dataset=same_length, data_collator=default_data_collator, callbacks=[viz])
    trainer.train()
    (entry,) = read(tmp_path / "viz.jsonl")
    assert entry["sequences"][0]["tokens"] == tokens_of(tok, LINES[0])[:6]


def test_no_tokenizer_is_one_clear_error_at_train_begin(tmp_path):
    tok = tokenizer()
    same_length = [{"input_ids": ids, "labels": ids} for ids in (tok(line)["input_ids"][:6] for line in LINES)]
    viz = VisualizationCallback(tmp_path / "viz.jsonl")
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, max_steps=2), train_dataset=same_length,
                      eval_dataset=same_length, data_collator=default_data_collator, callbacks=[viz])
    with pytest.raises(ValueError, match=r"needs a tokenizer.*processing_class.*VisualizationCallback\(tokenizer="):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not (tmp_path / "viz.jsonl").exists()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="max_sequences_per_eval"):
        VisualizationCallback(max_sequences_per_eval=0)
    with pytest.raises(ValueError, match="every_n_steps"):
        VisualizationCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="probe_texts"):
        VisualizationCallback(probe_texts="To be")


def test_a_bad_probe_text_stops_training_before_the_first_step(tmp_path):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / "viz.jsonl", probe_texts=["To be, or not to be", "To"])
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path), train_dataset=dataset(tok),
                      eval_dataset=dataset(tok),
                      processing_class=tok, data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=[viz])
    with pytest.raises(ValueError, match="probe text 'To' has fewer than 2 tokens"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_nan_logits_skip_the_step_with_a_warning_and_evaluation_goes_on(tmp_path, caplog):
    tok = tokenizer()
    model = tiny_model(len(tok))
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2)
    trainer = Trainer(model=model, args=training_args(tmp_path), eval_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    with caplog.at_level("WARNING", logger="seqviz_trackers"):
        metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    assert "step 0 not logged" in caplog.text and "NaN" in caplog.text
    assert not (tmp_path / "viz.jsonl").exists() or read(tmp_path / "viz.jsonl") == []
