"""Mirror logged steps into a TensorBoard run directory.

Each step lands in two places of the same run directory:

- ``<run dir>/plugins/seqviz/steps.jsonl``: the entry, as the same JSONL line the
  main file holds. Plain plugin assets are never reservoir-sampled, so every
  logged step stays visible whatever loader TensorBoard uses.
- one tiny summary (tag ``seqviz``, ``plugin_name="seqviz"``, ``DATA_CLASS_TENSOR``,
  the step's loss as a scalar) in the run's event file, so TensorBoard lists the
  run and shows the seqviz tab.

No TensorFlow is needed: the summary is a protobuf written through a
``torch.utils.tensorboard.SummaryWriter``'s file writer.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util

from seqviz_trackers.storage.jsonl import TrainingDataWriter, encode_entry
from seqviz_trackers.storage.batches import batches_path

__all__ = ["TensorBoardMirror", "PLUGIN_NAME", "ASSET_NAME", "SUMMARY_TAG", "asset_path", "step_summary"]

PLUGIN_NAME = "seqviz"
#: the asset file, relative to ``<run dir>/plugins/seqviz/``
ASSET_NAME = "steps.jsonl"
SUMMARY_TAG = "seqviz"
_CONTENT = json.dumps({"version": 1, "asset": ASSET_NAME}).encode()


def asset_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run directory keeps its seqviz steps."""
    return Path(run_dir) / "plugins" / PLUGIN_NAME / ASSET_NAME


def step_summary(entry: dict[str, Any]) -> summary_pb2.Summary:
    """The per-step marker summary: the loss (NaN when absent) under plugin ``seqviz``."""
    loss = entry.get("loss")
    value = float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else math.nan
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=_CONTENT),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
        summary_description="seqviz: token predictions logged at this step (see the seqviz tab)",
    )
    tensor = tensor_util.make_tensor_proto(np.float32(value))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=SUMMARY_TAG, tensor=tensor, metadata=metadata)])


class TensorBoardMirror:
    """Write seqviz steps into one TensorBoard run.

    Args:
        target: a run directory (created if needed; the mirror opens and closes its
            own event file there), or a ``torch.utils.tensorboard.SummaryWriter``
            (or any writer with ``get_logdir()`` and a ``file_writer``) that the
            user already logs scalars with: the steps then share its run directory,
            and the writer is flushed but never closed here.

    ``log_step(entry, line)`` appends ``line`` (the entry encoded by
    :func:`seqviz_trackers.storage.jsonl.encode_entry`) to the asset file and writes the
    marker summary; a run directory written by a crashed process stays readable
    (an incomplete last line is skipped by readers and removed by the next writer).
    """

    def __init__(self, target: Any):
        if isinstance(target, (str, os.PathLike)):
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.fspath(target))
            self._owns_writer = True
        elif callable(getattr(target, "get_logdir", None)):
            self._writer = target
            self._owns_writer = False
        else:
            raise TypeError(
                "tensorboard= takes a log directory (str or path) or a SummaryWriter, "
                f"got {type(target).__name__}"
            )
        self.run_dir = Path(self._writer.get_logdir())
        self.path = asset_path(self.run_dir)
        self._assets: TrainingDataWriter | None = TrainingDataWriter(self.path, validate=False)
        self._batches: TrainingDataWriter | None = None

    def _file_writer(self) -> Any:
        writer = self._writer
        file_writer = getattr(writer, "file_writer", None)
        if file_writer is None and callable(getattr(writer, "_get_file_writer", None)):
            file_writer = writer._get_file_writer()  # a closed torch SummaryWriter reopens here
        if file_writer is None:
            raise RuntimeError(f"{type(writer).__name__} has no file_writer to write the seqviz summary with")
        return file_writer

    def log_step(self, entry: dict[str, Any], line: bytes | None = None) -> None:
        """Append one step (``line``: the entry already encoded; made here when None)."""
        if self._assets is None:
            raise ValueError(f"{self.path}: the TensorBoard mirror is closed")
        if line is None:
            line = encode_entry(entry)
        self._assets.write_line(line, entry)
        stamp = entry.get("timestamp")
        walltime = float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None
        file_writer = self._file_writer()
        file_writer.add_summary(step_summary(entry), global_step=int(entry["step"]), walltime=walltime)
        file_writer.flush()

    def log_batch(self, record: dict[str, Any], line: bytes) -> None:
        """Append one step's training-batch line to the asset's batches file (``steps.jsonl.batches``)."""
        if self._batches is None:
            self._batches = TrainingDataWriter(batches_path(self.path), validate=False, columns=False)
        self._batches.write_line(line)

    def close(self) -> None:
        """Close the asset file, and the event file when this mirror opened it."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None
        if self._assets is not None:
            self._assets.close()
            self._assets = None
        if self._owns_writer:
            self._writer.close()
        else:
            self._file_writer().flush()

    def __enter__(self) -> "TensorBoardMirror":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
