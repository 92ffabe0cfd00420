"""Plain PyTorch loops (nanoGPT style): ``SeqVizLogger.log_predictions`` converts and logs in one call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dist_helpers import torchrun
from plain_loop_helpers import TinyLM, token_stream, tokenizer, train
from seqviz_trackers import SeqVizLogger, TrainingDataReader
from seqviz_trackers.format.schema import validate_entry

SCRIPT = Path(__file__).with_name("plain_ddp_script.py")


def lines(path: Path) -> list[dict]:
    raw = Path(path).read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


@pytest.mark.slow
def test_nanogpt_loop_writes_valid_entries(tmp_path):
    tok = tokenizer()
    torch.manual_seed(0)
    model = TinyLM(len(tok))
    losses = {}
    with SeqVizLogger(tmp_path / "viz.jsonl") as logger:
        def on_step(step, x, logits, loss):
            losses[step] = loss.item()
            if step % 5 == 0:
                entry = logger.log_predictions(logits[:2], x[:2], tok, step, loss=loss, model_name="tiny")
                assert entry["step"] == step

        train(model, 20, on_step, token_stream(tok))
    entries = lines(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [5, 10, 15, 20]
    for e in entries:
        validate_entry(e)
        assert e["loss"] == pytest.approx(losses[e["step"]])  # the loop's own loss, given as a tensor
        assert e["metadata"]["model_name"] == "tiny"
        assert len(e["sequences"]) == 2 and len(e["sequences"][0]["predictions"]) == 15  # 16 tokens, 15 predicted
    assert entries[-1]["loss"] < entries[0]["loss"]  # it trained
    assert TrainingDataReader(tmp_path / "viz.jsonl").get_summary()["num_steps"] == 4


def test_convert_options_pass_through(tmp_path):
    tok = tokenizer()
    ids = torch.tensor(tok(["To be, or not to be", "that is"], padding=False)["input_ids"][0])[None].repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    logits = torch.randn(*ids.shape, len(tok))
    with SeqVizLogger(tmp_path / "viz.jsonl") as logger:
        entry = logger.log_predictions(logits, ids, tok, 7, attention_mask=mask, names=["a", "b"], top_k=3,
                                       metadata={"source": "probe"})
    (written,) = lines(tmp_path / "viz.jsonl")
    assert written == json.loads(json.dumps(entry))
    assert [s["name"] for s in written["sequences"]] == ["a", "b"]
    assert len(written["sequences"][1]["tokens"]) == 3
    assert len(written["sequences"][0]["predictions"][0]["top_k"]) == 3
    assert written["metadata"]["source"] == "probe"


@pytest.mark.parametrize("logits_shape, ids_shape, message", [
    ((2, 6, 50), (2, 5), r"input_ids has shape \(2, 5\), expected \(2, 6\)"),
    ((2, 6, 50), (3, 6), r"input_ids has shape \(3, 6\), expected \(2, 6\)"),
    ((2, 6, 50, 1), (2, 6), r"logits must have shape \(T, V\) or \(B, T, V\), got \(2, 6, 50, 1\)"),
    ((50,), (1,), r"logits must have shape \(T, V\) or \(B, T, V\), got \(50,\)"),
])
def test_wrong_shapes_raise_clear_errors(tmp_path, logits_shape, ids_shape, message):
    with SeqVizLogger(tmp_path / "viz.jsonl") as logger:
        with pytest.raises(ValueError, match=message):
            logger.log_predictions(torch.randn(*logits_shape), torch.zeros(ids_shape, dtype=torch.long), None, 1)
    assert (tmp_path / "viz.jsonl").read_bytes() == b""  # nothing half-written


def test_ids_outside_the_vocabulary_raise(tmp_path):
    with SeqVizLogger(tmp_path / "viz.jsonl") as logger:
        with pytest.raises(ValueError, match="input_ids holds 99, outside the vocabulary of size 50"):
            logger.log_predictions(torch.randn(1, 4, 50), torch.tensor([[1, 2, 99, 3]]), None, 1)
        with pytest.raises(ValueError, match="input_ids must be integers"):
            logger.log_predictions(torch.randn(1, 4, 50), torch.ones(1, 4), None, 1)


@pytest.mark.slow
def test_two_ranks_one_writer(tmp_path):
    torchrun(SCRIPT, tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["returned"] == [1, 2, 3, 4]
    assert reports[1]["returned"] == [None] * 4  # returned at once: converting there would have raised
    entries = lines(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [1, 2, 3, 4]  # one writer: each step once, whole lines
    for e in entries:
        validate_entry(e)
    (asset,) = (tmp_path / "tb").glob("plugins/seqviz/steps.jsonl")
    assert asset.read_bytes() == (tmp_path / "viz.jsonl").read_bytes()
