"""The W&B mirror against real offline runs in temporary folders: the token table
files, scalars and step metric, the artifact, and every way W&B can be missing or fail."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

wandb = pytest.importorskip("wandb")

from factories import make_entry  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402
from wandb_helpers import (artifacts, history, init_run, manifest, offline_env, records,  # noqa: E402
                           run_folder, table_rows)
from wandb_panel.tables import entry_rows  # noqa: E402

pytestmark = pytest.mark.usefixtures("stop_wandb_service")

TEXTS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
WARN_LOGGER = "seqviz_trackers.wandb"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    offline_env(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def run(offline):
    r = init_run(mode="offline", dir=str(offline))
    yield r
    r.finish()


def entries(steps=(10, 20, 30), texts=TEXTS):
    return [make_entry(step, texts) for step in steps]


def as_json(rows):
    return json.loads(json.dumps(rows))


def warnings_from(caplog, about: str = ""):
    return [r.getMessage() for r in caplog.records
            if r.name == WARN_LOGGER and r.levelno >= logging.WARNING and about in r.getMessage()]


# -- what a step logs ----------------------------------------------------------------------------

def test_table_files_hold_each_steps_rows_once(run, tmp_path):
    steps = entries()
    with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
        for entry in steps:
            logger.log_step(entry)
        mirror = logger.mirrors[0]
        assert mirror._table.data == []  # rows already sent are not kept in memory
    run.finish()
    folder = run_folder(run) / "files" / "media" / "table" / "seqviz"
    files = sorted(folder.glob("tokens_*.table.json"), key=lambda p: int(p.name.split("_")[1]))
    assert len(files) == 3
    for path, entry in zip(files, steps):  # incremental: each file holds only its own step's rows
        assert json.loads(path.read_text())["data"] == as_json(list(entry_rows(entry)))
    assert table_rows(run_folder(run)) == as_json([row for e in steps for row in entry_rows(e)])
    assert mirror.rows_logged == len(table_rows(run_folder(run)))


def test_scalars_and_step_metric(run, tmp_path):
    steps = entries()
    with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
        for entry in steps:
            logger.log_step(entry)
    run.finish()
    rows = [h for h in history(run_folder(run)) if "seqviz/loss" in h]
    assert [h["train/global_step"] for h in rows] == [10, 20, 30]
    for h, entry in zip(rows, steps):
        preds = [p for s in entry["sequences"] for p in s["predictions"]]
        assert h["seqviz/loss"] == pytest.approx(entry["loss"])
        assert h["seqviz/perplexity"] == pytest.approx(entry["perplexity"])
        assert h["seqviz/mean_entropy"] == pytest.approx(sum(p["entropy"] for p in preds) / len(preds))
        assert h["seqviz/top1_accuracy"] == pytest.approx(sum(p["correct"] for p in preds) / len(preds))
        assert h["seqviz/tokens/_type"] == "incremental-table-file"
        assert h["seqviz/tokens/log_mode"] == "INCREMENTAL"
    metrics = [r.metric for r in records(run_folder(run)) if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "seqviz/*" and m.step_metric == "train/global_step" and m.options.step_sync
               for m in metrics)
    assert any(m.name == "train/global_step" for m in metrics)


def test_shares_a_run_with_transformers_wandb_callback(offline, tmp_path, monkeypatch):
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import WandbCallback

    monkeypatch.setenv("WANDB_PROJECT", "seqviz-tests")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    callback, state = WandbCallback(), TrainerState()
    logger = SeqVizLogger(tmp_path / "steps.jsonl", wandb=True)  # built before the Trainer starts the run
    try:
        state.global_step = 10
        callback.on_log(args, state, TrainerControl(), logs={"loss": 2.0})  # starts the run, as in training
        run = wandb.run
        assert run is not None
        logger.log_step(make_entry(10, TEXTS))
        state.global_step = 20
        callback.on_log(args, state, TrainerControl(), logs={"loss": 1.5})
        logger.log_step(make_entry(20, TEXTS))
        logger.close()
    finally:
        wandb.finish()
    logged = history(run_folder(run))
    assert [(h["train/global_step"], h["train/loss"]) for h in logged if "train/loss" in h] == [(10, 2.0), (20, 1.5)]
    assert [h["train/global_step"] for h in logged if "seqviz/loss" in h] == [10, 20]
    per_step = sum(len(s["predictions"]) for s in make_entry(10, TEXTS)["sequences"])
    assert len(table_rows(run_folder(run))) == 2 * per_step


# -- the artifact ----------------------------------------------------------------------------------

def test_artifact_holds_the_jsonl_and_the_table(run, tmp_path):
    steps = entries()
    logger = SeqVizLogger(tmp_path / "steps.jsonl", wandb=run)
    for entry in steps[:2]:
        logger.log_step(entry)
    on_demand = logger.mirrors[0].log_artifact()
    assert on_demand is not None and on_demand.type == "seqviz"
    logger.log_step(steps[2])
    logger.close()
    run.finish()
    found = artifacts(run_folder(run), "seqviz")
    assert [a.name for a in found] == [f"seqviz-{run.id}"] * 2  # on demand, then on close
    files = manifest(found[-1])
    assert sorted(files) == ["steps.jsonl", "tokens.table.json"]
    assert files["steps.jsonl"].read_bytes() == (tmp_path / "steps.jsonl").read_bytes()
    table = json.loads(files["tokens.table.json"].read_text())
    assert table["columns"][:4] == ["step", "sequence", "name", "position"]
    assert table["data"] == as_json([row for e in steps for row in entry_rows(e)])
    first = manifest(found[0])
    assert first["steps.jsonl"].read_bytes().count(b"\n") == 2  # a snapshot, not the growing file


def test_artifact_splits_the_table_at_the_row_cap(run, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(wandb.Table, "MAX_ARTIFACT_ROWS", 25)
    steps = entries()
    with caplog.at_level(logging.INFO, logger=WARN_LOGGER):
        with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
            for entry in steps:
                logger.log_step(entry)
    run.finish()
    expected = as_json([row for e in steps for row in entry_rows(e)])
    parts = -(-len(expected) // 25)
    assert parts >= 2
    (art,) = artifacts(run_folder(run), "seqviz")
    files = manifest(art)
    names = [f"tokens_part{i}.table.json" for i in range(1, parts + 1)]
    assert sorted(files) == sorted(["steps.jsonl", *names])
    got = []
    for name in names:
        data = json.loads(files[name].read_text())["data"]
        assert len(data) <= 25
        got.extend(data)
    assert got == expected  # split, nothing dropped
    assert any(f"{parts} tables" in m for m in caplog.messages)


# -- robustness ------------------------------------------------------------------------------------

def test_a_wandb_failure_warns_once_and_training_goes_on(run, tmp_path, monkeypatch, caplog):
    steps = entries((1, 2, 3, 4))
    path = tmp_path / "steps.jsonl"
    logger = SeqVizLogger(path, wandb=run)
    real_log = run.log

    def quota_exceeded(*args, **kwargs):
        raise RuntimeError("429: quota exceeded")

    monkeypatch.setattr(run, "log", quota_exceeded)
    with caplog.at_level(logging.WARNING):
        for entry in steps[:3]:
            logger.log_step(entry)
        (message,) = warnings_from(caplog, "W&B")
        assert "429: quota exceeded" in message
        assert logger.mirrors, "the mirror stays on: a later step may get through"
        monkeypatch.setattr(run, "log", real_log)
        logger.log_step(steps[3])
        logger.close()
    run.finish()
    assert path.read_bytes().count(b"\n") == 4
    # the failed steps' rows are dropped, not sent late with step 4
    assert table_rows(run_folder(run)) == as_json(list(entry_rows(steps[3])))
    (art,) = artifacts(run_folder(run), "seqviz")
    assert manifest(art)["steps.jsonl"].read_bytes() == path.read_bytes()
    assert len(warnings_from(caplog, "W&B")) == 2 and "3 W&B calls failed" in warnings_from(caplog, "W&B")[1]


def test_a_failing_artifact_upload_warns(run, tmp_path, monkeypatch, caplog):
    logger = SeqVizLogger(tmp_path / "steps.jsonl", wandb=run)
    logger.log_step(make_entry(5, TEXTS))

    def offline_disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(run, "log_artifact", offline_disk_full)
    with caplog.at_level(logging.WARNING):
        logger.close()
    (message,) = warnings_from(caplog, "W&B")
    assert "seqviz artifact" in message and "No space left" in message


def test_run_finished_before_the_logger_closes(offline, tmp_path, caplog):
    run = init_run(mode="offline", dir=str(offline))
    logger = SeqVizLogger(tmp_path / "steps.jsonl", wandb=run)
    logger.log_step(make_entry(1, TEXTS))
    run.finish()
    with caplog.at_level(logging.WARNING):
        logger.log_step(make_entry(2, TEXTS))
        logger.close()
    assert (tmp_path / "steps.jsonl").read_bytes().count(b"\n") == 2
    messages = warnings_from(caplog, "W&B")
    assert len(messages) == 2  # the failed step, then the artifact that could not be logged
    assert all("is finished" in m for m in messages)


def test_no_active_run_says_so_once_then_mirrors_when_a_run_starts(offline, tmp_path, caplog):
    assert wandb.run is None
    path = tmp_path / "steps.jsonl"
    with caplog.at_level(logging.WARNING):
        logger = SeqVizLogger(path, wandb=True)
        assert warnings_from(caplog) == []  # a Trainer may start the run later
        logger.log_step(make_entry(1, TEXTS))
        logger.log_step(make_entry(2, TEXTS))
        (message,) = warnings_from(caplog, "run")
        assert "wandb.init()" in message and "wandb.run is None" in message
        run = init_run(mode="offline", dir=str(offline))
        try:
            logger.log_step(make_entry(3, TEXTS))
            logger.close()
        finally:
            run.finish()
    assert path.read_bytes().count(b"\n") == 3
    assert {row[0] for row in table_rows(run_folder(run))} == {3}
    (art,) = artifacts(run_folder(run), "seqviz")
    assert manifest(art)["steps.jsonl"].read_bytes().count(b"\n") == 1
    assert len(warnings_from(caplog, "run")) == 1


@pytest.mark.parametrize("how", ["run", "active"])
def test_disabled_mode_does_nothing_quietly(offline, tmp_path, caplog, how):
    run = init_run(mode="disabled")
    try:
        with caplog.at_level(logging.WARNING):
            with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run if how == "run" else True) as logger:
                logger.log_step(make_entry(1, TEXTS))
                mirror = logger.mirrors[0]
        assert mirror.disabled and mirror.log_artifact() is None
        assert warnings_from(caplog) == []
    finally:
        run.finish()
    assert (tmp_path / "steps.jsonl").read_bytes().count(b"\n") == 1
    assert not (offline / "wandb").exists()


def test_wrong_target_is_a_clear_error():
    with pytest.raises(TypeError, match=r"wandb= takes a W&B run .* not str"):
        SeqVizLogger(wandb="my-project")


def test_big_step_warns_about_the_run_file_row_cap(run, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 5)
    with caplog.at_level(logging.WARNING):
        with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
            logger.log_step(make_entry(1, TEXTS))
            logger.log_step(make_entry(2, TEXTS))
    (message,) = warnings_from(caplog, "rows")
    assert "at most 5" in message


def test_without_wandb_installed():
    code = (
        "import sys\n"
        "sys.modules['wandb'] = None  # as if not installed\n"
        "import seqviz_trackers\n"
        "from seqviz_trackers import SeqVizLogger\n"
        "try:\n"
        "    import wandb_panel\n"
        "except ImportError:\n"
        "    print('panel: ImportError')\n"
        "try:\n"
        "    SeqVizLogger(wandb=True)\n"
        "except ImportError as exc:\n"
        "    print('logger:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "panel: ImportError" in out.stdout
    assert "pip install wandb (the 'wandb' extra)" in out.stdout


def test_core_import_does_not_import_wandb():
    code = "import sys, seqviz_trackers; from seqviz_trackers import SeqVizLogger; print('wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
