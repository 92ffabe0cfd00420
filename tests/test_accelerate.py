"""🤗 Accelerate: ``SeqVizTracker`` in ``Accelerator(log_with=[...])``, under a real
``accelerate launch --multi_gpu --num_processes 2`` on the CPU (gloo), with TensorBoard and offline W&B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

from dist_helpers import free_port, quiet_env  # noqa: E402
from tb_helpers import TensorBoardProcess, wait_for  # noqa: E402
from wandb_helpers import artifacts, history, offline_env  # noqa: E402
from seqviz_trackers.format.schema import validate_entry  # noqa: E402
from seqviz_trackers.integrations.accelerate import SeqVizTracker, log_batch, log_predictions  # noqa: E402

SCRIPT = Path(__file__).with_name("accelerate_script.py")
P = "/data/plugin/seqviz"


def lines(path: Path) -> tuple[bytes, list[dict]]:
    raw = Path(path).read_bytes()
    assert raw.endswith(b"\n")
    return raw, [json.loads(line) for line in raw.splitlines()]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("accel")
    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, out / "wandb_home")
        env = quiet_env(HF_HOME=str(out / "hf"))
    # ``--cpu --num_processes 2`` starts one process unless mpirun is used; ``--multi_gpu`` starts two
    # through torchrun, and the script's ``Accelerator(cpu=True)`` keeps them on the CPU (gloo).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = {r: json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)}
    return out, reports


@pytest.mark.slow
def test_main_process_writes_whole_lines_at_the_probe_steps(launched):
    out, reports = launched
    assert reports[0]["num_processes"] == reports[1]["num_processes"] == 2
    assert reports[0]["returned"] == [2, 4, 6]
    assert reports[1]["returned"] == [None] * 3  # returned at once: converting there would have raised
    assert reports[0]["forwards"] == reports[1]["forwards"] == 3  # every process ran every probe forward
    raw, entries = lines(out / "seqviz.jsonl")
    assert [e["step"] for e in entries] == [2, 4, 6]  # one writer: each step once
    for e in entries:
        validate_entry(e)
        assert [s["name"] for s in e["sequences"]] == ["probe[0]", "probe[1]"]
        assert e["metadata"]["model_name"] == "tiny"
        assert e["loss"] > 0
    assert entries[0]["sequences"][0]["tokens"] == entries[2]["sequences"][0]["tokens"]  # the same probe each time
    # the TensorBoard tracker's own run directory holds the same lines
    tb_dir = Path(reports[0]["tensorboard_dir"])
    assert tb_dir == out / "accel"
    assert (tb_dir / "plugins" / "seqviz" / "steps.jsonl").read_bytes() == raw


@pytest.mark.slow
def test_every_process_logs_batches_and_the_main_process_writes_both_ranks_rows(launched):
    out, reports = launched
    assert reports[0]["last_batch"] == reports[1]["last_batch"] == 6  # finish_batch: the same record on each
    assert reports[0]["last_rows"] == reports[1]["last_rows"] == [0, 0, 1, 1]
    recs = [json.loads(line) for line in (out / "seqviz.jsonl.batches").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]  # one writer: each step once
    seen = []
    for r in recs:
        rows = r["rows"]
        assert rows["rank"] == [0, 0, 1, 1]  # batch 2 per process, gathered in rank order
        assert all(l > 0 for l in rows["loss"]) and rows["tokens"] == [15] * 4
        seen += rows["index"]
        assert len(set(rows["index"])) == 4  # each process its own rows
    assert sorted(seen[:16]) == list(range(16))  # the first epoch (4 steps x 4 rows): every example once
    assert [r["reason"] for r in recs] == [None, None, "scheduled", None, None, "scheduled"]
    for r in (recs[2], recs[5]):
        meta = r["capture"]["metadata"]
        assert meta["kinds"] == ["top", "random"] and meta["source"] == "train_batch"
        assert meta["rows"][0] == max(range(4), key=lambda i: r["rows"]["loss"][i])  # top row over both ranks
        validate_entry(r["capture"])
    # the TensorBoard mirror keeps the same lines beside its asset
    tb_dir = Path(reports[0]["tensorboard_dir"])
    assert (tb_dir / "plugins" / "seqviz" / "steps.jsonl.batches").read_bytes() == (out / "seqviz.jsonl.batches").read_bytes()


@pytest.mark.slow
def test_real_tensorboard_shows_seqviz_beside_the_accelerate_scalars(launched, tmp_path):
    out, reports = launched
    tb = TensorBoardProcess(out, load_fast=False, log_path=tmp_path / "tb.log")
    try:
        listing = wait_for(lambda: tb.get("/data/plugins_listing")[1]["seqviz"]["enabled"])
        assert listing
        runs = wait_for(lambda: tb.get(f"{P}/runs")[1]["runs"], timeout=30)
        assert runs == [{"run": "accel", "num_steps": 3, "last_step": 6}]
        status, steps = tb.get(f"{P}/steps?run=accel")
        assert status == 200 and [s["step"] for s in steps["steps"]] == [2, 4, 6]
        # accelerator.log's scalars went to the same run
        scalars = wait_for(lambda: tb.get("/data/plugin/scalars/scalars?run=accel&tag=train_loss"))
        assert scalars[0] == 200 and [row[1] for row in scalars[1]] == [1, 2, 3, 4, 5, 6]
        assert "accel" in tb.get("/data/plugin/scalars/tags")[1]
    finally:
        tb.stop()


@pytest.mark.slow
def test_wandb_run_of_the_accelerator_gets_the_panel_and_the_scalars(launched):
    out, reports = launched
    run_dir = Path(reports[0]["wandb_dir"])
    assert run_dir.is_relative_to(out / "wandb_home")
    logged = history(run_dir)
    seqviz_steps = [h["train/global_step"] for h in logged if "seqviz/loss" in h]
    assert seqviz_steps == [2, 4, 6]
    # accelerator.log's rows and the seqviz rows share W&B's steps
    assert [h["_step"] for h in logged if "train_loss" in h] == [1, 2, 3, 4, 5, 6]
    assert all(h["_step"] == h["train/global_step"] and h["seqviz/dashboard/_type"] == "html-file"
               for h in logged if "seqviz/loss" in h)
    assert (run_dir / "seqviz" / "steps.jsonl").read_bytes() == (out / "seqviz.jsonl").read_bytes()
    assert [a.type for a in artifacts(run_dir, "seqviz")] == ["seqviz"]  # logged before the run finished


@pytest.fixture
def fresh_state():
    """Accelerate keeps its state in process-wide singletons: leave none behind for other tests."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_helper_without_a_tracker_says_what_to_do(tmp_path, fresh_state):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, log_with=["tensorboard"], project_dir=str(tmp_path))
    accelerator.init_trackers("x")
    try:
        with pytest.raises(ValueError, match=r"holds no SeqVizTracker: pass Accelerator\(log_with=\[SeqVizTracker"):
            log_predictions(accelerator, torch.randn(1, 4, 10), torch.tensor([[1, 2, 3, 4]]), None, 1)
    finally:
        accelerator.end_training()


def test_tracker_follows_the_accelerator_and_forced_choices(tmp_path, fresh_state):
    from accelerate import Accelerator

    seqviz = SeqVizTracker(tmp_path / "a.jsonl")
    off = SeqVizTracker(tmp_path / "b.jsonl", tensorboard=False)
    accelerator = Accelerator(cpu=True, log_with=[seqviz, "tensorboard"], project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    assert seqviz.accelerator is accelerator
    accelerator.log({"loss": 1.5}, step=1)  # scalars pass by
    entry = seqviz.log_predictions(torch.randn(1, 4, 10), torch.tensor([[1, 2, 3, 4]]), None, 1, top_k=3)
    assert len(entry["sequences"][0]["predictions"][0]["top_k"]) == 3
    assert accelerator.get_tracker("seqviz", unwrap=True) is seqviz.tracker
    with pytest.raises(ValueError, match=r"input_ids has shape \(1, 3\), expected \(1, 4\)"):
        seqviz.log_predictions(torch.randn(1, 4, 10), torch.tensor([[1, 2, 3]]), None, 2)
    accelerator.end_training()
    assert (tmp_path / "run" / "plugins" / "seqviz" / "steps.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    # tensorboard=False: no mirror, even with the accelerator's tracker at hand
    off.accelerator = accelerator
    assert off.tracker.mirrors == []
    off.finish()
    # tensorboard=True without a tensorboard tracker: a clear error
    forced = SeqVizTracker(tmp_path / "c.jsonl", tensorboard=True)
    with pytest.raises(ValueError, match=r"tensorboard=True\): the Accelerator has no 'tensorboard' tracker"):
        forced.log_predictions(torch.randn(1, 4, 10), torch.tensor([[1, 2, 3, 4]]), None, 1)


def test_one_process_log_batch_and_end_training_close_the_last_step(tmp_path, fresh_state):
    from accelerate import Accelerator

    seqviz = SeqVizTracker(tmp_path / "a.jsonl")
    accelerator = Accelerator(cpu=True, log_with=[seqviz], project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    ids = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    for step in (1, 2):
        for _micro in range(2):
            log_batch(accelerator, torch.randn(2, 4, 10), ids, step=step, capture=1)
    accelerator.end_training()  # one process: finishing the tracker closes step 2
    recs = [json.loads(line) for line in (tmp_path / "a.jsonl.batches").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    assert all(len(r["rows"]["loss"]) == 4 and r["reason"] == "scheduled" for r in recs)
    with pytest.raises(ValueError, match=r"holds no SeqVizTracker.*before logging batches"):
        log_batch(Accelerator(cpu=True), torch.randn(1, 4, 10), ids[:1], step=1)


def test_importing_the_integration_needs_no_transformers():
    code = ("import sys; import seqviz_trackers.integrations.accelerate; "
            "print(sorted(m for m in ('transformers', 'tensorboard', 'wandb') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
