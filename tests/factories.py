"""Test data built for real: a byte-level BPE tokenizer trained in-process on the
bundled text, and entries made by the real converter from random logits."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from seqviz_trackers import TrainingDataWriter, tensor_to_training_entry

HOSTILE = "</script><img src=x onerror=alert(1)>"


def corpus() -> str:
    return resources.files("seqviz_trackers").joinpath("data/hamlet.txt").read_text("utf-8")


@lru_cache(maxsize=None)
def bpe_tokenizer(vocab_size: int = 512):
    """A GPT-2 style byte-level BPE tokenizer (Hugging Face fast tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = corpus()
    tok.train_from_iterator([text[i:i + 2000] for i in range(0, 60000, 2000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def make_entry(step: int, texts: list[str] | None = None, *, seed: int | None = None,
               sharpness: float = 3.0, names: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A real entry: random (but peaked) logits over the tokenizer's vocabulary."""
    tok = bpe_tokenizer()
    texts = texts or ["To be, or not to be, that is the question:"]
    enc = tok(texts, return_tensors="pt", padding=False) if len(texts) == 1 else _padded(tok, texts)
    gen = torch.Generator().manual_seed(step if seed is None else seed)
    logits = torch.randn(*enc["input_ids"].shape, len(tok), generator=gen) * sharpness
    return tensor_to_training_entry(logits, enc["input_ids"], tok, step=step, attention_mask=enc.get("attention_mask"),
                                    names=names, model_name="test-model", **kwargs)


def _padded(tok, texts):
    tok.pad_token = tok.eos_token
    return tok(texts, return_tensors="pt", padding=True)


def write_run(path: Path, steps: list[int], **kwargs: Any) -> Path:
    with TrainingDataWriter(path) as writer:
        for step in steps:
            writer.write_step(make_entry(step, **kwargs))
    return path
