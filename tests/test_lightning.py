"""SeqVizCallback with a real Lightning Trainer: its TensorBoardLogger and WandbLogger (offline)
get the seqviz mirrors, resume from a checkpoint appends, bf16-mixed, probe sets from batches."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import torch  # noqa: E402

from hf_helpers import LINES, read, tokenizer  # noqa: E402
from lightning_helpers import L, TinyLM, loader, trainer  # noqa: E402
from seqviz_trackers.integrations.lightning import SeqVizCallback  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One training (6 steps, 3 per epoch) with TensorBoardLogger + WandbLogger (offline),
    probing every 2 steps and at each validation (end of epoch: steps 3 and 6)."""
    pytest.importorskip("tb_plugin")
    pytest.importorskip("wandb_panel")
    import wandb
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from wandb_helpers import offline_env

    root = tmp_path_factory.mktemp("lightning")
    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, root)
        tok = tokenizer()
        module = TinyLM(tok)
        tb = TensorBoardLogger(str(root / "tb"), name="lm")
        wb = WandbLogger(project="seqviz-tests", save_dir=str(root), offline=True)
        viz = SeqVizCallback(every_n_steps=2, num_probe_examples=3)
        fit = trainer(root, logger=[tb, wb], callbacks=[viz])
        fit.fit(module, loader(tok), loader(tok))
        run = wb.experiment
        run_dir = Path(run.dir).parent
        wandb.finish()
    return {"root": root, "tb": tb, "run_dir": run_dir, "viz": viz, "module": module}


def test_entries_at_every_n_steps_and_each_validation(logged_run):
    tb = logged_run["tb"]
    path = Path(tb.log_dir) / "seqviz.jsonl"  # the default file sits in the TensorBoard run
    entries = read(path)
    assert [e["step"] for e in entries] == [2, 3, 4, 6]  # step 6: one entry, not two
    assert [e["metadata"]["source"] for e in entries] == ["train_step", "validation", "train_step", "train_step"]
    assert logged_run["viz"].probe_forwards == 4
    # the probe set: the first 3 validation examples, the same at every step
    first = [s["tokens"] for s in entries[0]["sequences"]]
    assert [s["name"] for s in entries[0]["sequences"]] == ["val[0]", "val[1]", "val[2]"]
    assert all([s["tokens"] for s in e["sequences"]] == first for e in entries)
    assert "".join(first[0]).replace("Ġ", " ").strip() == LINES[0]
    assert entries[0]["metadata"]["model_name"] == "TinyLM"
    assert all(logged_run["module"].modes_seen)  # train mode restored after each probe


def test_tensorboard_tab_data_beside_the_loggers_scalars(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tb_plugin import asset_path

    log_dir = Path(logged_run["tb"].log_dir)
    assert log_dir == logged_run["root"] / "tb" / "lm" / "version_0"
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    assert "train_loss" in acc.Tags()["scalars"]
    assert [e["step"] for e in read(asset_path(log_dir))] == [2, 3, 4, 6]


def test_wandb_run_of_the_logger_has_the_seqviz_table(logged_run):
    from wandb_helpers import history, table_rows

    run_dir = logged_run["run_dir"]
    rows = table_rows(run_dir)
    assert rows and {row[0] for row in rows} == {2, 3, 4, 6}  # the step column
    steps = [h["train/global_step"] for h in history(run_dir) if "seqviz/loss" in h]  # trainer.global_step
    assert steps == [2, 3, 4, 6]
    assert [e["step"] for e in read(run_dir / "seqviz" / "steps.jsonl")] == [2, 3, 4, 6]


def test_resume_from_checkpoint_appends_with_the_same_probe_set(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    tok = tokenizer()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    first = trainer(tmp_path, max_steps=3, logger=TensorBoardLogger(str(tmp_path), name="lm"),
                    callbacks=[SeqVizCallback(num_probe_examples=2), ckpt], enable_checkpointing=True)
    first.fit(TinyLM(tok), loader(tok), loader(tok))
    path = tmp_path / "lm" / "version_0" / "seqviz.jsonl"
    assert [e["step"] for e in read(path)] == [3]

    # the resumed run: a new logger version, other validation data; the file and probe set stay
    viz = SeqVizCallback(num_probe_examples=2)
    second = trainer(tmp_path, max_steps=6, logger=TensorBoardLogger(str(tmp_path), name="lm"),
                     callbacks=[viz, ModelCheckpoint(dirpath=str(tmp_path / "ckpt"))], enable_checkpointing=True)
    second.fit(TinyLM(tok), loader(tok), loader(tok, lines=LINES[::-1]), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    entries = read(path)
    assert [e["step"] for e in entries] == [3, 6]
    assert viz.output_file == path
    assert [s["tokens"] for s in entries[1]["sequences"]] == [s["tokens"] for s in entries[0]["sequences"]]
    assert not (tmp_path / "lm" / "version_1" / "seqviz.jsonl").exists()
    from tb_plugin import asset_path

    assert [e["step"] for e in read(asset_path(tmp_path / "lm" / "version_1"))] == [6]  # the new run's tab


def test_bf16_mixed_probe_runs_under_the_trainers_autocast(tmp_path):
    tok = tokenizer()
    autocast: list[bool] = []

    def logits_fn(module, batch):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return module(batch["input_ids"], attention_mask=batch["attention_mask"])

    viz = SeqVizCallback(probe_texts=LINES[:2], tokenizer=tok, every_n_steps=1, on_validation_end=False,
                         logits_fn=logits_fn, output_file=tmp_path / "viz.jsonl", top_k=5)
    trainer(tmp_path, max_steps=2, precision="bf16-mixed", callbacks=[viz]).fit(TinyLM(tok), loader(tok))
    entries = read(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [1, 2]
    assert autocast == [True, True]
    pred = entries[0]["sequences"][0]["predictions"][0]
    assert len(pred["top_k"]) == 5 and 0 < pred["target_prob"] <= 1
    assert [s["name"] for s in entries[0]["sequences"]] == ["probe[0]", "probe[1]"]


class TupleLM(L.LightningModule):
    """A nanoGPT-style module: batches are ``(x, y)`` tensors, ``forward(x)`` returns logits."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x).flatten(0, 1), y.flatten())

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tuple_loader(n: int = 8) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 50, (n, 9), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data[:, :-1], data[:, 1:]), batch_size=4)


def test_probe_set_from_tuple_batches_and_tensor_logits(tmp_path):
    viz = SeqVizCallback(num_probe_examples=3, output_file=tmp_path / "viz.jsonl")
    trainer(tmp_path, max_steps=2, callbacks=[viz]).fit(TupleLM(50), tuple_loader(), tuple_loader())
    (entry,) = read(tmp_path / "viz.jsonl")
    assert entry["step"] == 2
    first = tuple_loader().dataset[0][0].tolist()
    seq = entry["sequences"][0]
    assert len(entry["sequences"]) == 3 and seq["name"] == "val[0]"
    assert len(seq["tokens"]) == len(first)  # no tokenizer: ids shown


def test_unusable_batches_say_which_shapes_are_accepted(tmp_path):
    texts = torch.utils.data.DataLoader(["just a string"] * 4, batch_size=2)
    viz = SeqVizCallback(output_file=tmp_path / "viz.jsonl")
    with pytest.raises(ValueError, match="accepted are a dict .* 'input_ids'.* or a tuple / list"):
        trainer(tmp_path, max_steps=2, callbacks=[viz]).fit(TupleLM(50), tuple_loader(), texts)


def test_unknown_option_and_bad_arguments():
    with pytest.raises(TypeError, match="unknown option.*top_kk.*top_k, model_name"):
        SeqVizCallback(top_kk=3)
    with pytest.raises(ValueError, match="every_n_steps"):
        SeqVizCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="probe_texts"):
        SeqVizCallback(probe_texts="one string")


@pytest.mark.browser
def test_seqviz_tab_of_the_lightning_run_in_tensorboard(logged_run, page, tmp_path):
    from tb_helpers import TensorBoardProcess, wait_for
    from test_tb_browser import _open_tab

    proc = TensorBoardProcess(logged_run["root"] / "tb", load_fast=True, log_path=tmp_path / "tb.log")
    try:
        assert wait_for(lambda: proc.get("/data/plugins_listing")[1]["seqviz"]["enabled"], timeout=60)
        runs = wait_for(lambda: proc.get("/data/plugin/seqviz/runs")[1]["runs"], timeout=60)
        assert runs == [{"run": "lm/version_0", "num_steps": 4, "last_step": 6}]
        frame = _open_tab(page, proc.url)
        entry = read(Path(logged_run["tb"].log_dir) / "seqviz.jsonl")[-1]
        n = sum(len(s["tokens"]) for s in entry["sequences"])
        frame.wait_for_function(f"() => document.querySelectorAll('.tok').length === {n}", timeout=30_000)
        assert "6" in frame.locator("body").inner_text()
        assert page.js_errors == [], page.js_errors
    finally:
        proc.stop()
