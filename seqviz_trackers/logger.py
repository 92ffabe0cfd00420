"""The fan-out point: one logged step goes to the JSONL file and to each tracker mirror.

The JSONL file is the source of truth. Mirrors (TensorBoard, W&B) are thin adapters
with two methods, ``log_step(entry, line)`` and ``close()``; a mirror that fails logs
one warning and is switched off, so a tracker outage never stops training or the file.
Under ``torch.distributed`` only global rank 0 writes anything.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from .storage.jsonl import TrainingDataWriter, encode_entry

__all__ = ["SeqVizLogger", "Mirror", "global_rank", "rank_zero_only"]

log = logging.getLogger("seqviz_trackers")
F = TypeVar("F", bound=Callable[..., Any])


def global_rank() -> int:
    """This process's rank: torch.distributed when initialised, else the launcher's RANK."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def rank_zero_only(fn: F) -> F:
    """Run ``fn`` on global rank 0 only; elsewhere it does nothing and returns None."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if global_rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


class Mirror(Protocol):
    """A tracker adapter. ``line`` is the entry already encoded as one JSONL line."""

    def log_step(self, entry: dict[str, Any], line: bytes) -> None: ...

    def close(self) -> None: ...


def _tensorboard_mirror(target: Any) -> Mirror:
    try:
        from tb_plugin import TensorBoardMirror
    except ImportError as exc:
        raise ImportError(
            f"the TensorBoard mirror needs tensorboard ({exc}); install it with: pip install tensorboard (the 'tensorboard' extra)"
        ) from None
    return TensorBoardMirror(target)


def _wandb_mirror(target: Any) -> Mirror:
    try:
        from wandb_panel import WandbMirror
    except ImportError as exc:
        raise ImportError(
            f"the Weights & Biases mirror needs wandb ({exc}); install it with: pip install wandb (the 'wandb' extra)"
        ) from None
    return WandbMirror(target)


class SeqVizLogger:
    """Log steps to a JSONL file and mirror them into TensorBoard and W&B.

    Args:
        jsonl_path: the JSONL file (the source of truth). None: mirrors only.
        tensorboard: a log directory, or a ``torch.utils.tensorboard.SummaryWriter``.
        wandb: a ``wandb`` run, or True for the active ``wandb.run``.
        validate: check entries against the schema before writing.
        fsync: force each JSONL line to disk.
        mirrors: further objects with ``log_step(entry, line)`` and ``close()``.
    """

    def __init__(
        self,
        jsonl_path: str | os.PathLike[str] | None = None,
        tensorboard: Any = None,
        wandb: Any = None,
        *,
        validate: bool = True,
        fsync: bool = False,
        mirrors: list[Mirror] | None = None,
    ):
        self.jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        self.validate = validate
        self.writer: TrainingDataWriter | None = None
        self.mirrors: list[Mirror] = []
        self.capture: Any = None  # a seqviz_trackers.capture.BatchCapture, made by the first log_batch
        self._batches: TrainingDataWriter | None = None
        if global_rank() != 0:  # other ranks write nothing (log_step/close are rank-zero only)
            return
        if self.jsonl_path is not None:
            self.writer = TrainingDataWriter(self.jsonl_path, validate=False, fsync=fsync)
        if tensorboard is not None and tensorboard is not False:
            self.mirrors.append(_tensorboard_mirror(tensorboard))
        if wandb is not None and wandb is not False:
            self.mirrors.append(_wandb_mirror(wandb))
        self.mirrors.extend(mirrors or [])

    @rank_zero_only
    def log_step(self, entry: dict[str, Any]) -> None:
        """Write one entry everywhere. A bad entry raises before anything is written."""
        line = encode_entry(entry, self.validate)
        if self.writer is not None:
            self.writer.write_line(line, entry)
        for mirror in list(self.mirrors):
            self._call_mirror(mirror, "log_step", entry, line)

    @rank_zero_only
    def log_predictions(self, logits: Any, input_ids: Any, tokenizer: Any, step: int, loss: Any = None,
                        **options: Any) -> dict[str, Any] | None:
        """Convert logits to an entry and log it: the one line a training loop needs.

        >>> logger.log_predictions(out.logits, batch["input_ids"], tokenizer, step, loss=loss.item())

        ``options`` are :func:`~seqviz_trackers.convert.tensor_to_training_entry`'s keywords
        (``attention_mask``, ``labels``, ``names``, ``top_k``, ``model_name``, ``metadata``,
        ``timestamp``). Returns the entry written; under ``torch.distributed`` ranks other
        than 0 return None at once, without converting (the forward is the caller's, so a
        sharded model's forward still runs on every rank).

        Raises:
            ValueError: wrong shapes, ``input_ids`` that do not match the logits, NaN logits
                (see :func:`~seqviz_trackers.convert.tensor_to_training_entry`).
        """
        from .convert import tensor_to_training_entry

        if loss is not None and callable(getattr(loss, "item", None)):
            loss = loss.item()  # a 0-d tensor: one host transfer, here rather than on every rank
        entry = tensor_to_training_entry(logits, input_ids, tokenizer, step, loss, **options)
        self.log_step(entry)
        return entry

    def _call_mirror(self, mirror: Mirror, method: str, *args: Any) -> None:
        try:
            getattr(mirror, method)(*args)
        except Exception as exc:  # a tracker failure must not stop training
            log.warning("seqviz: %s failed (%s: %s); it is switched off, the JSONL file goes on",
                        type(mirror).__name__, type(exc).__name__, exc)
            self.mirrors.remove(mirror)

    def log_batch(self, logits: Any, input_ids: Any, labels: Any = None, *, step: int, attention_mask: Any = None,
                  example_index: Any = None, tokenizer: Any = None, capture: Any = True) -> None:
        """One micro-batch of a training loop's optimizer step ``step``, from the logits its
        forward already computed (see :mod:`seqviz_trackers.capture`). Call it on every rank,
        for every micro-batch; the first call of a new step (or :meth:`finish_batch`, or
        :meth:`close`) closes the previous step and writes its line to ``<jsonl>.batches``.

        ``labels`` are unshifted (``-100``: not predicted); ``example_index`` gives each row's
        index in the data set; ``tokenizer`` shows tokens as text; ``capture`` (first call
        only) is ``capture_train=``: True, an int (full capture every N steps), or
        :class:`~seqviz_trackers.capture.CaptureOptions`.
        """
        from .capture import BatchCapture, capture_options

        if self.capture is None:
            self.capture = BatchCapture(capture_options(capture) or capture_options(True), tokenizer)
        if self.capture.pending is not None and self.capture.pending != step:
            self.finish_batch()
        self.capture.add(logits, input_ids, labels, attention_mask, step=step, index=example_index)

    def finish_batch(self) -> dict[str, Any] | None:
        """Close the step :meth:`log_batch` is collecting (every rank calls it) and write it."""
        step = self.capture.pending if self.capture is not None else None
        record = self.capture.finish(step) if step is not None else None
        if record is not None:
            self.log_batch_record(record)
        return record

    @rank_zero_only
    def log_batch_record(self, record: dict[str, Any]) -> None:
        """Write one step's training-batch record (:class:`~seqviz_trackers.capture.BatchCapture`)
        to ``<jsonl>.batches`` and to each mirror that keeps batches (``log_batch(record, line)``)."""
        from .storage.batches import batches_path, encode_batch

        line = encode_batch(record)
        if self._batches is None and self.jsonl_path is not None:
            self._batches = TrainingDataWriter(batches_path(self.jsonl_path), validate=False, columns=False)
        if self._batches is not None:
            self._batches.write_line(line)
        for mirror in list(self.mirrors):
            if callable(getattr(mirror, "log_batch", None)):
                self._call_mirror(mirror, "log_batch", record, line)

    def close(self) -> None:
        """Close the step :meth:`log_batch` was collecting (every rank), then the file and mirrors."""
        if self.capture is not None and self.capture.pending is not None:
            self.finish_batch()
        self._close()

    @rank_zero_only
    def _close(self) -> None:
        if self._batches is not None:
            self._batches.close()
            self._batches = None
        for mirror in self.mirrors:
            try:
                mirror.close()
            except Exception as exc:
                log.warning("seqviz: closing %s failed (%s: %s)", type(mirror).__name__, type(exc).__name__, exc)
        self.mirrors = []
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "SeqVizLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
