"""Training-batch capture with a real Lightning Trainer (accumulate_grad_batches=2): the logits
of the training forward itself (no second forward), every optimizer step's rows, ``seqviz spikes``."""

from __future__ import annotations

import json
import logging
import math

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import torch  # noqa: E402

from hf_helpers import LINES, tokenizer  # noqa: E402
from lightning_helpers import TinyLM, loader, trainer  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.cli.main import main  # noqa: E402
from seqviz_trackers.integrations.lightning import SeqVizCallback  # noqa: E402
from seqviz_trackers.storage.batches import batches_path  # noqa: E402
from test_train_capture import records, row_losses  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


class TupleLM(TinyLM):
    """Batches are ``(input_ids,)`` tuples; the LightningModule's own forward returns the logits."""

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch[0])
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch[0][:, 1:].flatten())


def test_accumulated_steps_keep_every_row_from_the_training_forward(tmp_path, capsys):
    tok = tokenizer()
    module = TinyLM(tok)
    forwards, expected = [], []

    def spy(mod, args, kwargs, out):  # every forward of the model, and its rows' losses computed here
        forwards.append(mod.training and torch.is_grad_enabled())
        if forwards[-1]:
            expected.append(row_losses(out.logits.detach(), kwargs["labels"]))

    module.model.register_forward_hook(spy, with_kwargs=True)
    viz = SeqVizCallback(output_file=tmp_path / "run.jsonl", on_validation_end=False,
                         capture_train=CaptureOptions(every=2, top_rows=1, random_rows=1))
    fit = trainer(tmp_path, max_steps=3, accumulate_grad_batches=2, callbacks=[viz])
    fit.fit(module, loader(tok, batch_size=2))  # 12 examples, 6 micro-batches of 2

    # 3 optimizer steps x 2 micro-batches: the model ran 6 forwards, all of them training ones.
    assert fit.global_step == 3
    assert forwards == [True] * 6
    recs = records(tmp_path / "run.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3]
    for k, r in enumerate(recs):
        rows = r["rows"]
        assert len(rows["loss"]) == 4 and rows["rank"] == [0] * 4  # both micro-batches of the step
        assert rows["loss"] == pytest.approx(expected[2 * k] + expected[2 * k + 1], rel=1e-4)
        mean = sum(l * n for l, n in zip(rows["loss"], rows["tokens"])) / sum(rows["tokens"])
        assert math.isclose(r["loss"], mean, rel_tol=1e-4)
    # step 2 is a capture step: its highest-loss row and a random one, token by token
    assert [r["reason"] for r in recs] == [None, "scheduled", None]
    cap = recs[1]["capture"]
    assert cap["metadata"]["kinds"] == ["top", "random"] and cap["metadata"]["source"] == "train_batch"
    top = max(range(4), key=lambda i: recs[1]["rows"]["loss"][i])
    assert cap["metadata"]["rows"][0] == top
    for seq, row in zip(cap["sequences"], cap["metadata"]["rows"]):
        assert "".join(seq["tokens"]).replace("Ġ", " ") in LINES
        losses = [p["loss"] for p in seq["predictions"]]
        assert math.isclose(sum(losses) / len(losses), recs[1]["rows"]["loss"][row], rel_tol=1e-3)

    assert main(["spikes", str(tmp_path / "run.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_steps"] == 3 and result["spikes"] == []


def test_tuple_batches_and_a_module_that_returns_logits(tmp_path):
    tok = tokenizer()
    module = TupleLM(tok)
    calls = []
    module.register_forward_hook(lambda mod, args, out: calls.append(mod.training))
    data = loader(tok, batch_size=3)
    tuples = torch.utils.data.DataLoader(data.dataset, batch_size=3,
                                         collate_fn=lambda rows: (data.collate_fn(rows)["input_ids"],))
    # the default capture module is pl_module.model, whose output has .logits; here the
    # LightningModule's own forward returns them, and capture_module says so
    viz = SeqVizCallback(output_file=tmp_path / "run.jsonl", on_validation_end=False,
                         capture_train=True, capture_module=lambda pl_module: pl_module)
    trainer(tmp_path, max_steps=2, callbacks=[viz]).fit(module, tuples)
    assert calls == [True, True]
    recs = records(tmp_path / "run.jsonl")
    assert [r["step"] for r in recs] == [1, 2]
    assert all(len(r["rows"]["loss"]) == 3 and all(l > 0 for l in r["rows"]["loss"]) for r in recs)


def test_a_forward_without_logits_is_said_once_and_nothing_is_captured(tmp_path, caplog):
    tok = tokenizer()

    class LossOnly(TinyLM):
        def forward(self, input_ids, attention_mask=None, labels=None):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

        def training_step(self, batch, batch_idx):
            return self(**batch)

    viz = SeqVizCallback(output_file=tmp_path / "run.jsonl", on_validation_end=False, capture_train=True,
                         capture_module=lambda pl_module: pl_module)
    with caplog.at_level(logging.WARNING, logger="seqviz_trackers"):
        trainer(tmp_path, max_steps=2, callbacks=[viz]).fit(LossOnly(tok), loader(tok, batch_size=2))
    assert [r.message for r in caplog.records if "capture_train" in r.message] == [
        "seqviz: capture_train: the model's training forward returned no logits (a fused linear-cross-entropy "
        "loss never materialises them); nothing is captured"]
    assert not (tmp_path / "run.jsonl.batches").exists()
    assert batches_path(tmp_path / "run.jsonl") == str(tmp_path / "run.jsonl.batches")


def test_a_capture_module_whose_forward_never_runs_is_named(tmp_path, caplog):
    tok = tokenizer()
    module = TinyLM(tok)
    viz = SeqVizCallback(output_file=tmp_path / "run.jsonl", on_validation_end=False, capture_train=True,
                         capture_module=torch.nn.Linear(2, 2))
    with caplog.at_level(logging.WARNING, logger="seqviz_trackers"):
        trainer(tmp_path, max_steps=2, callbacks=[viz]).fit(module, loader(tok, batch_size=2))
    said = [r.message for r in caplog.records if "capture_train" in r.message]
    assert len(said) == 1 and "(Linear) did not run in training_step" in said[0]
    with pytest.raises(TypeError, match=r"capture_module=\.\.\.\) must be a torch.nn.Module or return one, got str"):
        trainer(tmp_path, max_steps=1, callbacks=[SeqVizCallback(capture_train=True, capture_module=lambda m: "x")]
                ).fit(TinyLM(tok), loader(tok, batch_size=2))


def test_ddp_two_ranks_rows_gathered_one_writer(tmp_path):
    from pathlib import Path

    from dist_helpers import torchrun

    torchrun(Path(__file__).with_name("lightning_ddp_capture_script.py"), tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    raw = (tmp_path / "viz.jsonl.batches").read_bytes()
    recs = records(tmp_path / "viz.jsonl")
    assert raw.count(b"\n") == len(recs) == 3 and [r["step"] for r in recs] == [1, 2, 3]  # one writer
    seen = []
    for r in recs:
        # 2 ranks x 2 micro-batches x 2 rows, rank 0's first
        assert r["rows"]["rank"] == [0, 0, 0, 0, 1, 1, 1, 1]
        assert all(loss > 0 for loss in r["rows"]["loss"])
        seen += r["rows"]["index"]
    assert len(seen) == len(set(seen)) == 24  # the sampler splits the data: every example once, on one rank
    meta = recs[1]["capture"]["metadata"]
    losses = recs[1]["rows"]["loss"]
    assert meta["rows"][:2] == sorted(range(8), key=lambda i: -losses[i])[:2] and meta["kinds"] == ["top", "top", "random"]
