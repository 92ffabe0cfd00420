"""Capture from the training forward of a ``torch.nn.Module``, for the trainer integrations.

:class:`ForwardCapture` puts two hooks on the model: a forward pre-hook that takes the
example index out of the inputs (so the model never sees it), and a forward hook that hands
the logits the model just computed, with its ``input_ids`` / ``labels`` / ``attention_mask``,
to a :class:`~seqviz_trackers.capture.BatchCapture`. Nothing is run a second time. Only
forwards in training mode with gradients on count: evaluation and probe passes do not.

When the model computes its loss itself with the Hugging Face causal-LM loss (its
``loss_function`` is ``ForCausalLMLoss``), that loss is replaced while the capture is
attached by one that computes the per-token cross-entropy once (``reduction="none"``, in
float32, with the same shift, ignore index and ``num_items_in_batch``), returns the loss the
original would, and keeps the token losses (detached) for the capture: the row losses then
cost no second pass over the logits. Whenever it cannot apply (another loss, labels not
given to the model, ``shift_labels``, another ignore index) the original runs and the row
losses are computed from the logits as before. :meth:`ForwardCapture.detach` puts the
original back.

A trainer that sees the batch before the forward (Lightning's ``on_train_batch_start``)
hands it to :meth:`ForwardCapture.use_batch`; the token ids, labels, mask and example index
then come from that batch, whatever the hooked module's forward takes.
"""

from __future__ import annotations

import logging
import sys
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
        reuse_loss: take the row losses from the model's own loss computation where it can
            (see the module's description); False: always from the logits.
    """

    def __init__(self, options: CaptureOptions, tokenizer: Any, step_of: Callable[[], int], reuse_loss: bool = True):
        self.capture = BatchCapture(options, tokenizer)
        self.step_of = step_of
        self._handles: list[Any] = []
        self.module: torch.nn.Module | None = None
        self._index: Any = None
        self._batch: dict[str, Any] | None = None
        self._warned: set[str] = set()
        self.forwards = 0  # training forwards the hook saw
        self.reuse_loss = reuse_loss
        self.reused = 0  # of them, those whose row losses came from the model's loss
        self._in_forward = False
        self._seen: tuple[Any, Any, Any] | None = None  # (logits, labels, token losses) of this forward
        self._restore: Callable[[], None] | None = None

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self.module = model
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]
        if self.reuse_loss:
            self._wrap_loss(model)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._restore is not None:
            self._restore()
            self._restore = None
        self._seen = None

    def _wrap_loss(self, model: torch.nn.Module) -> None:
        """Replace the model's causal-LM loss by one that keeps the token losses (see above)."""
        loss_utils = sys.modules.get("transformers.loss.loss_utils")
        original = getattr(model, "loss_function", None)
        if loss_utils is None or original is None or original is not getattr(loss_utils, "ForCausalLMLoss", None):
            return
        keys = ("loss_function", "_loss_function")
        before = {k: vars(model)[k] for k in keys if k in vars(model)}

        def loss_function(logits: Any, labels: Any, vocab_size: int, num_items_in_batch: Any = None,
                          ignore_index: int = -100, shift_labels: Any = None, **kwargs: Any) -> Any:
            if (not self._in_forward or shift_labels is not None or ignore_index != -100
                    or not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[-1] != vocab_size
                    or not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(logits.shape[:2])):
                return original(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch,
                                ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)
            loss, token = causal_lm_loss(logits, labels, num_items_in_batch)
            self._seen = (logits, labels, token.detach().view(logits.shape[:2]))
            return loss

        model.loss_function = loss_function

        def restore() -> None:
            if getattr(model, "loss_function", None) is not loss_function:
                return  # replaced since: leave it
            for k in keys:
                if k in before:
                    vars(model)[k] = before[k]
                else:
                    vars(model).pop(k, None)

        self._restore = restore

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
        self._in_forward = module.training and torch.is_grad_enabled()
        self._seen = None
        return args, kwargs

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        seen, self._seen, self._in_forward = self._seen, None, False
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
        token_losses = None
        if seen is not None and seen[0] is logits and isinstance(labels, torch.Tensor) and (
                seen[1] is labels or (seen[1].shape == labels.shape and torch.equal(seen[1], labels.to(seen[1].device)))):
            token_losses = seen[2]  # the loss saw these logits and these labels
            self.reused += 1
        self.capture.add(logits, input_ids, labels, mask, step=self.step_of(), index=index, token_losses=token_losses)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """The Hugging Face causal-LM loss and its per-token losses, from one cross-entropy pass.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` unshifted (``-100`` ignored). The loss is
    the sum of the token losses over ``num_items_in_batch`` when given, else their mean over
    the predicted tokens, in float32 as ``ForCausalLMLoss`` computes it. Returns ``(loss,
    token losses)``, the latter ``(B * T,)``, 0 where a token is not predicted.
    """
    x = logits.float()
    target = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].to(x.device).reshape(-1)
    token = torch.nn.functional.cross_entropy(x.view(-1, x.shape[-1]), target, ignore_index=-100, reduction="none")
    if num_items_in_batch is None:
        return token.sum() / (target != -100).sum(), token
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(token.device)
    return token.sum() / num_items_in_batch, token
