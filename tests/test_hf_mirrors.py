"""VisualizationCallback mirrors follow TrainingArguments.report_to, and can be forced on or off."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402

from hf_helpers import dataset, read, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]



def train(out: Path, report_to, **viz_kwargs) -> list[dict]:
    tok = tokenizer()
    viz = VisualizationCallback(out / "viz.jsonl", max_sequences_per_eval=2, **viz_kwargs)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(out, report_to=report_to, logging_steps=1),
                      train_dataset=dataset(tok), eval_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    trainer.train()
    return read(out / "viz.jsonl")


def scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_tensorboard_steps_land_beside_the_trainer_scalars(tmp_path):
    pytest.importorskip("tb_plugin")
    from tb_plugin import asset_path

    entries = train(tmp_path, ["tensorboard"])
    (run_dir,) = (tmp_path / "runs").iterdir()  # the one run TensorBoardCallback made
    assert "train/loss" in scalar_tags(run_dir)
    mirrored = read(asset_path(run_dir))
    assert [e["step"] for e in mirrored] == [e["step"] for e in entries] == [2, 4]


def test_tensorboard_logging_dir_from_the_environment(tmp_path, monkeypatch):
    pytest.importorskip("tb_plugin")
    from tb_plugin import asset_path

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    train(tmp_path / "out", ["tensorboard"])
    assert "train/loss" in scalar_tags(tmp_path / "tb")
    assert len(read(asset_path(tmp_path / "tb"))) == 2
    assert not (tmp_path / "out" / "runs").exists()


def test_tensorboard_forced_off_and_on(tmp_path):
    pytest.importorskip("tb_plugin")
    from tb_plugin import asset_path

    train(tmp_path / "off", ["tensorboard"], tensorboard=False)
    (run_dir,) = (tmp_path / "off" / "runs").iterdir()
    assert not asset_path(run_dir).exists()

    train(tmp_path / "on", "none", tensorboard=True)
    (run_dir,) = (tmp_path / "on" / "runs").iterdir()
    assert len(read(asset_path(run_dir))) == 2

    train(tmp_path / "dir", "none", tensorboard=tmp_path / "mine")
    assert len(read(asset_path(tmp_path / "mine"))) == 2


def test_no_mirror_by_default(tmp_path):
    train(tmp_path, "none")
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    pytest.importorskip("wandb_panel")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_PROJECT": "seqviz-test", "WANDB_LOG_MODEL": "false"}.items():
        monkeypatch.setenv(key, value)
    yield wandb
    if wandb.run is not None:
        wandb.finish()


def test_wandb_steps_go_to_the_active_run(tmp_path, offline_wandb):
    entries = train(tmp_path / "out", ["wandb"])
    run = offline_wandb.run
    assert run is not None  # the Trainer's WandbCallback started it; the steps went there
    mirrored = list(Path(run.dir).parent.rglob("seqviz/steps.jsonl"))
    assert len(mirrored) == 1
    assert [e["step"] for e in read(mirrored[0])] == [e["step"] for e in entries] == [2, 4]


def test_wandb_forced_off(tmp_path, offline_wandb):
    train(tmp_path / "out", ["wandb"], wandb=False)
    assert offline_wandb.run is not None
    assert not list(Path(offline_wandb.run.dir).parent.rglob("seqviz/steps.jsonl"))
