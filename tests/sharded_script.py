"""Run by tests/test_sharded.py under ``torchrun --nproc_per_node 2`` (gloo, CPU): a tiny
GPT-2 sharded with torch's ``fully_shard`` (FSDP2), trained by the Hugging Face Trainer
(``hf``) or by Lightning's ``ModelParallelStrategy`` (``lightning``) with the seqviz
callback; each rank reports its probe forwards and whether its weights were sharded."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from hf_helpers import dataset, tiny_model, tokenizer, training_args  # noqa: E402
from dist_helpers import end_process_group  # noqa: E402


def sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard(model: torch.nn.Module, mesh=None) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def run_hf(out: Path) -> dict:
    """The Trainer does not shard on the CPU (it falls back to DDP), so this loop shards with
    ``fully_shard`` itself and drives VisualizationCallback's events as the Trainer would."""
    import torch.distributed as dist
    from transformers import DataCollatorForLanguageModeling, TrainerControl, TrainerState

    from seqviz_trackers.integrations import VisualizationCallback

    dist.init_process_group("gloo")
    tok = tokenizer()
    model = tiny_model(len(tok))
    shard(model)
    collate = DataCollatorForLanguageModeling(tok, mlm=False)
    evals = torch.utils.data.DataLoader(dataset(tok), batch_size=4, collate_fn=collate)
    train = collate(dataset(tok, repeat=1)[dist.get_rank()::2])
    args = training_args(out, ddp_backend="gloo")
    state = TrainerState(is_world_process_zero=dist.get_rank() == 0, max_steps=4)
    control = TrainerControl()
    viz = VisualizationCallback(out / "viz.jsonl", max_sequences_per_eval=3, every_n_steps=2)
    events = {"model": model, "processing_class": tok, "eval_dataloader": evals}
    viz.on_train_begin(args, state, control, **events)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(1, 5):
        model(**train).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        state.global_step = step
        viz.on_step_end(args, state, control, **events)
        if step % 2 == 1:
            viz.on_evaluate(args, state, control, metrics={"eval_loss": 1.0}, **events)
    viz.on_train_end(args, state, control, **events)
    report = {"probe_forwards": viz.probe_forwards, "sharded": sharded(model)}
    dist.destroy_process_group()
    return report


def run_lightning(out: Path) -> dict:
    from lightning.pytorch.strategies import ModelParallelStrategy

    from lightning_helpers import TinyLM, loader, trainer
    from seqviz_trackers.integrations.lightning import SeqVizCallback

    class ShardedLM(TinyLM):
        def configure_model(self) -> None:
            shard(self.model, self.device_mesh["data_parallel"])

    tok = tokenizer()
    viz = SeqVizCallback(every_n_steps=2, num_probe_examples=3, output_file=out / "viz.jsonl")
    module = ShardedLM(tok)
    fit = trainer(out, devices=2, max_steps=4, callbacks=[viz], val_check_interval=3,
                  strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    fit.fit(module, loader(tok, repeat=4), loader(tok))
    return {"probe_forwards": viz.probe_forwards, "sharded": sharded(module)}


def main(mode: str, out: Path) -> None:
    torch.set_num_threads(1)
    report = (run_hf if mode == "hf" else run_lightning)(out)
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, **report}))
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
