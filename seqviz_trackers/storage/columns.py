"""The columns file: a binary cache of the numbers the training-dynamics views read, and
of each step's view.

Next to ``steps.jsonl``, :class:`~seqviz_trackers.storage.jsonl.TrainingDataWriter` keeps
``steps.jsonl.cols``: for each line it appends, one record holding that step's target
probability, target rank, loss, entropy and top-1 token id per predicted position, as
little-endian arrays, and the step's view (:func:`~seqviz_trackers.format.view.step_view`:
what the dashboard draws of it, without the candidates). Building per-token series from it
costs a few NumPy copies per step instead of parsing about 700 bytes of JSON per position,
and the ``step`` route's view (``view=1``) costs reading ~0.4 MB of compressed view and a
checksum of the line instead of parsing a 10 MB line (8 x 2,048 tokens, top-20).

The JSONL file stays the only source of truth. A record is used only when it matches
its line (same offset, length, step and timestamp) and its checksum; its view only when,
besides, the line's bytes have the CRC-32 the writer took of them (``line_crc``) and the
view its own (``view_crc``). Otherwise, or when the columns file is missing, damaged or
deleted, readers parse the line itself. The file may be deleted at any time; the next
writer starts a new one. The reader's index also locates lines from the records' offsets
and lengths, checking each line's header and newline in the JSONL (:meth:`ColumnsReader.lines`),
and the dynamics views read runs of records with the same sequences as one :class:`Block`
of 2-D arrays (:meth:`ColumnsReader.records`).

Record layout: ``b"SVC3"``, three little-endian uint32 (header, body and view lengths), a
JSON header ``{"step", "offset", "length", "timestamp", "crc", "seqs": [{"key", "text", "n",
"bound"?}], "vocab": {"<id>": str}, "line_crc"?, "view_crc"?, "view_seqs"?, "whole"?}``, the body: per
sequence ``n`` × int32 position, float32 target probability, float32 loss, float32 entropy,
int32 target rank and int64 top-1 id, and, when its ``bound`` is true (a target outside the
logged candidates, see :class:`~seqviz_trackers.format.entry.Columns`), ``n`` × int32
``rank_gt`` and float32 ``p_lt``; then the view: the step view as UTF-8 JSON, zlib-compressed (empty when the record
has none). ``crc`` is the CRC-32 of ``seqs`` and ``vocab`` (as compact JSON) followed by the
body, ``key`` the sequence's identity (:func:`~seqviz_trackers.dynamics.sequence_key`),
``text`` a checksum of its tokens, and ``vocab`` holds the display strings of top-1 ids this
writer has not recorded before. ``whole`` (true, or absent) says that every item of the
entry's ``sequences`` is a sequence and the rows of each are all of its predictions, in the
line's order, each position once: the n-th prediction object of the line is then row n, which
is how one prediction is read without parsing the line
(:meth:`~seqviz_trackers.storage.jsonl.TrainingDataReader.prediction_at`). ``view_seqs`` says
where the view's sequences are in its JSON (:func:`view_text`), so that its first ones are
sent without parsing it (:func:`view_part`); records written before it have none.

The view is the one of the line as it reads back, or there is none: it is made from the
entry with the line's key order (header fields first), and JSON turns nothing in it into
something else, except tuples into lists, so an entry with a tuple where the view reads a
list (sequences, predictions, ``top_k`` / ``top_20``) gets no view; nor does one with a key
that is not a string outside the predictions (JSON makes it a string, maybe one the object
has already), nor one the view or JSON cannot take (a NaN the line was written with
elsewhere, say). Its bytes are then what :func:`~seqviz_trackers.storage.jsonl.client_json`
makes of the view of the line read back, and the ``step`` route sends them as they are.
The writer makes a view only with the line's bytes at hand (``encode_record(..., line=)``).

Records of the layout before (``b"SVC2"``: a 12-byte prefix, no view) are read as before
for the dynamics and the index, and their steps' views are parsed from the lines; a writer
resuming the run appends ``SVC3`` records after them. Records of the first layout
(``b"SVC1"``, without the bound) are not read: their lines are parsed, and a writer
resuming the run starts the file again.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Hashable, Iterator

import numpy as np

from ..format.entry import Columns, KnownIds, columns, sequence_key, text_checksum
from ..format.view import step_view

__all__ = ["SUFFIX", "ColumnsWriter", "ColumnsReader", "Record", "Block", "encode_record", "decode_record", "build",
           "Built", "WriterActive"]

SUFFIX = ".cols"
MAGIC = b"SVC3"
_PREFIX = struct.Struct("<4sIII")
#: the previous layout: no step view (its records still feed the dynamics and the index)
_MAGIC2 = b"SVC2"
_PREFIX2 = struct.Struct("<4sII")
#: (dtype, Columns field) of the body's arrays, in order
_ARRAYS = (("<i4", "pos"), ("<f4", "prob"), ("<f4", "loss"), ("<f4", "entropy"), ("<i4", "rank"), ("<i8", "top1"))
#: the arrays that follow them in a sequence whose ``bound`` is true
_BOUND = (("<i4", "rank_gt"), ("<f4", "p_lt"))

#: One step of a columns file: its step number, per sequence (key, text checksum,
#: :class:`~seqviz_trackers.dynamics.Columns`), and new top-1 display strings.
Record = tuple[int, list[tuple[Hashable, int, Columns]], dict[int, str]]


def encode_record(entry: dict[str, Any], offset: int, length: int, known: KnownIds | None = None,
                  line: bytes | memoryview | None = None) -> bytes:
    """The record of ``entry``, whose line (``length`` bytes without its newline) starts at ``offset``.

    ``known`` holds the top-1 ids whose display string an earlier record has; it is updated.
    ``line``: the line's bytes (made by :func:`~seqviz_trackers.storage.jsonl.encode_entry`
    from ``entry``); with them the record holds the step view too, and their checksum.
    """
    known = KnownIds() if known is None else known
    seqs, bodies, vocab = [], [], {}
    listed = entry.get("sequences") or ()
    whole = isinstance(listed, list)
    for seq in listed:
        if not isinstance(seq, dict):
            whole = False
            continue
        cols = columns(seq)
        preds = seq.get("predictions")
        whole = whole and isinstance(preds, list) and len(cols) == len(preds) == len(np.unique(cols.pos))
        key = sequence_key(seq)
        bound = cols.rank_gt is not None and cols.p_lt is not None
        seqs.append({"key": [key[0], list(key[1]) if isinstance(key[1], tuple) else key[1]],
                     "text": text_checksum(seq), "n": len(cols), **({"bound": True} if bound else {})})
        bodies.extend(np.ascontiguousarray(getattr(cols, f), dtype=d).tobytes() for d, f in _ARRAYS + (_BOUND if bound else ()))
        vocab.update((str(top), string) for top, string in known.new_strings(seq, cols).items())
    body = b"".join(bodies)
    fields = {"step": entry["step"], "offset": offset, "length": length, "timestamp": entry.get("timestamp"),
              "crc": checksum(seqs, vocab, body), "seqs": seqs, "vocab": vocab}
    if whole:
        fields["whole"] = True
    view = b""
    if line is not None:
        line_crc = zlib.crc32(memoryview(line)[:length])
        view, spans = _view_section(entry, (entry["step"], length, line_crc))
        if view:
            fields.update(line_crc=line_crc, view_crc=zlib.crc32(view))
            if spans is not None:
                fields["view_seqs"] = spans
    header = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, len(header), len(body), len(view)) + header + body + view


#: The last step view made, by (step, length, CRC-32) of its line: the logger hands one line
#: to two writers (the JSONL file's and the TensorBoard mirror's); the view is made once.
_last_view: tuple[tuple[Any, int, int], tuple[bytes, list[int] | None]] | None = None
_last_lock = threading.Lock()


def _view_section(entry: dict[str, Any], key: tuple[Any, int, int]) -> tuple[bytes, list[int] | None]:
    """The step view of ``entry`` as its line reads back (zlib-compressed JSON), or b"" when
    it might not be that view: then the line is parsed instead; and where each of its
    sequences starts and ends in the JSON (``view_seqs``, see :func:`view_part`; None when
    ``sequences`` is not a list). ``key``: the line's step, length and CRC-32 (the same
    line gets the same view).

    The line is ``entry`` as JSON with the header fields first; JSON writes a tuple as a
    list, and the view reads sequences, predictions and candidate lists only as lists, so
    an entry with a tuple there gets no view; nor does one with a key that is not a string
    outside the predictions. The view's other parts go through JSON just as they went
    through it in the line: the bytes are what :func:`~seqviz_trackers.storage.jsonl.client_json`
    makes of the view of the line read back."""
    global _last_view
    with _last_lock:
        if _last_view is not None and _last_view[0] == key:
            return _last_view[1]
    view = _make_view_section(entry)
    with _last_lock:
        _last_view = (key, view)
    return view


def _make_view_section(entry: dict[str, Any]) -> tuple[bytes, list[int] | None]:
    from .jsonl import HEADER

    seqs = entry.get("sequences")
    if isinstance(seqs, tuple):
        return b"", None
    for seq in seqs if isinstance(seqs, list) else ():
        preds = seq.get("predictions") if isinstance(seq, dict) else None
        if isinstance(preds, tuple) or isinstance(preds, list) and any(
                isinstance(p, dict) and (isinstance(p.get("top_k"), tuple) or isinstance(p.get("top_20"), tuple)) for p in preds):
            return b"", None
    ordered = {key: entry[key] for key in HEADER if key in entry}
    ordered.update(entry)
    # what the view holds as it is: all but the predictions
    kept = [{k: v for k, v in seq.items() if k != "predictions"} if isinstance(seq, dict) else seq
            for seq in seqs] if isinstance(seqs, list) else seqs
    if not _str_keys([{k: v for k, v in ordered.items() if k != "sequences"}, kept]):
        return b"", None
    try:
        text, spans = view_text(step_view(ordered))
    except Exception:  # odd data the view or JSON does not take (NaN, huge numbers): the line is parsed
        return b"", None
    return zlib.compress(text, 1), spans


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def view_text(view: dict[str, Any]) -> tuple[bytes, list[int] | None]:
    """``view`` as compact JSON (the bytes ``json.dumps`` makes of it whole), and where its
    ``sequences`` are in them: ``[start of the first, end of each]`` (byte offsets; the
    items are separated by one comma), or None when ``sequences`` is not a list."""
    out, size, spans = [b"{"], 1, None
    for i, (key, value) in enumerate(view.items()):
        if i:
            out.append(b",")
            size += 1
        head = _encode(key) + b":"
        if key == "sequences" and isinstance(value, list):
            out.append(head + b"[")
            size += len(head) + 1
            spans = [size]
            for j, seq in enumerate(value):
                item = (b"," if j else b"") + _encode(seq)
                out.append(item)
                size += len(item)
                spans.append(size)
            out.append(b"]")
            size += 1
        else:
            out.append(head + _encode(value))
            size += len(out[-1])
    out.append(b"}")
    return b"".join(out), spans


def view_part(text: bytes, spans: Any, count: int) -> bytes | None:
    """The step view ``text`` (see :func:`view_text`) with only its first ``count``
    sequences, cut out of the JSON without parsing it; None when ``spans`` (a record's
    ``view_seqs``) does not fit ``text``."""
    if not (isinstance(spans, list) and len(spans) >= 1 and all(type(x) is int for x in spans)):
        return None
    ends = spans[1:]
    start, last = spans[0], (ends[-1] if ends else spans[0])
    if not (0 < start <= last < len(text) and text[start - 1:start] == b"[" and text[last:last + 1] == b"]"):
        return None
    if count >= len(ends):
        return text
    if count == 0:
        return text[:start] + text[last:]
    cut = ends[count - 1]
    return text[:cut] + text[last:] if start < cut < last and text[cut:cut + 1] == b"," else None


def _str_keys(value: Any) -> bool:
    """Whether every object in ``value`` has only str keys (JSON writes others as strings,
    which may then be the same key twice: the view as read back has one of them)."""
    if isinstance(value, dict):
        return all(type(k) is str for k in value) and _str_keys(list(value.values()))
    return all(_str_keys(v) for v in value if isinstance(v, (dict, list, tuple)))


def checksum(seqs: Any, vocab: Any, body: bytes, seqs_json: bytes | None = None) -> int:
    """The ``crc`` of a record: its sequences, its display strings and its arrays
    (``seqs_json``: ``_compact(seqs)``, when the caller has it already)."""
    covered = b"[" + (_compact(seqs) if seqs_json is None else seqs_json) + b"," + _compact(vocab) + b"]"
    return zlib.crc32(body, zlib.crc32(covered))


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


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


#: Where a record is: (header, body start, body length, step view length); the step view
#: follows the body.
_Found = tuple[dict[str, Any], int, int, int]


def _scan(f: BinaryIO, start: int, size: int) -> Iterator[_Found]:
    """Each whole record from ``start`` (see :data:`_Found`; records of the layout before,
    ``SVC2``, have no view); stops at the end, at an incomplete record, or at one that is
    not a record."""
    pos = start
    while pos + _PREFIX2.size <= size:
        f.seek(pos)
        head = f.read(_PREFIX.size)
        if head[:4] == MAGIC and len(head) == _PREFIX.size:
            _magic, hlen, blen, vlen = _PREFIX.unpack(head)
            at = pos + _PREFIX.size
        elif head[:4] == _MAGIC2:
            (_magic, hlen, blen), vlen = _PREFIX2.unpack(head[:_PREFIX2.size]), 0
            at = pos + _PREFIX2.size
        else:
            return
        end = at + hlen + blen + vlen
        if end > size:
            return
        f.seek(at)
        try:
            header = json.loads(f.read(hlen))
        except ValueError:
            return
        if not isinstance(header, dict):
            return
        yield header, at + hlen, blen, vlen
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
                for _header, body, blen, vlen in _scan(f, 0, size):
                    end = body + blen + vlen
        if end < size:
            os.ftruncate(self._fd, end)

    def append(self, entry: dict[str, Any], offset: int, length: int, line: bytes | memoryview | None = None) -> None:
        """Append the record of ``entry``, whose line starts at ``offset`` and has ``length``
        bytes (``line``: those bytes, for the step view; see :func:`encode_record`)."""
        view = memoryview(encode_record(entry, offset, length, self._known, line))
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        os.close(self._fd)


class ColumnsReader:
    """Finds the record of a JSONL line in the columns file next to it, if there is a valid one.

    Args:
        jsonl_path: the JSONL file (the columns file is this path plus :data:`SUFFIX`).
        files: how to open and stat files (see :class:`~seqviz_trackers.storage.jsonl.Files`).

    One reader may be shared by threads.
    """

    def __init__(self, jsonl_path: str, files: Any):
        self.path = jsonl_path + SUFFIX
        self.files = files
        self._lock = threading.RLock()
        self._end = 0
        self._identity: Any = None
        self._index: dict[int, _Found] = {}  # line offset -> where its record is
        self._offsets: list[int] = []  # the keys of _index, sorted
        self._sorted = True

    def _refresh(self) -> None:
        stat = self.files.stat(self.path)
        if stat is None:
            self._end, self._identity, self._index, self._offsets = 0, None, {}, []
            return
        size, identity = stat
        if identity != self._identity or size < self._end:
            self._end, self._index, self._offsets = 0, {}, []
        self._identity = identity
        if size == self._end:
            return
        with self.files.open(self.path) as f:
            for found in _scan(f, self._end, size):
                header, body, blen, vlen = found
                offset = header.get("offset")
                if isinstance(offset, int) and not isinstance(offset, bool):
                    if offset not in self._index:
                        self._sorted = self._sorted and (not self._offsets or offset > self._offsets[-1])
                        self._offsets.append(offset)
                    self._index[offset] = found
                self._end = body + blen + vlen

    def lines(self, start: int) -> list[tuple[int, int, Any, Any]]:
        """``(offset, length, step, timestamp)`` of the lines that records describe, from byte
        ``start`` of the JSONL file on, by offset (nothing when there is no usable columns file).
        What a record says is not checked here: compare it with the line before trusting it."""
        with self._lock:
            try:
                self._refresh()
            except OSError:
                return []
            if not self._sorted:
                self._offsets.sort()
                self._sorted = True
            out = []
            for offset in self._offsets[bisect.bisect_left(self._offsets, start):]:
                header = self._index[offset][0]
                length = header.get("length")
                if isinstance(length, int) and not isinstance(length, bool) and length > 0:
                    out.append((offset, length, header.get("step"), header.get("timestamp")))
            return out

    def _found(self, info: Any) -> _Found | None:
        found = self._index.get(info.offset)
        if found is None:
            return None
        header = found[0]
        return found if (header.get("step"), header.get("length"), header.get("timestamp")) == \
            (info.step, info.length, info.timestamp) else None

    def _lookup(self, info: Any) -> _Found | None:
        with self._lock:
            if info.offset not in self._index:
                try:
                    self._refresh()
                except OSError:
                    return None  # no usable columns file: the line is parsed instead
            return self._found(info)

    def get(self, info: Any) -> Record | None:
        """The record of the line ``info`` (a :class:`~seqviz_trackers.storage.jsonl.StepInfo`), or None."""
        found = self._lookup(info)
        if found is None:
            return None
        header, body, blen, _vlen = found
        try:
            with self.files.open(self.path) as f:
                f.seek(body)
                data = f.read(blen)
            good = checksum(header.get("seqs"), header.get("vocab"), data) == header.get("crc")
            return decode_record(header, data) if good else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def whole(self, info: Any) -> bool:
        """Whether the record of the line ``info`` has one row for each prediction of the
        line, sequence by sequence in the line's order, with no position twice (``whole``)."""
        found = self._lookup(info)
        return found is not None and found[0].get("whole") is True

    def view(self, info: Any) -> tuple[bytes, int, bytes, Any] | None:
        """``(the step view as JSON, the CRC-32 of the line it was made from, the view as
        stored: zlib-compressed, where its sequences are: the record's view_seqs or None)``
        from the record of the line ``info``, or None (no record, none with a view, or a
        damaged one). The view is that line's only while the line has that checksum: the
        caller compares."""
        found = self._lookup(info)
        if found is None:
            return None
        header, body, blen, vlen = found
        line_crc, view_crc = header.get("line_crc"), header.get("view_crc")
        if not vlen or not isinstance(line_crc, int) or not isinstance(view_crc, int):
            return None
        try:
            with self.files.open(self.path) as f:
                f.seek(body + blen)
                data = f.read(vlen)
            return (zlib.decompress(data), line_crc, data, header.get("view_seqs")) if zlib.crc32(data) == view_crc \
                else None
        except (OSError, zlib.error):
            return None

    def records(self, infos: list[Any]) -> Iterator[Block | Record | None]:
        """The records of the lines ``infos`` (:class:`~seqviz_trackers.storage.jsonl.StepInfo`,
        in step order), read in one pass: runs of records with the same sequences and
        contiguous positions as one :class:`Block`, others one :data:`Record` each, and None
        for a line with no valid record. The items cover ``infos`` in order."""
        with self._lock:
            if infos and any(info.offset not in self._index for info in infos):
                try:
                    self._refresh()
                except OSError:
                    pass
            found = [self._found(info) for info in infos]
        if not any(found):
            yield from (None for _ in infos)
            return
        try:
            f = self.files.open(self.path)
        except OSError:
            yield from (None for _ in infos)
            return
        with f:
            run: list[tuple[dict[str, Any], bytes]] = []
            seqs: Any = None
            seqs_json = b""
            for item in found:
                data = None
                if item is not None:
                    header, body, blen, _vlen = item
                    try:
                        if header.get("seqs") != seqs or seqs is None:
                            seqs, seqs_json = header.get("seqs"), _compact(header.get("seqs"))
                        f.seek(body)
                        data = f.read(blen)
                        if checksum(seqs, header.get("vocab"), data, seqs_json) != header.get("crc"):
                            data = None
                    except (OSError, ValueError, TypeError):
                        data = None
                if run and (data is None or header["seqs"] != run[0][0]["seqs"]):
                    yield from _decode_run(run)
                    run = []
                if data is None:
                    yield None
                else:
                    run.append((header, data))
            yield from _decode_run(run)


@dataclass
class Block:
    """Consecutive records with the same sequences (keys, texts, lengths) and positions
    ``0 .. n - 1``, as 2-D arrays: ``arrays[i][field]`` is sequence ``i``'s field (a
    :class:`~seqviz_trackers.format.entry.Columns` name) with one row per record."""

    steps: np.ndarray
    seqs: list[tuple[Hashable, int, int]]  # (key, text checksum, n) per sequence
    arrays: list[dict[str, np.ndarray]]
    vocab: list[dict[str, str]]  # per record, as in its header: display strings by top-1 id (a decimal string)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, rows: slice) -> "Block":
        return Block(self.steps[rows], self.seqs, [{k: v[rows] for k, v in a.items()} for a in self.arrays], self.vocab[rows])

    def record(self, row: int) -> Record:
        """Row ``row`` as a :data:`Record`."""
        out = []
        for (key, text, n), arrays in zip(self.seqs, self.arrays):
            index = np.arange(n)
            get = {field: arrays[field][row] for field in arrays}
            out.append((key, text, Columns(index, get["prob"], get["rank"], get["loss"], get["entropy"], get["top1"], None,
                                           index, True, get.get("rank_gt"), get.get("p_lt"))))
        return int(self.steps[row]), out, {int(k): v for k, v in self.vocab[row].items()}


def _decode_run(run: list[tuple[dict[str, Any], bytes]]) -> Iterator[Block | Record | None]:
    """Records sharing one ``seqs`` header as a :class:`Block` (or one by one where that does not fit)."""
    if not run:
        return
    try:
        header = run[0][0]
        fields, names, seqs = [], [], []
        for i, seq in enumerate(header["seqs"]):
            n = int(seq["n"])
            for dtype, field in _ARRAYS + (_BOUND if seq.get("bound") is True else ()):
                fields.append((f"{i}.{field}", dtype, (n,)))
            kind, value = seq["key"]
            seqs.append(((kind, tuple(value) if isinstance(value, list) else value), int(seq["text"]), n))
            names.append([f for _d, f in _ARRAYS + (_BOUND if seq.get("bound") is True else ())])
        dtype = np.dtype(fields)
        if any(len(data) != dtype.itemsize for _h, data in run):
            raise ValueError("record body of another length")
        table = np.frombuffer(b"".join(data for _h, data in run), dtype=dtype)
        arrays = [{field: table[f"{i}.{field}"] for field in names[i]} for i in range(len(seqs))]
        keys = [key for key, _t, _n in seqs]
        if len(set(keys)) < len(keys) or not all((a["pos"] == np.arange(n)).all() for a, (_k, _t, n) in zip(arrays, seqs)):
            raise ValueError("not a block")  # a sequence twice in a step, or gaps in positions: one by one
        yield Block(np.array([int(h["step"]) for h, _d in run], dtype=np.int64), seqs, arrays,
                    [h["vocab"] for h, _d in run])
    except (ValueError, KeyError, TypeError):
        for h, data in run:
            try:
                yield decode_record(h, data)
            except (ValueError, KeyError, TypeError):
                yield None


@dataclass
class Built:
    """What :func:`build` did: lines read, records written, lines skipped (line number,
    message), bytes of the JSONL read and of the columns file written."""

    lines: int = 0
    records: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    read_bytes: int = 0
    written_bytes: int = 0
    incomplete_tail: bool = False


class WriterActive(OSError):
    """A writer holds the JSONL file: it keeps its columns file itself."""


def build(jsonl_path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> Built:
    """Write the columns file of an existing JSONL file anew (the original tool's files, or
    files written with ``columns=False``), with a record, and its step view, for each
    complete line that parses; readers then serve step views and dynamics from it.

    The lines are read as every reader reads them (:func:`~seqviz_trackers.storage.jsonl.parse_line`),
    and the file is built beside the old one and put in its place at the end, so readers
    see the old file or the new one. ``progress(done, total)`` is called with bytes read.
    Raises :class:`WriterActive` when a :class:`~seqviz_trackers.storage.jsonl.TrainingDataWriter`
    holds the file (at the start, or again at the end).
    """
    from .jsonl import parse_line, writer_active

    path = os.fspath(jsonl_path)
    if writer_active(path, lambda: None):
        raise WriterActive(f"{path}: a writer is appending to this file and keeps its columns file itself")
    out = Built()
    tmp = f"{path}{SUFFIX}.tmp{os.getpid()}"
    known = KnownIds()
    try:
        with open(path, "rb") as f, open(tmp, "wb") as w:
            total = os.fstat(f.fileno()).st_size
            offset = 0
            for number, raw in enumerate(f, 1):
                if offset + len(raw) > total:  # appended after the start: left for the writer's next run
                    break
                if not raw.endswith(b"\n"):
                    out.incomplete_tail = True
                    break
                out.lines = number
                line = raw[:-1]
                if line.strip():
                    try:
                        entry = parse_line(line)
                    except ValueError as exc:
                        out.skipped.append((number, str(exc)))
                    else:
                        try:
                            w.write(encode_record(entry, offset, len(line), known, line))
                            out.records += 1
                        except Exception as exc:  # a step readers parse, only without a record
                            out.skipped.append((number, f"no record ({type(exc).__name__}: {exc}); read from the line"))
                offset += len(raw)
                if progress is not None:
                    progress(offset, total)
            out.read_bytes = offset
            w.flush()
            os.fsync(w.fileno())
            out.written_bytes = w.tell()
        if not writer_active(path, lambda: os.replace(tmp, path + SUFFIX)):
            return out
        raise WriterActive(f"{path}: a writer started appending to this file meanwhile and keeps its columns file "
                           "itself; nothing was replaced")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
