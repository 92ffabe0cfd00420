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
            f"the TensorBoard mirror needs tensorboard ({exc}); install it with: pip install 'seqviz-trackers[tensorboard]'"
        ) from None
    return TensorBoardMirror(target)


def _wandb_mirror(target: Any) -> Mirror:
    try:
        from wandb_panel import WandbMirror
    except ImportError as exc:
        raise ImportError(
            f"the Weights & Biases mirror needs wandb ({exc}); install it with: pip install 'seqviz-trackers[wandb]'"
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
            try:
                mirror.log_step(entry, line)
            except Exception as exc:  # a tracker failure must not stop training
                log.warning("seqviz: %s failed (%s: %s); it is switched off, the JSONL file goes on",
                            type(mirror).__name__, type(exc).__name__, exc)
                self.mirrors.remove(mirror)

    @rank_zero_only
    def close(self) -> None:
        """Close the file and every mirror (mirrors may upload a final artifact here)."""
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
