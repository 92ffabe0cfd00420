"""Capture from the training forward of a ``torch.nn.Module``, for the trainer integrations.

:class:`ForwardCapture` puts two hooks on the model: a forward pre-hook that takes the
example index out of the inputs (so the model never sees it), and a forward hook that hands
the logits the model just computed, with its ``input_ids`` / ``labels`` / ``attention_mask``,
to a :class:`~seqviz_trackers.capture.BatchCapture`. Nothing is run a second time. Only
forwards in training mode with gradients on count: evaluation and probe passes do not.
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
        self._index: Any = None
        self._warned: set[str] = set()

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def finish(self, step: int) -> dict[str, Any] | None:
        """Close optimizer step ``step`` (every rank calls it); its record."""
        return self.capture.finish(step)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._index = kwargs.pop(self.capture.options.index_key, None)
        return args, kwargs

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not module.training or not torch.is_grad_enabled():
            return
        logits = logits_of(output)
        if logits is None:
            self._warn_once("no-logits", "seqviz: capture_train: the model's training forward returned no logits "
                            "(a fused linear-cross-entropy loss never materialises them); nothing is captured")
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(input_ids, torch.Tensor):
            self._warn_once("no-ids", "seqviz: capture_train: the training forward got no input_ids "
                            "(inputs_embeds only?); nothing is captured")
            return
        labels, mask = kwargs.get("labels"), kwargs.get("attention_mask")
        if labels is not None and tuple(labels.shape) != tuple(logits.shape[:2]):
            self._warn_once("shape", f"seqviz: capture_train: labels of shape {tuple(labels.shape)} do not match "
                            f"logits {tuple(logits.shape)}; nothing is captured")
            return
        self.capture.add(logits, input_ids, labels, mask, step=self.step_of(), index=self._index)
