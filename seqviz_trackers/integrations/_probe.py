"""The probe set and the probe forward, shared by the trainer integrations.

A *probe set* is a fixed small batch (``input_ids``, optional ``attention_mask`` and
``labels``, kept on the host, and one name per row) that an integration runs through the
model at chosen steps: under ``torch.no_grad()``, in eval mode (the mode is restored
after), on the model's device. The same rows at every step make steps comparable.

Every process must run the probe forward (sharded models gather their weights in it);
only the main process converts and writes, through :class:`~seqviz_trackers.SeqVizLogger`.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Sequence

import torch

from ..convert import tensor_to_training_entry

__all__ = ["BATCH_KEYS", "ACCEPTED_BATCHES", "tokenizer_of", "batch_fields", "examples", "probe_from_texts", "probe_from_batch",
           "logits_of", "device_of", "probe_forward", "probe_entry", "mirror_target"]

BATCH_KEYS = ("input_ids", "attention_mask", "labels")

#: The batch shapes a probe set can be taken from, as error messages name them.
ACCEPTED_BATCHES = ("a dict (or BatchEncoding) with 'input_ids' and optional 'attention_mask' and 'labels', "
                    "or a tuple / list whose first item is the input_ids tensor of shape (batch, length)")


def tokenizer_of(obj: Any) -> Any:
    """A tokenizer held by ``obj`` (a tokenizer, a processor, a data collator, a module or
    data module with a ``tokenizer`` attribute), or None."""
    if obj is None:
        return None
    if callable(getattr(obj, "convert_ids_to_tokens", None)):
        return obj
    for attr in ("tokenizer", "processing_class", "data_collator"):  # processor / collator / wrapped collator
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            found = tokenizer_of(inner)
            if found is not None:
                return found
    return None


def examples(loader: Any, n: int) -> list[Any]:
    """The first ``n`` examples of a dataloader's dataset (map-style or iterable)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return []
    try:
        return [dataset[i] for i in range(min(n, len(dataset)))]
    except (TypeError, NotImplementedError):
        return list(itertools.islice(iter(dataset), n))


def probe_from_texts(tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Tokenize each text alone and right-pad with a mask: no pad token needed."""
    rows = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    empty = [t for t, r in zip(texts, rows) if len(r) < 2]
    if empty:
        raise ValueError(f"probe text {empty[0]!r} has fewer than 2 tokens; nothing to predict")
    pad = next((v for v in (getattr(tokenizer, "pad_token_id", None),
                            getattr(tokenizer, "eos_token_id", None)) if isinstance(v, int)), 0)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "names": [f"probe[{i}]" for i in range(len(rows))]}


def batch_fields(batch: Any, extra: Sequence[str] = ()) -> dict[str, Any] | None:
    """The :data:`BATCH_KEYS` (and ``extra`` keys) a collated batch holds, as they are (no
    copy); see :data:`ACCEPTED_BATCHES`. None when it has no token ids in an accepted place."""
    if isinstance(batch, (tuple, list)):
        first = batch[0] if batch else None
        return {"input_ids": first} if isinstance(first, torch.Tensor) else None
    if hasattr(batch, "get") and batch.get("input_ids") is not None:
        return {k: batch[k] for k in (*BATCH_KEYS, *extra) if batch.get(k) is not None}
    return None


def probe_from_batch(batch: Any, prefix: str, limit: int | None = None) -> dict[str, Any] | None:
    """The probe set in a collated batch (see :data:`ACCEPTED_BATCHES`), on the host, at most
    ``limit`` rows; None when the batch has no token ids in an accepted place."""
    found = batch_fields(batch)
    if found is None:
        return None
    probe = {k: torch.as_tensor(v).cpu()[:limit] for k, v in found.items()}
    ids = probe["input_ids"]
    if ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(f"the {prefix} batch's input_ids must be integer token ids of shape (batch, length), "
                         f"got dtype {ids.dtype} and shape {tuple(ids.shape)}; accepted batches: {ACCEPTED_BATCHES}")
    probe["names"] = [f"{prefix}[{i}]" for i in range(ids.shape[0])]
    return probe


def logits_of(output: Any) -> Any:
    """The logits in a model's output (a tensor, a ``ModelOutput``, dict or tuple), or None."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    logits = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)):
        logits = next((t for t in output if isinstance(t, torch.Tensor) and t.dim() == 3 and t.is_floating_point()), None)
    return logits


def device_of(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def probe_forward(module: torch.nn.Module, probe: dict[str, Any], call: Callable[[dict[str, Any]], Any] | None = None,
                  context: Callable[[], Any] | None = None) -> torch.Tensor:
    """The logits of one forward pass of ``module`` on ``probe``.

    ``call(batch)`` runs the forward (default: ``module(input_ids=..., attention_mask=...)``)
    on the probe's tensors moved to the module's device, inside ``torch.no_grad()``,
    ``context()`` (e.g. the trainer's autocast) and eval mode; the mode is restored after.
    """
    device = device_of(module)
    batch = {k: probe[k].to(device) for k in BATCH_KEYS if k in probe}
    if call is None:
        def call(b: dict[str, Any]) -> Any:
            return module(**{k: b[k] for k in ("input_ids", "attention_mask") if k in b})
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), (context or contextlib.nullcontext)():
            out = call(batch)
    finally:
        module.train(was_training)
    logits = logits_of(out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(f"the probe forward returned {type(out).__name__}, not logits: expected a floating-point "
                        "tensor of shape (batch, length, vocab), or an output with .logits; pass logits_fn= to "
                        "say how to get them")
    return logits.detach()


def probe_entry(logits: torch.Tensor, probe: dict[str, Any], tokenizer: Any, step: int, **options: Any) -> dict[str, Any]:
    """The entry of one probe forward (``options``: :func:`~seqviz_trackers.convert.tensor_to_training_entry`'s)."""
    return tensor_to_training_entry(logits, probe["input_ids"], tokenizer, step=step,
                                    attention_mask=probe.get("attention_mask"), labels=probe.get("labels"),
                                    names=probe["names"], **options)


def mirror_target(option: Any, followed: bool, default: Callable[[], Any]) -> Any:
    """A mirror's target from a ``tensorboard=`` / ``wandb=`` option: None follows the
    trainer's own loggers (``followed``: the trainer has one), True forces it on, False off,
    anything else is used as is. On: ``default()``; off: None."""
    on = followed if option is None else option
    if on is True:
        return default()
    return on or None
