"""VisualizationCallback with TRL's SFTTrainer (a Trainer subclass with its own collator)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from trl import SFTConfig, SFTTrainer  # noqa: E402

from hf_helpers import LINES, read, tiny_model, tokenizer  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402
from seqviz_trackers.format.tokens import token_strings  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]



def test_sft_trainer_with_the_callback_alone(tmp_path):
    tok = tokenizer()
    data = datasets.Dataset.from_dict({"text": LINES * 2})
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                     eval_strategy="steps", eval_steps=2, save_strategy="no", report_to="none", use_cpu=True,
                     disable_tqdm=True, max_length=32, dataset_text_field="text")
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2)
    trainer = SFTTrainer(model=tiny_model(len(tok)), args=args, train_dataset=data, eval_dataset=data,
                         processing_class=tok, callbacks=[viz])
    trainer.train()

    (entry,) = read(tmp_path / "viz.jsonl")
    assert entry["step"] == 2
    first = entry["sequences"][0]
    assert first["name"] == "eval[0]"
    # SFTTrainer tokenized the text itself (it may add an end-of-text token).
    expected = token_strings(tok, tok(LINES[0])["input_ids"])
    assert first["tokens"][:len(expected)] == expected
    assert len(first["predictions"]) >= len(expected) - 1
