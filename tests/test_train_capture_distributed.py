"""capture_train under torchrun (2 processes, gloo, CPU): the rows of both ranks in one line per step, one writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from dist_helpers import torchrun  # noqa: E402
from seqviz_trackers.storage.batches import batches_path  # noqa: E402

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("hf_ddp_capture_script.py")


def read(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_two_ranks_rows_gathered_one_writer(tmp_path):
    torchrun(SCRIPT, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("rank*.json")) == ["rank0.json", "rank1.json"]
    for rank in (0, 1):
        # 3 steps x 2 micro-batches: one cross-entropy pass each, the model's loss, whose token
        # losses the row losses reuse (no second pass over the logits)
        assert json.loads((tmp_path / f"rank{rank}.json").read_text())["cross_entropy"] == ["none"] * 6

    path = batches_path(tmp_path / "viz.jsonl")
    raw = Path(path).read_bytes()
    recs = read(path)
    assert raw.count(b"\n") == len(recs) == 3  # one writer: each step once
    assert [r["step"] for r in recs] == [1, 2, 3]
    seen = []
    for r in recs:
        rows = r["rows"]
        # 2 ranks x 2 micro-batches x 2 rows, rank 0's first
        assert rows["rank"] == [0, 0, 0, 0, 1, 1, 1, 1]
        assert all(loss is not None and loss > 0 for loss in rows["loss"])
        seen += rows["index"]
    assert len(seen) == len(set(seen)) == 24  # the sampler splits the data: every example once, on one rank
    # the capture of step 2 picks its rows from both ranks' candidates, by the gathered losses
    cap = recs[1]["capture"]
    meta = cap["metadata"]
    losses = recs[1]["rows"]["loss"]
    assert meta["rows"][:2] == sorted(range(8), key=lambda i: -losses[i])[:2]
    assert meta["kinds"] == ["top", "top", "random"]
    assert [s["name"] for s in cap["sequences"]] == [f"row {row}" for row in meta["rows"]]  # rows of the gathered batch
    # the TensorBoard mirror keeps the same lines beside its steps asset
    (asset,) = (tmp_path / "runs").glob("*/plugins/seqviz/steps.jsonl")
    assert Path(batches_path(asset)).read_bytes() == raw
