"""Under torchrun (2 processes, gloo, CPU): one writer, every rank joins the probe forward."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from hf_helpers import read  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("hf_ddp_script.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_one_writer(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

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
