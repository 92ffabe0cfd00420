"""The columns file: a binary cache of the numbers the training-dynamics views read.

Next to ``steps.jsonl``, :class:`~seqviz_trackers.storage.jsonl.TrainingDataWriter` keeps
``steps.jsonl.cols``: for each line it appends, one record holding that step's target
probability, target rank, loss, entropy and top-1 token id per predicted position, as
little-endian arrays. Building per-token series from it costs a few NumPy copies per
step instead of parsing about 700 bytes of JSON per position.

The JSONL file stays the only source of truth. A record is used only when it matches
its line (same offset, length, step and timestamp) and its checksum; otherwise, or when
the columns file is missing, damaged or deleted, readers parse the line itself. The file
may be deleted at any time; the next writer starts a new one.

Record layout: ``b"SVC2"``, two little-endian uint32 (header and body lengths), a JSON
header ``{"step", "offset", "length", "timestamp", "crc", "seqs": [{"key", "text", "n", "bound"?}],
"vocab": {"<id>": str}}``, then per sequence ``n`` × int32 position, float32 target
probability, float32 loss, float32 entropy, int32 target rank and int64 top-1 id, and,
when its ``bound`` is true (a target outside the logged candidates, see
:class:`~seqviz_trackers.format.entry.Columns`), ``n`` × int32 ``rank_gt`` and float32 ``p_lt``.
Records of an earlier layout (``b"SVC1"``, without the bound) are not read: their lines
are parsed, and a writer resuming the run starts the file again.
``crc`` is the CRC-32 of ``seqs`` and ``vocab`` (as compact JSON) followed by the body, ``key`` the sequence's identity
(:func:`~seqviz_trackers.dynamics.sequence_key`), ``text`` a checksum of its tokens, and
``vocab`` holds the display strings of top-1 ids this writer has not recorded before.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any, BinaryIO, Hashable, Iterator

import numpy as np

from ..format.entry import Columns, KnownIds, columns, sequence_key, text_checksum

__all__ = ["SUFFIX", "ColumnsWriter", "ColumnsReader", "Record", "encode_record", "decode_record"]

SUFFIX = ".cols"
MAGIC = b"SVC2"
_PREFIX = struct.Struct("<4sII")
#: (dtype, Columns field) of the body's arrays, in order
_ARRAYS = (("<i4", "pos"), ("<f4", "prob"), ("<f4", "loss"), ("<f4", "entropy"), ("<i4", "rank"), ("<i8", "top1"))
#: the arrays that follow them in a sequence whose ``bound`` is true
_BOUND = (("<i4", "rank_gt"), ("<f4", "p_lt"))

#: One step of a columns file: its step number, per sequence (key, text checksum,
#: :class:`~seqviz_trackers.dynamics.Columns`), and new top-1 display strings.
Record = tuple[int, list[tuple[Hashable, int, Columns]], dict[int, str]]


def encode_record(entry: dict[str, Any], offset: int, length: int, known: KnownIds | None = None) -> bytes:
    """The record of ``entry``, whose line (``length`` bytes without its newline) starts at ``offset``.

    ``known`` holds the top-1 ids whose display string an earlier record has; it is updated.
    """
    known = KnownIds() if known is None else known
    seqs, bodies, vocab = [], [], {}
    for seq in entry.get("sequences") or ():
        if not isinstance(seq, dict):
            continue
        cols = columns(seq)
        key = sequence_key(seq)
        bound = cols.rank_gt is not None and cols.p_lt is not None
        seqs.append({"key": [key[0], list(key[1]) if isinstance(key[1], tuple) else key[1]],
                     "text": text_checksum(seq), "n": len(cols), **({"bound": True} if bound else {})})
        bodies.extend(np.ascontiguousarray(getattr(cols, f), dtype=d).tobytes() for d, f in _ARRAYS + (_BOUND if bound else ()))
        vocab.update((str(top), string) for top, string in known.new_strings(seq, cols).items())
    body = b"".join(bodies)
    header = json.dumps({"step": entry["step"], "offset": offset, "length": length, "timestamp": entry.get("timestamp"),
                         "crc": checksum(seqs, vocab, body), "seqs": seqs, "vocab": vocab},
                        ensure_ascii=False, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, len(header), len(body)) + header + body


def checksum(seqs: Any, vocab: Any, body: bytes) -> int:
    """The ``crc`` of a record: its sequences, its display strings and its arrays."""
    covered = json.dumps([seqs, vocab], ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return zlib.crc32(body, zlib.crc32(covered))


def decode_record(header: dict[str, Any], body: bytes) -> Record:
    """A record's header and body as a :data:`Record`; ValueError when they do not fit."""
    out, at = [], 0
    for seq in header["seqs"]:
        n = int(seq["n"])
        arrays = {}
        for dtype, field in _ARRAYS + (_BOUND if seq.get("bound") is True else ()):
            arrays[field] = np.frombuffer(body, dtype=dtype, count=n, offset=at)  # ValueError when too short
            at += arrays[field].nbytes
        pos = arrays["pos"]
        index = np.arange(n)
        contiguous = bool((pos == index).all())
        cols = Columns(index if contiguous else pos.astype(np.int64), arrays["prob"], arrays["rank"], arrays["loss"],
                       arrays["entropy"], arrays["top1"], None, index, contiguous, arrays.get("rank_gt"), arrays.get("p_lt"))
        kind, value = seq["key"]
        out.append(((kind, tuple(value) if isinstance(value, list) else value), int(seq["text"]), cols))
    return int(header["step"]), out, {int(k): v for k, v in header["vocab"].items()}


def _scan(f: BinaryIO, start: int, size: int) -> Iterator[tuple[dict[str, Any], int, int]]:
    """(header, body start, body length) of each whole record from ``start``;
    stops at the end, at an incomplete record, or at one that is not a record."""
    pos = start
    while pos + _PREFIX.size <= size:
        f.seek(pos)
        magic, hlen, blen = _PREFIX.unpack(f.read(_PREFIX.size))
        end = pos + _PREFIX.size + hlen + blen
        if magic != MAGIC or end > size:
            return
        try:
            header = json.loads(f.read(hlen))
        except ValueError:
            return
        if not isinstance(header, dict):
            return
        yield header, pos + _PREFIX.size + hlen, blen
        pos = end


class ColumnsWriter:
    """Appends one record per line written; used by :class:`~seqviz_trackers.storage.jsonl.TrainingDataWriter`.

    On opening, records after an incomplete one (an interrupted writer) are cut off, and
    the file is emptied when the JSONL file is (a new run in the same place).
    """

    def __init__(self, jsonl_path: str | os.PathLike[str], jsonl_size: int):
        self.path = os.fspath(jsonl_path) + SUFFIX
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._known = KnownIds()
        size = os.fstat(self._fd).st_size
        end = 0
        if jsonl_size:
            with open(self.path, "rb") as f:
                for _header, body, blen in _scan(f, 0, size):
                    end = body + blen
        if end < size:
            os.ftruncate(self._fd, end)

    def append(self, entry: dict[str, Any], offset: int, length: int) -> None:
        """Append the record of ``entry``, whose line starts at ``offset`` and has ``length`` bytes."""
        view = memoryview(encode_record(entry, offset, length, self._known))
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        os.close(self._fd)


class ColumnsReader:
    """Finds the record of a JSONL line in the columns file next to it, if there is a valid one.

    Args:
        jsonl_path: the JSONL file (the columns file is this path plus :data:`SUFFIX`).
        files: how to open and stat files (see :class:`~seqviz_trackers.storage.jsonl.Files`).
    """

    def __init__(self, jsonl_path: str, files: Any):
        self.path = jsonl_path + SUFFIX
        self.files = files
        self._end = 0
        self._identity: Any = None
        self._index: dict[int, tuple[dict[str, Any], int, int]] = {}  # line offset -> (header, body start, length)

    def _refresh(self) -> None:
        stat = self.files.stat(self.path)
        if stat is None:
            self._end, self._identity, self._index = 0, None, {}
            return
        size, identity = stat
        if identity != self._identity or size < self._end:
            self._end, self._index = 0, {}
        self._identity = identity
        if size == self._end:
            return
        with self.files.open(self.path) as f:
            for header, body, blen in _scan(f, self._end, size):
                if isinstance(header.get("offset"), int):
                    self._index[header["offset"]] = (header, body, blen)
                self._end = body + blen

    def get(self, info: Any) -> Record | None:
        """The record of the line ``info`` (a :class:`~seqviz_trackers.storage.jsonl.StepInfo`), or None."""
        if info.offset not in self._index:
            try:
                self._refresh()
            except OSError:
                return None  # no usable columns file: the line is parsed instead
        found = self._index.get(info.offset)
        if found is None:
            return None
        header, body, blen = found
        line = (header.get("step"), header.get("length"), header.get("timestamp"))
        if line != (info.step, info.length, info.timestamp):
            return None
        try:
            with self.files.open(self.path) as f:
                f.seek(body)
                data = f.read(blen)
            good = checksum(header.get("seqs"), header.get("vocab"), data) == header.get("crc")
            return decode_record(header, data) if good else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
