"""``seqviz/train_batches`` in W&B (offline, real wandb): a real HF Trainer with
``capture_train`` and ``report_to=["wandb"]`` logs, at each capture step, one table row per
captured row (step, row, row loss, text, kind), the same rows as the batches file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("wandb")
pytest.importorskip("wandb_panel")

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402

from hf_helpers import LINES, dataset, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402
from seqviz_trackers.storage.batches import batches_path  # noqa: E402
from wandb_helpers import offline_env, run_folder, table_rows  # noqa: E402
from wandb_panel.tables import BATCH_COLUMNS, BATCH_TEXT_CHARS, batch_rows  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    import wandb

    offline_env(monkeypatch, tmp_path / "wb")
    monkeypatch.setenv("WANDB_PROJECT", "seqviz-test")
    monkeypatch.setenv("WANDB_LOG_MODEL", "false")
    yield wandb
    if wandb.run is not None:
        wandb.finish()


def test_capture_steps_log_their_rows_to_the_train_batches_table(tmp_path, offline_wandb):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=2,
                                capture_train=CaptureOptions(every=2, top_rows=1, random_rows=1))
    args = training_args(tmp_path / "out", max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         eval_strategy="no", logging_steps=1, report_to=["wandb"])
    trainer = Trainer(model=tiny_model(len(tok)), args=args, train_dataset=dataset(tok, repeat=2), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    trainer.train()
    run = offline_wandb.run
    assert run is not None
    records = [json.loads(line) for line in Path(batches_path(tmp_path / "viz.jsonl")).read_text("utf-8").splitlines()]
    captured = [r for r in records if r["capture"]]
    assert [r["step"] for r in captured] == [2, 4]  # every 2 steps; nothing else was a spike this early
    offline_wandb.finish()

    rows = table_rows(run_folder(run), "seqviz/train_batches")
    expected = [row for r in captured for row in batch_rows(r)]
    assert len(rows) == len(expected) == 4  # two steps x (the highest-loss row + one random row)
    assert rows == [[s, i, pytest.approx(l, rel=1e-6), t, k] for s, i, l, t, k in expected]
    for step, row, loss, text, kind in rows:
        assert step in (2, 4) and kind in ("top", "random") and loss > 0
        assert text in LINES  # the row's decoded tokens
    for r in captured:  # per step: the highest-loss row first, and it is the step's highest
        mine = [x for x in rows if x[0] == r["step"]]
        assert mine[0][4] == "top" and mine[0][2] == pytest.approx(max(r["rows"]["loss"]), rel=1e-4)
    table = json.loads(next((run_folder(run) / "files" / "media" / "table" / "seqviz").glob("train_batches_*.table.json")).read_text())
    assert table["columns"] == BATCH_COLUMNS


def test_batch_rows_cut_long_texts_and_skip_steps_without_capture():
    assert list(batch_rows({"step": 3, "capture": None})) == []
    record = {"step": 7, "capture": {"metadata": {"rows": [4], "kinds": ["top"], "row_loss": [2.5]},
                                     "sequences": [{"tokens": ["ab"] * BATCH_TEXT_CHARS}]}}
    ((step, row, loss, text, kind),) = batch_rows(record)
    assert (step, row, loss, kind) == (7, 4, 2.5, "top")
    assert len(text) == BATCH_TEXT_CHARS and text.endswith("\u2026")
