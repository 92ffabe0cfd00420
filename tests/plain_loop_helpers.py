"""A nanoGPT-style setup for the plain-loop tests: a tiny causal model that returns bare logits,
batches cut from the bundled text, and the loop itself (forward, loss, backward, step)."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from factories import bpe_tokenizer, corpus


class TinyLM(torch.nn.Module):
    """Embedding, one causal self-attention block, a linear head: ``forward(idx) -> (B, T, V)`` logits."""

    def __init__(self, vocab_size: int, n_embd: int = 32, block: int = 32):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab_size, n_embd)
        self.pos = torch.nn.Embedding(block, n_embd)
        self.attn = torch.nn.MultiheadAttention(n_embd, 2, batch_first=True)
        self.head = torch.nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=idx.device), 1)
        x = x + self.attn(x, x, x, attn_mask=causal, need_weights=False)[0]
        return self.head(x)


def token_stream(tok: Any) -> torch.Tensor:
    return torch.tensor(tok(corpus()[:20000])["input_ids"])


def get_batch(data: torch.Tensor, step: int, batch: int = 4, block: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's ``get_batch``, made deterministic by the step: ``x`` and ``y`` shifted by one."""
    gen = torch.Generator().manual_seed(step)
    starts = torch.randint(len(data) - block - 1, (batch,), generator=gen)
    x = torch.stack([data[i:i + block] for i in starts])
    y = torch.stack([data[i + 1:i + block + 1] for i in starts])
    return x, y


def train(model: torch.nn.Module, steps: int, on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None],
          data: torch.Tensor, lr: float = 3e-3) -> None:
    """The loop: ``on_step(step, x, logits, loss)`` after each optimizer step's forward."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        x, y = get_batch(data, step)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(step, x, logits.detach(), loss.detach())


def tokenizer() -> Any:
    return bpe_tokenizer()
