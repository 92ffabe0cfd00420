"""Files in the form the original seq-viz tool wrote, built exactly as that tool did:
each candidate an object ``{"token_id", "token_str", "prob"}``, ``top_k`` of 5 beside
``top_20`` of 20, no ``target_prob`` / ``target_rank`` / ``correct`` / ``token_ids`` /
``name`` / ``schema_version``, special tokens as text (``<|begin_of_text|>`` first,
``<|end_of_text|>`` repeated as padding), full-precision floats (float16 probabilities
as Python floats), a 128,256-token vocabulary, one ``json.dumps(entry)`` per line.

The logits are real: a softmax over all 128,256 ids, in which the true next token gets
a boost that grows with the step, except at every fourth position, where it stays far
outside the top 20 (so a file always holds targets "below top-20").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from factories import bpe_tokenizer

VOCAB = 128256
BOS, EOS = 128000, 128001
SPECIAL = {BOS: "<|begin_of_text|>", EOS: "<|end_of_text|>"}
MODEL = "meta-llama/Llama-3.2-1B-Instruct"
TEXTS = ["To be, or not to be, that is the question:", "The slings and arrows of outrageous fortune"]
LENGTH = 16  # tokens per sequence, padding included
HARD_EVERY = 4  # the target of every fourth position is never boosted


def token_str(tok: Any, token_id: int) -> str:
    return SPECIAL.get(token_id) or tok.decode([token_id])


def sequence_ids(text: str) -> list[int]:
    ids = [BOS] + bpe_tokenizer()(text)["input_ids"][:LENGTH - 2]
    return ids + [EOS] * (LENGTH - len(ids))


def seed_entry(step: int, total: int = 300, *, with_loss: bool = False, seed: int = 0) -> dict[str, Any]:
    """One entry as the original tool wrote it at ``step`` of ``total``."""
    tok = bpe_tokenizer()
    gen = torch.Generator().manual_seed(seed * 7919 + step)
    progress = min(1.0, step / max(1, total))
    sequences = []
    for text in TEXTS:
        ids = sequence_ids(text)
        logits = torch.full((LENGTH, VOCAB), -12.0)
        logits[:, :len(tok)] = torch.randn(LENGTH, len(tok), generator=gen) * 2.5
        logits[:, EOS] = 1.0
        for i in range(LENGTH - 1):
            if i % HARD_EVERY != HARD_EVERY - 1:
                logits[i, ids[i + 1]] += 1.0 + 9.0 * progress + float(torch.rand(1, generator=gen)) * 3
            else:
                logits[i, ids[i + 1]] = -6.0  # far below the top 20
        probs = torch.softmax(logits, -1).half()
        predictions = []
        for i in range(LENGTH - 1):
            p = probs[i].float()
            top_p, top_i = torch.topk(probs[i], 20)
            cands = [{"token_id": int(t), "token_str": token_str(tok, int(t)), "prob": float(q)}
                     for q, t in zip(top_p.tolist(), top_i.tolist())]
            pred = {
                "position": i,
                "target_token_id": ids[i + 1],
                "target_token_str": token_str(tok, ids[i + 1]),
                "top_k": cands[:5],
                "top_20": cands,
                "entropy": float(-(p * torch.log(p.clamp_min(1e-12))).sum()),
            }
            if with_loss:
                pred["loss"] = float(-torch.log_softmax(logits[i], -1)[ids[i + 1]])
            predictions.append(pred)
        sequences.append({"tokens": [token_str(tok, t) for t in ids], "predictions": predictions})
    loss = 4.2 * math.exp(-2.2 * progress) + 0.35 + float(torch.rand(1, generator=gen)) * 1e-3
    return {
        "timestamp": 1733000000.0 + step * 1.2345678,
        "step": step,
        "loss": loss,
        "perplexity": math.exp(loss),
        "sequences": sequences,
        "metadata": {"model_name": MODEL, "vocab_size": VOCAB, "batch_size": len(TEXTS), "sequence_length": LENGTH},
    }


def seed_line(entry: dict[str, Any]) -> str:
    """The line the original writer made of ``entry``."""
    return json.dumps(entry) + "\n"


def write_seed_file(path: Path, steps: list[int], **kwargs: Any) -> Path:
    total = max(steps) if steps else 1
    path.write_text("".join(seed_line(seed_entry(s, total, **kwargs)) for s in steps), encoding="utf-8")
    return path


def in_top20(pred: dict[str, Any]) -> bool:
    return any(c["token_id"] == pred["target_token_id"] for c in pred["top_20"])
