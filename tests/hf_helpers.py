"""Tiny real models and datasets for the Hugging Face integration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from factories import bpe_tokenizer

LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles,",
    "And by opposing end them. To die, to sleep,",
    "No more; and by a sleep to say we end",
]


def tokenizer(pad: bool = True, side: str = "right"):
    """A fresh copy of the Hamlet BPE tokenizer (tests change padding settings)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(bpe_tokenizer().backend_tokenizer.to_str())
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    if pad:
        tok.pad_token = tok.eos_token
    tok.padding_side = side
    return tok


def tiny_model(vocab_size: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                      bos_token_id=0, eos_token_id=0))


def dataset(tok, lines: list[str] = LINES, repeat: int = 2) -> list[dict[str, list[int]]]:
    return [{"input_ids": tok(line)["input_ids"]} for line in lines] * repeat


def training_args(out: Path, **overrides: Any):
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(out), max_steps=4, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        eval_strategy="steps", eval_steps=2, logging_steps=2, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, learning_rate=1e-3,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text("utf-8").splitlines()]
