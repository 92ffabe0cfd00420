"""Run by tests/test_train_capture_distributed.py under ``torchrun --nproc_per_node 2``: a tiny
DDP (gloo, CPU) training with ``capture_train`` and gradient accumulation 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from transformers import Trainer  # noqa: E402

from hf_helpers import dataset, tiny_model, tokenizer, training_args  # noqa: E402
from test_train_capture import IndexedCollator  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    calls = []  # every cross-entropy pass of this rank: the loss's, and any the capture would add
    real = torch.nn.functional.cross_entropy

    def counting(*args, **kwargs):
        calls.append(kwargs.get("reduction", "mean"))
        return real(*args, **kwargs)

    torch.nn.functional.cross_entropy = counting
    tok = tokenizer()
    data = [dict(ex, idx=i) for i, ex in enumerate(dataset(tok, repeat=4))]  # 24 examples
    viz = VisualizationCallback(out / "viz.jsonl", capture_train=CaptureOptions(every=2, top_rows=2, random_rows=1))
    args = training_args(out, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         eval_strategy="no", ddp_backend="gloo", report_to=["tensorboard"], remove_unused_columns=False)
    trainer = Trainer(model=tiny_model(len(tok)), args=args, train_dataset=data, processing_class=tok,
                      data_collator=IndexedCollator(tok), callbacks=[viz])
    trainer.train()
    rank = int(os.environ["RANK"])
    report = {"rank": rank, "world_size": trainer.args.world_size, "cross_entropy": calls}
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    from dist_helpers import end_process_group

    end_process_group()
