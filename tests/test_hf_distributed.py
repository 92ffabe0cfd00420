"""Under torchrun (2 processes, gloo, CPU): one writer, every rank joins the probe forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from dist_helpers import free_port, torchrun  # noqa: E402,F401  (other tests import free_port from here)
from hf_helpers import read  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("hf_ddp_script.py")


def test_two_processes_one_writer(tmp_path):
    torchrun(SCRIPT, tmp_path)

    reports = sorted((json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")), key=lambda r: r["rank"])
    assert [r["world_size"] for r in reports] == [2, 2]
    # Both ranks ran the probe forward at each evaluation (sharded models need every rank).
    assert [r["probe_forwards"] for r in reports] == [3, 3]

    raw = (tmp_path / "viz.jsonl").read_bytes()
    entries = read(tmp_path / "viz.jsonl")  # every line is one whole JSON object
    assert raw.count(b"\n") == len(entries) == 3
    assert [e["step"] for e in entries] == [0, 2, 4]
    assert all(len(e["sequences"]) == 3 for e in entries)
    # The TensorBoard mirror too has each step once.
    (asset,) = (tmp_path / "runs").glob("*/plugins/seqviz/steps.jsonl")
    assert [e["step"] for e in read(asset)] == [0, 2, 4]
