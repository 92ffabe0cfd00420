"""Run by tests/test_plain_loop.py under ``torchrun --nproc_per_node 2``: a nanoGPT-style DDP
loop (gloo, CPU) where every rank calls ``SeqVizLogger.log_predictions`` at every step."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from plain_loop_helpers import TinyLM, token_stream, tokenizer, train  # noqa: E402
import seqviz_trackers.convert  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank != 0:  # a rank other than 0 must not convert: make converting fail loudly there
        def refuse(*args, **kwargs):
            raise AssertionError(f"rank {rank} converted logits")
        seqviz_trackers.convert.tensor_to_training_entry = refuse
    tok = tokenizer()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(TinyLM(len(tok)))
    returned = []
    with SeqVizLogger(out / "viz.jsonl", tensorboard=out / "tb") as logger:
        def on_step(step, x, logits, loss):
            entry = logger.log_predictions(logits[:2], x[:2], tok, step, loss=loss)
            returned.append(None if entry is None else entry["step"])

        train(model, 4, on_step, token_stream(tok))
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "returned": returned,
                                                      "world_size": int(os.environ["WORLD_SIZE"])}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
