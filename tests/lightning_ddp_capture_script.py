"""Run by tests/test_lightning_capture.py under ``torchrun --nproc_per_node 2``: a tiny Lightning
DDP training (gloo, CPU) with ``capture_train`` and ``accumulate_grad_batches=2``; batches carry
each example's ``idx``, which the capture takes out before the model sees it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from hf_helpers import dataset, tokenizer  # noqa: E402
from lightning_helpers import TinyLM, trainer  # noqa: E402
from test_train_capture import IndexedCollator  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations.lightning import SeqVizCallback  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    tok = tokenizer()
    data = [dict(ex, idx=i) for i, ex in enumerate(dataset(tok, repeat=4))]  # 24 examples
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=IndexedCollator(tok))
    viz = SeqVizCallback(output_file=out / "viz.jsonl", on_validation_end=False,
                         capture_train=CaptureOptions(every=2, top_rows=2, random_rows=1))
    fit = trainer(out, devices=2, strategy="ddp", max_steps=3, accumulate_grad_batches=2, callbacks=[viz])
    fit.fit(TinyLM(tok), loader)
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": fit.world_size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    from dist_helpers import end_process_group

    end_process_group()
