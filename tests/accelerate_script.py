"""Run by tests/test_accelerate.py under ``accelerate launch --multi_gpu --num_processes 2`` (on the
CPU: ``Accelerator(cpu=True)``, gloo): a tiny
causal LM trained a few steps with ``log_with=[SeqVizTracker, "tensorboard", "wandb"]``.
Every process runs the probe forward every 2 steps and logs it, once through the tracker
and once through the ``log_predictions`` helper. Every process hands every training batch's
logits to ``log_batch`` (odd steps through the tracker, even ones through the helper), full
capture every 3 steps, and closes the last step with ``finish_batch``. Each process writes
``rank<N>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from accelerate import Accelerator  # noqa: E402

from plain_loop_helpers import TinyLM, get_batch, token_stream, tokenizer  # noqa: E402
import seqviz_trackers.convert  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations.accelerate import SeqVizTracker, finish_batch, log_batch, log_predictions  # noqa: E402

STEPS = 6
PROBE_EVERY = 2
CAPTURE = CaptureOptions(every=3, top_rows=1, random_rows=1)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    tracker = SeqVizTracker(out / "seqviz.jsonl", model_name="tiny")
    accelerator = Accelerator(cpu=True, log_with=[tracker, "tensorboard", "wandb"], project_dir=str(out))
    accelerator.init_trackers("accel", config={"lr": 3e-3, "steps": STEPS})
    rank = accelerator.process_index
    if not accelerator.is_main_process:  # other processes must not convert: make converting fail loudly there
        def refuse(*args, **kwargs):
            raise AssertionError(f"process {rank} converted logits")
        seqviz_trackers.convert.tensor_to_training_entry = refuse

    tok = tokenizer()
    data = token_stream(tok)
    windows = [get_batch(data, i, batch=1) for i in range(16)]
    dataset = torch.utils.data.TensorDataset(torch.cat([x for x, _ in windows]), torch.cat([y for _, y in windows]),
                                             torch.arange(len(windows)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)
    torch.manual_seed(0)
    model = TinyLM(len(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    probe = dataset.tensors[0][:2]

    returned, forwards, step = [], 0, 0
    while step < STEPS:
        for x, y, idx in loader:
            step += 1
            logits = model(x)
            if step % 2:  # the training forward's logits, on every process (row losses are gathered)
                tracker.log_batch(logits, x, step=step, example_index=idx, tokenizer=tok, capture=CAPTURE)
            else:
                log_batch(accelerator, logits, x, step=step, example_index=idx, tokenizer=tok, capture=CAPTURE)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
            accelerator.log({"train_loss": loss.item()}, step=step)
            if step % PROBE_EVERY == 0:
                model.eval()
                with torch.no_grad():  # every process joins the forward (sharded weights need it)
                    probe_logits = model(probe.to(accelerator.device))
                forwards += 1
                model.train()
                names = ["probe[0]", "probe[1]"]
                if step % (2 * PROBE_EVERY):
                    entry = tracker.log_predictions(probe_logits, probe, tok, step, loss=loss, names=names)
                else:
                    entry = log_predictions(accelerator, probe_logits, probe, tok, step, loss=loss, names=names)
                returned.append(None if entry is None else entry["step"])
            if step == STEPS:
                break
    last = finish_batch(accelerator)  # every process, before end_training (main process only)
    report = {"rank": rank, "num_processes": accelerator.num_processes, "returned": returned, "forwards": forwards,
              "last_batch": last["step"], "last_rows": last["rows"]["rank"]}
    if accelerator.is_main_process:
        report["tensorboard_dir"] = accelerator.get_tracker("tensorboard", unwrap=True).get_logdir()
        report["wandb_dir"] = str(Path(accelerator.get_tracker("wandb", unwrap=True).dir).parent)
    accelerator.end_training()
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    from dist_helpers import end_process_group

    end_process_group()
