"""A tiny real LightningModule (the GPT-2 of hf_helpers) and its dataloaders."""

from __future__ import annotations

from typing import Any

import torch

try:
    import lightning.pytorch as L
except ImportError:
    import pytorch_lightning as L  # type: ignore[no-redef]

from hf_helpers import LINES, dataset, tiny_model, tokenizer  # noqa: F401


class TinyLM(L.LightningModule):
    """A causal LM: ``forward(input_ids, attention_mask)`` returns the model's output (with ``.logits``)."""

    def __init__(self, tok: Any, seed: int = 0):
        super().__init__()
        self.tokenizer = tok
        self.model = tiny_model(len(tok), seed=seed)
        self.modes_seen: list[bool] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.modes_seen.append(self.training)  # the probe restores train mode
        loss = self.model(**batch).loss
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self.model(**batch).loss)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def loader(tok: Any, lines: list[str] = LINES, repeat: int = 2, batch_size: int = 4) -> torch.utils.data.DataLoader:
    from transformers import DataCollatorForLanguageModeling

    return torch.utils.data.DataLoader(dataset(tok, lines, repeat), batch_size=batch_size,
                                       collate_fn=DataCollatorForLanguageModeling(tok, mlm=False))


def trainer(root: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = dict(default_root_dir=str(root), accelerator="cpu", devices=1, max_steps=6,
                                   enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                                   num_sanity_val_steps=0, enable_checkpointing=False, logger=False)
    options.update(kwargs)
    return L.Trainer(**options)
