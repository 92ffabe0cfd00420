"""A real training run with corrupted rows injected at known steps (the loss-spike tests and
benchmarks/bench_train_capture.py): a tiny GPT-2 learns Hamlet through a plain loop that
logs through ``SeqVizLogger.log_batch``; at :data:`INJECTED_STEPS` the rows
:data:`CORRUPT_ROWS` of the batch are replaced by random tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from factories import bpe_tokenizer, corpus
from seqviz_trackers import SeqVizLogger, tensor_to_training_entry
from seqviz_trackers.capture import CaptureOptions

INJECTED_STEPS = (350, 700, 1050)
CORRUPT_ROWS = (1, 3, 5)
PROBE = "To be, or not to be, that is the question:"


def tiny_gpt2(vocab_size: int, seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def write_spike_run(out: Path, *, steps: int = 1200, batch: int = 8, length: int = 32, seed: int = 0,
                    injected: tuple[int, ...] = INJECTED_STEPS, tensorboard: Any = None,
                    wandb: Any = None, options: CaptureOptions | None = None) -> Path:
    """Train and log; returns the run's JSONL path (its batches file beside it)."""
    tok = bpe_tokenizer()
    ids = torch.tensor(tok(corpus()[:60000])["input_ids"])
    vocab = len(tok)
    model = tiny_gpt2(vocab, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.tensor([tok(PROBE)["input_ids"]])
    path = Path(out) / "run.jsonl"
    options = options or CaptureOptions(every=100)
    with SeqVizLogger(path, tensorboard=tensorboard, wandb=wandb) as logger:
        for step in range(1, steps + 1):
            starts = torch.randint(0, len(ids) - length, (batch,), generator=gen)
            rows = torch.stack([ids[s:s + length] for s in starts.tolist()])
            if step in injected:
                for r in CORRUPT_ROWS:
                    rows[r] = torch.randint(0, vocab, (length,), generator=gen)
            out_ = model(input_ids=rows, labels=rows)
            logger.log_batch(out_.logits, rows, rows, step=step, tokenizer=tok, capture=options,
                             example_index=starts)
            out_.loss.backward()
            opt.step()
            opt.zero_grad()
            if step % 100 == 0:  # the probe view too, as the callback logs it
                model.eval()
                with torch.no_grad():
                    logits = model(input_ids=probe).logits
                model.train()
                logger.log_step(tensor_to_training_entry(logits, probe, tok, step=step, names=["probe"]))
    return path
