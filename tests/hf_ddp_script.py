"""Run by tests/test_hf_distributed.py under ``torchrun --nproc_per_node 2``: a tiny
DDP (gloo, CPU) training with VisualizationCallback; each rank reports its probe count."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402

from hf_helpers import dataset, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    tok = tokenizer()
    viz = VisualizationCallback(out / "viz.jsonl", max_sequences_per_eval=3)
    args = training_args(out, eval_on_start=True, ddp_backend="gloo", report_to=["tensorboard"])
    trainer = Trainer(model=tiny_model(len(tok)), args=args, train_dataset=dataset(tok, repeat=4),
                      eval_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz])
    trainer.train()
    rank = int(os.environ["RANK"])
    report = {"rank": rank, "world_size": trainer.args.world_size, "probe_forwards": viz.probe_forwards}
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    from dist_helpers import end_process_group

    end_process_group()
