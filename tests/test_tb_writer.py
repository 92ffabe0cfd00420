"""The TensorBoard mirror: assets + marker summaries in the run directory, no TensorFlow."""

from __future__ import annotations

import glob
import math

import pytest

from tb_helpers import entry, mirror_run, wsgi_app

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from seqviz_trackers import SeqVizLogger, TrainingDataReader
from seqviz_trackers.storage.jsonl import encode_entry
from tb_plugin import TensorBoardMirror, asset_path


def _events(run_dir):
    files = sorted(glob.glob(str(run_dir / "events.out.tfevents.*")))
    out = []
    for path in files:
        out.extend(ev for ev in event_file_loader.EventFileLoader(path).Load() if ev.HasField("summary"))
    return files, out


def test_mirror_writes_asset_lines_and_marker_summaries(tmp_path):
    run = tmp_path / "run"
    entries = [entry(s, loss=1.5 + s) for s in range(3)]
    with SeqVizLogger(tensorboard=run) as logger:
        for e in entries:
            logger.log_step(e)

    assert asset_path(run).read_bytes() == b"".join(encode_entry(e) for e in entries)
    files, events = _events(run)
    assert len(files) == 1
    assert [ev.step for ev in events] == [0, 1, 2]
    for ev, e in zip(events, entries):
        (value,) = ev.summary.value
        assert value.tag == "seqviz"
        assert value.metadata.plugin_data.plugin_name == "seqviz"
        assert value.metadata.data_class == summary_pb2.DATA_CLASS_TENSOR
        assert tensor_util.make_ndarray(value.tensor).item() == pytest.approx(e["loss"])
        assert ev.wall_time == pytest.approx(e["timestamp"])


def test_missing_loss_is_nan_in_the_marker(tmp_path):
    e = entry(7)
    e["loss"] = None
    with TensorBoardMirror(tmp_path / "r") as mirror:
        mirror.log_step(e)
    _, (ev,) = _events(tmp_path / "r")
    assert math.isnan(tensor_util.make_ndarray(ev.summary.value[0].tensor).item())


def test_users_summary_writer_shares_its_run_and_stays_open(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "exp" / "lr_1e-3"))
    writer.add_scalar("train/loss", 2.0, 0)
    mirror_run(writer, range(4))
    assert writer.file_writer is not None, "the user's writer must not be closed"
    writer.add_scalar("train/loss", 1.0, 4)
    writer.close()

    files, events = _events(tmp_path / "exp" / "lr_1e-3")
    assert len(files) == 1, "scalars and seqviz markers share one event file"
    tags = {v.tag for ev in events for v in ev.summary.value}
    assert tags == {"train/loss", "seqviz"}
    assert len(TrainingDataReader(asset_path(tmp_path / "exp" / "lr_1e-3")).steps) == 4

    client, _, multiplexer = wsgi_app(tmp_path / "exp")
    assert client.get("/data/plugin/seqviz/runs").json == {"runs": [{"run": "lr_1e-3", "num_steps": 4, "last_step": 3}]}
    assert "train/loss" in multiplexer.Runs()["lr_1e-3"]["tensors"]


def test_crash_mid_write_leaves_the_run_readable(tmp_path):
    run = tmp_path / "run"
    mirror_run(run, range(3))
    with open(asset_path(run), "ab") as f:  # a process killed half-way through a line
        f.write(encode_entry(entry(3))[:500])

    client, _, _ = wsgi_app(tmp_path)
    steps = client.get("/data/plugin/seqviz/steps?run=run").json
    assert [s["step"] for s in steps["steps"]] == [0, 1, 2]

    mirror_run(run, [3, 4])  # the next writer removes the torn tail and goes on
    assert [s.step for s in TrainingDataReader(asset_path(run)).steps] == [0, 1, 2, 3, 4]


def test_nested_run_directory_is_created(tmp_path):
    mirror_run(tmp_path / "a" / "b" / "c", [0])
    assert asset_path(tmp_path / "a" / "b" / "c").exists()


def test_bad_target_and_use_after_close(tmp_path):
    with pytest.raises(TypeError, match="log directory .* or a SummaryWriter, got int"):
        TensorBoardMirror(42)
    mirror = TensorBoardMirror(tmp_path / "r")
    mirror.close()
    with pytest.raises(ValueError, match="mirror is closed"):
        mirror.log_step(entry(0))
