"""Where the training batches of a run live: ``<run>.jsonl.batches``, beside the run's JSONL.

One line per optimizer step, written by :class:`~seqviz_trackers.capture.BatchCapture`
through :meth:`~seqviz_trackers.logger.SeqVizLogger.log_batch_record`::

    {"step", "timestamp", "loss", "perplexity",          # the step's mean token loss
     "rows": {"loss": [...], "tokens": [...], "hash": [...], "rank": [...], "index": [...]?},
     "spike": {"z", "median", "mad"} | null,             # the online detector's verdict
     "capture": <an entry of the usual format> | null,   # captured rows, at capture steps
     "reason": "scheduled" | "spike" | "after_spike" | null}

The header fields come first, as in the run's JSONL, so the same
:class:`~seqviz_trackers.storage.jsonl.TrainingDataReader` indexes it (one seek per step).
The name does not end in ``.jsonl``: ``seqviz serve --logdir`` does not take it for a run.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from typing import Any

from ..format.schema import SchemaValidationError, check_schema
from .jsonl import EncodedJSON, TrainingDataReader, encode_entry

__all__ = ["SUFFIX", "batches_path", "encode_batch", "captured_sequences", "batches_reader"]

SUFFIX = ".batches"


def batches_path(jsonl_path: str | os.PathLike[str]) -> str:
    """The batches file of the run whose JSONL file is ``jsonl_path``."""
    return os.fspath(jsonl_path) + SUFFIX


def encode_batch(record: dict[str, Any]) -> bytes:
    """One step's record as one line; its captured entry is checked against the schema.

    Sequences held as their JSON (:class:`~seqviz_trackers.storage.jsonl.EncodedJSON`, as
    :class:`~seqviz_trackers.capture.BatchCapture` keeps them) are written as they are; the
    converter made them, the rest of the entry is checked."""
    capture = record.get("capture")
    if capture is None:
        return encode_entry(record, validate=False)
    sequences = capture.get("sequences") if isinstance(capture, dict) else None
    if not (isinstance(sequences, list) and any(isinstance(s, EncodedJSON) for s in sequences)):
        _check_capture(capture)
        return encode_entry(record, validate=False)
    _check_capture({**capture, "sequences": [s for s in sequences if not isinstance(s, EncodedJSON)]})
    head = {k: v for k, v in capture.items() if k != "sequences"}
    line = encode_entry({**{k: v for k, v in record.items() if k != "capture"}, "capture": {**head, "sequences": []}},
                        validate=False)
    end = b'"sequences":[]}}\n'
    assert line.endswith(end), "the capture and its sequences are written last"
    parts = [bytes(s) if isinstance(s, EncodedJSON) else encode_entry(s, validate=False)[:-1] for s in sequences]
    return line[:-len(end)] + b'"sequences":[' + b",".join(parts) + b"]}}\n"


def _check_capture(capture: dict[str, Any]) -> None:
    try:
        check_schema(capture)
    except SchemaValidationError as exc:
        raise SchemaValidationError(exc.reason, "$.capture" + exc.path[1:]) from None


def captured_sequences(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The captured rows of a training-batch record as dicts (none when it has no capture),
    whether it was read from a file or made by :class:`~seqviz_trackers.capture.BatchCapture`."""
    capture = record.get("capture") or {}
    return [json.loads(s) if isinstance(s, EncodedJSON) else s for s in capture.get("sequences") or []]


_readers: "weakref.WeakKeyDictionary[TrainingDataReader, TrainingDataReader]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def batches_reader(reader: TrainingDataReader) -> TrainingDataReader:
    """The reader of the batches file beside the file ``reader`` reads (same file system),
    one per ``reader``, so its index is built once and then extended."""
    with _lock:
        found = _readers.get(reader)
        if found is None:
            found = _readers[reader] = TrainingDataReader(batches_path(reader.path), files=reader.files)
        return found
