"""Capture from the training forward of a ``torch.nn.Module``, for the trainer integrations.

:class:`ForwardCapture` puts two hooks on the model: a forward pre-hook that takes the
example index out of the inputs (so the model never sees it), and a forward hook that hands
the logits the model just computed, with its ``input_ids`` / ``labels`` / ``attention_mask``,
to a :class:`~seqviz_trackers.capture.BatchCapture`. Nothing is run a second time. Only
forwards in training mode with gradients on count: evaluation and probe passes do not.

A trainer that sees the batch before the forward (Lightning's ``on_train_batch_start``)
hands it to :meth:`ForwardCapture.use_batch`; the token ids, labels, mask and example index
then come from that batch, whatever the hooked module's forward takes.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ..capture import BatchCapture, CaptureOptions
from ._probe import logits_of

__all__ = ["ForwardCapture"]

log = logging.getLogger("seqviz_trackers")


class ForwardCapture:
    """Feed a model's training forwards to a :class:`BatchCapture`.

    Args:
        options: what to capture.
        tokenizer: shows captured tokens as text (None: ids).
        step_of: the optimizer step the next forward belongs to.
    """

    def __init__(self, options: CaptureOptions, tokenizer: Any, step_of: Callable[[], int]):
        self.capture = BatchCapture(options, tokenizer)
        self.step_of = step_of
        self._handles: list[Any] = []
        self.module: torch.nn.Module | None = None
        self._index: Any = None
        self._batch: dict[str, Any] | None = None
        self._warned: set[str] = set()
        self.forwards = 0  # training forwards the hook saw

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self.module = model
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def use_batch(self, fields: dict[str, Any] | None) -> None:
        """Take the next training forwards' ``input_ids`` / ``labels`` / ``attention_mask`` /
        example index from ``fields`` (None: from each forward's own arguments)."""
        self._batch = fields

    def finish(self, step: int) -> dict[str, Any] | None:
        """Close optimizer step ``step`` (every rank calls it); its record."""
        return self.capture.finish(step)

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` once per ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._index = kwargs.pop(self.capture.options.index_key, None)
        return args, kwargs

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not module.training or not torch.is_grad_enabled():
            return
        self.forwards += 1
        logits = logits_of(output)
        if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 3):
            self.warn_once("no-logits", "seqviz: capture_train: the model's training forward returned no logits "
                            "(a fused linear-cross-entropy loss never materialises them); nothing is captured")
            return
        if self._batch is not None:
            source, index = self._batch, self._batch.get(self.capture.options.index_key)
            input_ids = source.get("input_ids")
        else:
            source, index = kwargs, self._index
            input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(input_ids, torch.Tensor):
            self.warn_once("no-ids", "seqviz: capture_train: the training forward got no input_ids "
                            "(inputs_embeds only?); nothing is captured")
            return
        labels, mask = source.get("labels"), source.get("attention_mask")
        shape = tuple(logits.shape[:2]) if logits.dim() == 3 else (1, logits.shape[0])
        for name, t in (("input_ids", input_ids), ("labels", labels)):
            if isinstance(t, torch.Tensor) and tuple(t.shape) != shape and tuple(t.shape) != shape[1:]:
                self.warn_once("shape", f"seqviz: capture_train: {name} of shape {tuple(t.shape)} do not match "
                                f"logits {tuple(logits.shape)}; nothing is captured")
                return
        self.capture.add(logits, input_ids, labels, mask, step=self.step_of(), index=index)
