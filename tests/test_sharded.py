"""Sharded training (torch ``fully_shard``, 2 processes on gloo, CPU): every rank joins the probe
forward (the sharded weights are gathered in it, so a rank that skipped it would hang the
others), exactly one rank writes, and every line is whole.

Torch's FSDP1 (``FullyShardedDataParallel``) and Lightning's ``FSDPStrategy`` need an
accelerator, and the Hugging Face Trainer falls back to DDP on the CPU; FSDP2 runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
if not hasattr(pytest.importorskip("torch.distributed.fsdp"), "fully_shard"):
    pytest.skip("torch.distributed.fsdp.fully_shard needs a newer torch", allow_module_level=True)

from hf_helpers import read  # noqa: E402
from test_hf_distributed import free_port  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("sharded_script.py")


def torchrun(mode: str, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), mode, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)  # a hang fails here
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted((json.loads(p.read_text()) for p in out.glob("rank*.json")), key=lambda r: r["rank"])


def whole_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    entries = read(path)  # each line parses: one whole JSON object
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(entries)
    return entries


def test_hf_callback_on_a_fully_sharded_model(tmp_path):
    reports = torchrun("hf", tmp_path)
    # every rank ran every probe forward on its shards: 2 every_n_steps probes + 2 evaluations
    assert reports == [{"rank": 0, "probe_forwards": 4, "sharded": True},
                       {"rank": 1, "probe_forwards": 4, "sharded": True}]
    entries = whole_lines(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [1, 2, 3, 4]  # one writer: each step once
    assert all(len(e["sequences"]) == 3 for e in entries)


def test_lightning_callback_with_model_parallel_strategy(tmp_path):
    pytest.importorskip("lightning")
    reports = torchrun("lightning", tmp_path)
    # steps 2 and 4 (every_n_steps=2) and the validation at step 3, on both ranks
    assert reports == [{"rank": 0, "probe_forwards": 3, "sharded": True},
                       {"rank": 1, "probe_forwards": 3, "sharded": True}]
    entries = whole_lines(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [2, 3, 4]
    assert [e["metadata"]["source"] for e in entries] == ["train_step", "validation", "train_step"]
    names = [s["name"] for s in entries[0]["sequences"]]
    assert names == ["val[0]", "val[1]", "val[2]"]
