"""Training-batch capture from the training forward: HF Trainer (gradient accumulation 2),
SeqVizLogger.log_batch, the batches file, and models that give no logits."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

pytest.importorskip("transformers")

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402

from hf_helpers import LINES, dataset, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402
from seqviz_trackers.storage.batches import batches_path  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def records(jsonl) -> list[dict]:
    with open(batches_path(jsonl), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class IndexedCollator:
    """The LM collator, passing each example's "idx" through as a tensor."""

    def __init__(self, tok):
        self.inner = DataCollatorForLanguageModeling(tok, mlm=False)

    def __call__(self, features):
        idx = torch.tensor([f["idx"] for f in features])
        batch = self.inner([{"input_ids": f["input_ids"]} for f in features])
        batch["idx"] = idx
        return batch


def row_losses(logits, labels) -> list[float]:
    """Each row's mean token loss, computed independently of seqviz (shifted labels, -100 ignored)."""
    labels = labels[:, 1:]
    token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none", ignore_index=-100)
    return ((token * (labels != -100)).sum(1) / (labels != -100).sum(1)).tolist()


def per_row_loss(model, batch) -> list[float]:
    with torch.no_grad():
        return row_losses(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])


def test_trainer_with_gradient_accumulation_captures_every_row_without_a_second_forward(tmp_path):
    tok = tokenizer()
    data = [dict(ex, idx=i) for i, ex in enumerate(dataset(tok, repeat=2))]  # 12 examples, each line twice
    model = tiny_model(len(tok))
    forwards, expected = [], []

    def spy(module, args, kwargs, out):  # every training forward, and its rows' losses computed here
        forwards.append(module.training and torch.is_grad_enabled())
        if forwards[-1]:
            expected.append(row_losses(out.logits.detach(), kwargs["labels"]))

    model.register_forward_hook(spy, with_kwargs=True)
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2,
                                capture_train=CaptureOptions(every=2, top_rows=1, random_rows=1))
    args = training_args(tmp_path, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         eval_strategy="no", logging_steps=1, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok,
                      data_collator=IndexedCollator(tok), callbacks=[viz])
    trainer.train()

    recs = records(tmp_path / "viz.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3]
    # 3 optimizer steps x 2 micro-batches: the model ran 6 training forwards, no more.
    assert forwards.count(True) == 6
    seen = []
    for k, r in enumerate(recs):
        rows = r["rows"]
        assert len(rows["loss"]) == 4 and rows["rank"] == [0, 0, 0, 0]  # 2 micro-batches x 2 rows
        # the losses of the logits the training forward computed, micro-batches in order
        assert rows["loss"] == pytest.approx(expected[2 * k] + expected[2 * k + 1], rel=1e-4)
        seen += rows["index"]
        # the step's loss is the mean token loss over both micro-batches
        mean = sum(l * n for l, n in zip(rows["loss"], rows["tokens"])) / sum(rows["tokens"])
        assert math.isclose(r["loss"], mean, rel_tol=1e-4)
    assert sorted(seen) == sorted(set(seen)) and all(0 <= i < 12 for i in seen)  # one epoch: each example once
    # a repeated line hashes the same, different lines do not
    hash_of = {}
    for r in recs:
        for i, h in zip(r["rows"]["index"], r["rows"]["hash"]):
            hash_of[i] = h
    for i in hash_of:
        for j in hash_of:
            assert (hash_of[i] == hash_of[j]) == (i % len(LINES) == j % len(LINES))
    # step 2 is a capture step: the highest-loss row of the step and a random one, in the entry format
    cap = recs[1]["capture"]
    assert recs[1]["reason"] == "scheduled" and recs[0]["capture"] is None and recs[2]["capture"] is None
    meta = cap["metadata"]
    assert meta["kinds"] == ["top", "random"] and meta["source"] == "train_batch"
    order = sorted(range(4), key=lambda i: -recs[1]["rows"]["loss"][i])
    assert meta["rows"][0] == order[0] and meta["rows"][1] != order[0]
    for seq, row in zip(cap["sequences"], meta["rows"]):
        text = LINES[recs[1]["rows"]["index"][row] % len(LINES)]
        assert "".join(seq["tokens"]) == text
        assert seq["name"] == f"row {row}"
        token_losses = [p["loss"] for p in seq["predictions"]]
        assert math.isclose(sum(token_losses) / len(token_losses), recs[1]["rows"]["loss"][row], rel_tol=1e-3)


def test_log_batch_row_losses_match_an_independent_computation(tmp_path):
    tok = tokenizer()
    model = tiny_model(len(tok)).eval()  # no dropout: the same logits again below
    collate = DataCollatorForLanguageModeling(tok, mlm=False)
    batches = [collate(dataset(tok, repeat=1)[:3]), collate(dataset(tok, repeat=1)[3:])]
    with SeqVizLogger(tmp_path / "run.jsonl") as logger:
        for step in (1, 2):
            for batch in batches:
                out = model(**batch)
                logger.log_batch(out.logits, batch["input_ids"], batch["labels"], step=step,
                                 attention_mask=batch["attention_mask"], tokenizer=tok, capture=CaptureOptions(every=2))
    recs = records(tmp_path / "run.jsonl")
    assert [r["step"] for r in recs] == [1, 2]
    expected = per_row_loss(model, batches[0]) + per_row_loss(model, batches[1])
    for r in recs:
        assert r["rows"]["loss"] == pytest.approx(expected, rel=1e-4)
        assert "index" not in r["rows"]
    assert recs[0]["capture"] is None
    captured = recs[1]["capture"]
    assert {s["name"] for s in captured["sequences"]} == {f"row {i}" for i in range(6)}  # 4 top + 2 random of 6


def test_a_model_without_logits_is_said_once_and_nothing_is_captured(tmp_path, caplog):
    tok = tokenizer()
    model = tiny_model(len(tok))

    class FusedLoss(torch.nn.Module):  # a fused linear-cross-entropy model: loss only, no logits
        def __init__(self):
            super().__init__()
            self.inner = model
            self.config = model.config

        def forward(self, input_ids=None, attention_mask=None, labels=None, **kw):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
            return {"loss": out.loss, "logits": None}

    viz = VisualizationCallback(tmp_path / "viz.jsonl", capture_train=True)
    trainer = Trainer(model=FusedLoss(), args=training_args(tmp_path, max_steps=2, eval_strategy="no"),
                      train_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    with caplog.at_level(logging.WARNING, logger="seqviz_trackers"):
        trainer.train()
    said = [r.message for r in caplog.records if "no logits" in r.message]
    assert len(said) == 1
    import os
    assert not os.path.exists(batches_path(tmp_path / "viz.jsonl"))
