"""Entries that look like a model learning, for the dashboard's tests, benchmarks and
screenshots: the real converter on logits where the true next token gets a boost
that grows with the step (so p(target) rises and the loss falls over the run)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from seqviz_trackers import TrainingDataWriter, tensor_to_training_entry

from factories import bpe_tokenizer, corpus

TEXTS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles",
    "HAMLET. O, that this too too solid flesh would melt,\nThaw, and resolve itself into a dew!",
]


def learning_entry(step: int, total: int = 100, texts: list[str] | None = None, *, names: list[str] | None = None,
                   seed: int = 0, long_tokens: int = 0) -> dict[str, Any]:
    """One entry at ``step`` of ``total``: early steps guess badly, late steps well."""
    tok = bpe_tokenizer()
    texts = texts or TEXTS
    tok.pad_token = tok.eos_token
    enc = tok(texts, return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    gen = torch.Generator().manual_seed(seed * 100003 + step)
    logits = torch.randn(*ids.shape, len(tok), generator=gen) * 2.5
    progress = min(1.0, step / max(1, total))
    boost = 1.0 + 9.0 * progress
    noise = torch.rand(ids.shape[0], ids.shape[1] - 1, generator=gen) * 6
    logits[:, :-1, :].scatter_add_(2, ids[:, 1:, None], (boost + noise - 3)[..., None])
    names = names or [f"probe {i}" for i in range(len(texts))]
    entry = tensor_to_training_entry(logits, ids, tok, step=step, attention_mask=enc["attention_mask"], names=names,
                                     model_name="tiny-gpt2 (demo)")
    entry["loss"] = round(4.2 * math.exp(-2.2 * progress) + 0.35, 4)
    entry["perplexity"] = math.exp(entry["loss"])
    if long_tokens:
        seq = entry["sequences"][0]
        for k in range(min(long_tokens, len(seq["tokens"]))):
            seq["tokens"][k] = "supercalifragilisticexpialidocious"[: 8 + 14 * k] + "\n"
    return entry


def write_learning_run(path: Path, steps: list[int], **kwargs: Any) -> Path:
    total = max(steps) if steps else 1
    with TrainingDataWriter(path) as writer:
        for step in steps:
            writer.write_step(learning_entry(step, total, **kwargs))
    return path


def long_entry(step: int, n_seqs: int = 4, n_tokens: int = 2048, *, seed: int = 0, top_k: int = 20) -> dict[str, Any]:
    """``n_seqs`` sequences of ``n_tokens`` tokens each (real converter, random logits)."""
    tok = bpe_tokenizer()
    text = corpus()
    ids_all = tok(text[:200000])["input_ids"]
    rows = [ids_all[i * n_tokens:(i + 1) * n_tokens] for i in range(n_seqs)]
    ids = torch.tensor(rows)
    gen = torch.Generator().manual_seed(seed + step)
    logits = torch.randn(n_seqs, n_tokens, len(tok), generator=gen) * 3
    logits[:, :-1, :].scatter_add_(2, ids[:, 1:, None], torch.full((n_seqs, n_tokens - 1, 1), 2.0 + step % 5))
    return tensor_to_training_entry(logits, ids, tok, step=step, loss=3.0 - 0.01 * step, top_k=top_k,
                                    names=[f"long {i}" for i in range(n_seqs)], model_name="bench")
