"""The JSONL file: one entry per line. One writer, one reader, used by every part.

Writing appends each entry as one line in a single ``write`` call, so a crash can at
worst leave an incomplete *last* line, which the next writer removes and every reader
skips. A writer holds an exclusive advisory lock (``flock``) on its file while it is
open: a second writer on the same file is an error, so no writer ever cuts a line another
is still writing; a write that fails (a full disk) is cut off again. Reading indexes the byte offset of each line once and extends the index as the
file grows, so ``get_step`` is one seek and one parse, however long the run. Where the
columns file (:mod:`~seqviz_trackers.storage.columns`) records a line, the index takes its
offset and length from there and reads only the line's first bytes (its header) and its
newline, not the whole line.
"""

from __future__ import annotations

import bisect
import errno
import json
import logging
import math
import os
import re
import stat as stat_module
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

import numpy as np

from ..format.schema import SchemaValidationError, check_schema, find_non_finite

__all__ = [
    "TrainingDataWriter", "FileInUseError", "TrainingDataReader", "StepInfo", "Problem", "Update",
    "encode_entry", "client_json", "EncodedJSON", "parse_line", "LocalFiles", "MAX_STEP",
]

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Fields written first on each line, in this order: readers index a file from them.
HEADER = ("step", "timestamp", "loss", "perplexity")
_NUM = rb"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null)"
_HEADER_RE = re.compile(rb'\{"step":(\d+),"timestamp":' + _NUM + rb',"loss":' + _NUM + rb',"perplexity":' + _NUM + rb"[,}]")
_BLOCK = 1 << 20
#: The largest step number (steps are int64 wherever they are counted, as in NumPy and SQL).
MAX_STEP = (1 << 63) - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_entry(entry: dict[str, Any], validate: bool = True) -> bytes:
    """One entry as one JSONL line (bytes, ending in a newline).

    Raises:
        SchemaValidationError: the entry breaks the schema, holds NaN/Infinity or text
            that is not Unicode (a lone surrogate); the message names the JSON path of
            the field.
    """
    if not isinstance(entry, dict):
        raise SchemaValidationError(f"an entry must be a JSON object (dict), got {type(entry).__name__}")
    if validate:
        check_schema(entry)
    ordered = {key: entry[key] for key in HEADER if key in entry}
    ordered.update(entry)
    try:
        text = json.dumps(ordered, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise SchemaValidationError("is NaN or infinite; JSON cannot hold it", find_non_finite(entry) or "$") from None
    except TypeError as exc:
        raise SchemaValidationError(f"cannot be written as JSON ({exc})") from None
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (say, from a file name read with surrogateescape)
        found: list[str] = []
        _replace_lone_surrogates(entry, "$", found)
        raise SchemaValidationError("holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text and "
                                    "cannot be written as UTF-8", found[0] if found else "$") from None


class EncodedJSON(bytes):
    """JSON that is already what :func:`client_json` makes of its value (a step view read
    from the columns file): :func:`client_json` returns it as it is. ``deflated``: the same
    bytes zlib-compressed (HTTP's ``deflate`` coding) when they were read so, else None."""

    deflated: bytes | None = None


def client_json(value: Any) -> bytes:
    """``value`` as the JSON a client (a browser) gets: strict JSON, in UTF-8, whatever it
    holds. Non-finite numbers (NaN, Infinity: a step read from a file written with Python's
    ``json.dumps`` defaults) become ``null``, which the dashboard shows as unknown, and a
    lone surrogate (text that is not Unicode, say from a file name) becomes U+FFFD. Every
    back end encodes what it sends to a dashboard here.

    Raises:
        TypeError: ``value`` holds something JSON has no form for.
    """
    if isinstance(value, EncodedJSON):
        return bytes(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def _finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class FileInUseError(OSError):
    """Another :class:`TrainingDataWriter` (in this process or another) is writing the file."""


class TrainingDataWriter:
    """Append entries to a JSONL file, one line per step.

    >>> with TrainingDataWriter("runs/a/steps.jsonl") as w:
    ...     w.write_step(entry)

    One writer per file: the writer holds an advisory lock (``fcntl.flock``) on the file
    until :meth:`close`, and opening a second one on it (from any process) raises
    :class:`FileInUseError`. Only the lock holder removes an incomplete last line; on a
    file system without locks, that line is kept and the first new line starts on a line
    of its own.

    Args:
        path: the file; parent folders are created.
        validate: check each entry against the schema before writing (nothing is
            written when it fails).
        fsync: force each line to disk before ``write_step`` returns.
        columns: also keep the columns file ``<path>.cols``, a binary cache that makes
            the training-dynamics views fast to build and holds each step's view (see
            :mod:`seqviz_trackers.storage.columns`; about 9 % of the JSONL's size, 4 %
            of it the dynamics' numbers).
    """

    def __init__(self, path: str | os.PathLike[str], validate: bool = True, fsync: bool = False, columns: bool = True):
        self.path = Path(path)
        self.validate = validate
        self.fsync = fsync
        self._columns: Any = None
        self._unusable: str | None = None  # why writing stopped: a failed write could not be undone
        self._newline_first = False  # an incomplete tail left in place must not be glued to
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self._lock():
                self._drop_incomplete_tail()
            else:
                self._newline_first = self._tail_start() < os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        if columns:
            try:
                from .columns import ColumnsWriter

                self._columns = ColumnsWriter(self.path, os.fstat(self._fd).st_size)
            except OSError as exc:
                log.warning("%s: no columns file (%s); dynamics views will parse the JSONL instead", self.path, exc)

    def _lock(self) -> bool:
        """Hold an exclusive advisory lock (``flock``) on the file while this writer is open:
        True when held. Raises :class:`FileInUseError` when another writer holds it."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileInUseError(
                f"{self.path}: another writer is appending to this file (another process, or another "
                "TrainingDataWriter or SeqVizLogger in this one that was not closed); two writers on one file "
                "would mix two runs and cut each other's lines: stop or close the other one, or write to "
                "another file") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("%s: cannot lock the file (%s): a second writer on it would go unnoticed, and an "
                        "incomplete last line is kept (it may be another writer's)", self.path, exc)
            return False
        return True

    def _tail_start(self) -> int:
        """Where the file's incomplete last line starts (its size when there is none)."""
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            pos = size
            while pos > 0:
                start = max(0, pos - _BLOCK)
                f.seek(start)
                block = f.read(pos - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    return start + nl + 1
                pos = start
        return 0

    def _drop_incomplete_tail(self) -> None:
        """A writer that died mid-line left bytes with no newline: remove them (only ever
        called holding the lock, so no live writer's line is cut)."""
        size = os.fstat(self._fd).st_size
        pos = self._tail_start() if size else 0
        if pos < size:
            log.warning("%s: removed an incomplete last line (%d bytes) left by an interrupted writer", self.path, size - pos)
            os.ftruncate(self._fd, pos)

    def write_step(self, entry: dict[str, Any]) -> int:
        """Validate and append one entry; returns the bytes written."""
        return self.write_line(encode_entry(entry, self.validate), entry)

    def write_line(self, line: bytes, entry: dict[str, Any] | None = None) -> int:
        """Append one line already made by :func:`encode_entry` from ``entry``
        (give the entry to keep the columns file up to date).

        A write that fails (a full disk: ``OSError``) or is interrupted leaves the file as
        it was before it: the bytes written are cut off again, so a retry writes a whole
        line. If even that fails, the writer refuses every later write (``OSError``)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        if self._unusable is not None:
            raise OSError(f"{self.path}: {self._unusable}")
        if self._newline_first:
            line = b"\n" + line
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except BaseException:
            self._undo(start)
            raise
        if self._newline_first:
            self._newline_first = False
            start, line = start + 1, line[1:]
        if self._columns is not None and entry is not None:
            try:
                self._columns.append(entry, start, len(line) - 1, line)
            except Exception as exc:  # the JSONL line is written; only the cache is lost
                log.warning("%s: columns file switched off (%s: %s); dynamics views will parse the JSONL instead",
                            self.path, type(exc).__name__, exc)
                self._columns.close()
                self._columns = None
        return len(line)

    def _undo(self, size: int) -> None:
        """Cut the file back to ``size`` after a failed write."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            self._unusable = (f"a failed write left an incomplete last line that could not be removed ({exc}); "
                              "this writer writes no more (a new writer removes that line)")
            log.error("%s: %s", self.path, self._unusable)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._columns is not None:
            self._columns.close()
            self._columns = None

    def __enter__(self) -> "TrainingDataWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def writer_active(path: str | os.PathLike[str], then: Any) -> bool:
    """True when a :class:`TrainingDataWriter` holds ``path``'s lock; else calls ``then()``
    holding the lock itself (so no writer starts meanwhile) and returns False."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                pass  # a file system without locks: no writer can be seen
        then()
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StepInfo:
    """Where one step lives in the file, and its header numbers."""

    step: int
    line: int
    offset: int
    length: int
    loss: float | None = None
    perplexity: float | None = None
    timestamp: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "perplexity": self.perplexity, "timestamp": self.timestamp}


@dataclass(frozen=True)
class Problem:
    """A line that was skipped, and why (line numbers start at 1). ``step`` is the step
    its header named when the line was indexed as that step and then found broken."""

    line: int
    message: str
    step: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "message": self.message}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class Update:
    """What :meth:`TrainingDataReader.refresh` found since the last call."""

    new: list[StepInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    reset: bool = False  # the file was truncated or replaced, and is read anew


class Files(Protocol):
    def open(self, path: str) -> BinaryIO: ...
    def stat(self, path: str) -> tuple[int, Any] | None: ...


#: Bytes compared at each end of the indexed part of a file to notice a rewrite in place.
_EDGE = 64
#: A modification time this recent (ns) may hide a rewrite (timestamps are coarse).
_RECENT_NS = 2_000_000_000


def _edges(f: BinaryIO, end: int) -> tuple[bytes, bytes]:
    """The first and last :data:`_EDGE` bytes of ``f`` before ``end``."""
    f.seek(0)
    head = f.read(min(_EDGE, end))
    f.seek(max(0, end - _EDGE))
    return head, f.read(end - max(0, end - _EDGE))


class LocalFiles:
    """The local file system: ``stat`` gives (size, identity) or None when missing.
    Small reads are cheap (``small_reads``): a reader may locate lines from the columns
    file and read only their first bytes.

    Only regular files are read: a folder, FIFO or device where a run's file should be
    raises :class:`OSError` (opening a FIFO would wait for a writer forever)."""

    small_reads = True

    def open(self, path: str) -> BinaryIO:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            _regular(os.fstat(fd).st_mode, path)
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def stat(self, path: str) -> tuple[int, Any] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        _regular(st.st_mode, path)
        return st.st_size, (st.st_dev, st.st_ino)

    def mtime_ns(self, path: str) -> int | None:
        """The modification time, for the fingerprint that notices a rewrite in place."""
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None


def _regular(mode: int, path: str) -> None:
    if not stat_module.S_ISREG(mode):
        kind = "a folder" if stat_module.S_ISDIR(mode) else "not a regular file"
        raise OSError(errno.EINVAL, kind, path)


def _number(raw: bytes) -> float | None:
    return None if raw == b"null" else float(raw)


def parse_line(raw: bytes, notes: list[str] | None = None) -> dict[str, Any]:
    """One line as an entry dict, or :class:`ValueError` saying what is wrong with it.

    THE decoding of a line, for every reader. Text that is not Unicode, a lone surrogate
    escape such as ``"\\ud800"`` (valid JSON, written by some tools), is read as U+FFFD;
    ``notes`` (when given) gets one message saying where (``seqviz validate`` reports it as
    a warning). NaN and Infinity are read as Python floats (``json.loads`` accepts them);
    consumers treat them as unknown and :func:`client_json` sends them as null.
    """
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"not a JSON object but a {type(entry).__name__}")
    step = entry.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"field 'step' is missing or not a non-negative integer ({step!r})")
    if step > MAX_STEP:
        raise ValueError(_too_big(step))
    if b"\\ud" in raw or b"\\uD" in raw:  # a surrogate escape: a valid pair is one character already
        found: list[str] = []
        entry = _replace_lone_surrogates(entry, "$", found)
        if found and notes is not None:
            notes.append(f"{found[0]}: holds a lone surrogate escape (\\ud800-\\udfff), which is not Unicode text; "
                         f"read as U+FFFD{f' (and {len(found) - 1} more)' if len(found) > 1 else ''}")
    return entry


#: What starts a prediction object (its first key, as the converter writes it) in a line.
_PREDICTION_START = re.compile(rb'\{"position":')


def _too_big(step: int) -> str:
    return f"field 'step' is {step}, past the largest step number 2**63 - 1"


def _replace_lone_surrogates(value: Any, path: str, found: list[str]) -> Any:
    """``value`` with each lone surrogate in its text (keys too) replaced by U+FFFD; the
    JSON path of each string changed is added to ``found``."""
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            found.append(path)
            return _LONE_SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            fixed = _replace_lone_surrogates(key, f"{path} (a key)", found)
            out[fixed] = _replace_lone_surrogates(item, f"{path}.{fixed}", found)
        return out
    if isinstance(value, list):
        return [_replace_lone_surrogates(item, f"{path}[{i}]", found) for i, item in enumerate(value)]
    return value


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


class TrainingDataReader:
    """Read a JSONL file of entries, tolerating what a live or damaged file holds.

    - ``for entry in reader`` streams entries without loading the file;
    - ``refresh()`` indexes lines appended since the last call (and starts over if the
      file was truncated or replaced); ``steps`` and ``get_step`` call it for you;
    - an incomplete last line (a writer mid-append) is left for later; a malformed
      line is skipped and reported in ``problems`` with its line number.

    Indexing reads only each line's header (the fields :class:`TrainingDataWriter` writes
    first) and finds its end (from the columns file where that locates the line, on local
    files), so a line whose header is fine but whose body is broken is found when it is
    read: it then stops being a step at once (it leaves ``steps``, :meth:`get_step` gives
    None, and it joins ``problems``). :meth:`verify` reads every line not read yet, so that
    every step listed is one that can be read; :meth:`get_summary` does that first.

    When a step number appears on several lines, the last one wins. One reader may be
    shared by threads (the index is updated under a lock).

    The original seq-viz reader's methods work too: :meth:`read_all`, :meth:`iter_steps`,
    :meth:`get_latest`, :meth:`get_step`, :meth:`get_summary` (with its keys).
    """

    def __init__(self, path: str | os.PathLike[str], files: Files | None = None, columns: Any = None):
        self.path = str(path)
        self.files: Files = files or LocalFiles()
        self._lock = threading.RLock()
        from .columns import ColumnsReader

        #: the columns file beside this one (its records locate lines, and feed the dynamics
        #: views); ``columns`` shares another reader's of the same file (it is read once)
        self.columns = columns if columns is not None else ColumnsReader(self.path, self.files)
        self._starts: list[tuple[StepInfo, Any]] = []  # see _prediction_starts
        self._last_view: tuple[StepInfo, Any] | None = None  # see _stored_view
        self._clear()

    def _clear(self) -> None:
        self._offset = 0  # where the next line starts: the end of the last complete line
        self._scanned = 0  # how far the file has been read (past _offset: no newline there)
        self._line = 0
        self._identity: Any = None
        self._edges = (b"", b"", None)  # fingerprint of what is indexed: first, last bytes, mtime_ns
        self._by_step: dict[int, StepInfo] = {}
        self._sorted: list[StepInfo] | None = None
        self._problems: dict[int, Problem] = {}
        self._verified: set[int] = set()  # lines read whole and found good
        self._demoted: list[Problem] = []  # steps found broken since the last take_demoted()
        # what ``version`` says: a new token per start over, a count of changes other than new steps
        self._token = os.urandom(4).hex()
        self._changes = 0

    # -- index -----------------------------------------------------------------
    def refresh(self) -> Update:
        """Index what was appended since the last call."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> Update:
        update = Update()
        stat = self.files.stat(self.path)
        if stat is None:
            if self._offset or self._by_step:
                self._clear()
                update.reset = True
            return update
        size, identity = stat
        mtime = self._mtime()
        if self._identity is not None and (identity != self._identity or size < self._offset
                                           or self._rewritten(size, mtime)):
            self._clear()
            update.reset = True
        self._identity = identity
        if self._scanned > size:  # the incomplete last line was cut back: look at it again
            self._scanned = self._offset
        if size <= max(self._offset, self._scanned):
            return update
        with self.files.open(self.path) as f:
            if self._scanned <= self._offset and getattr(self.files, "small_reads", False):
                self._index_from_columns(f, size, update)
                self._scanned = self._offset
            # Bytes from self._offset (the start of an incomplete last line) to self._scanned
            # hold no newline: only what came after them is read, so a huge fragment costs
            # its bytes once, not once per poll. An incomplete last line waits for its newline.
            self._scanned = self._index_span(f, size, update, max(self._offset, self._scanned))
            self._edges = (*_edges(f, self._offset), mtime)
        return update

    def _index_from_columns(self, f: BinaryIO, size: int, update: Update) -> None:
        """Index the lines that the columns file's records locate, from ``self._offset`` on,
        reading only the start and the end of each line (not its whole bytes). A record is
        used only when its line starts where the last one ended, holds the header the record
        names (step, timestamp) and ends in a newline where the record says; lines between
        records (written without one) are read as usual. It stops at the first record that
        does not fit; the rest of the file is then read as usual."""
        for offset, length, step, timestamp in self.columns.lines(self._offset):
            end = offset + length
            if end >= size:
                return
            if offset > self._offset:
                self._index_span(f, offset, update)
                if self._offset != offset:
                    return
            f.seek(offset)
            head = f.read(min(length, 256))
            f.seek(end)
            m = _HEADER_RE.match(head)
            if (f.read(1) != b"\n" or not m or b"\n" in head or int(m[1]) != step or int(m[1]) > MAX_STEP
                    or _number(m[2]) != timestamp):
                return
            self._line += 1
            self._add_info(StepInfo(step, self._line, offset, length, _number(m[3]), _number(m[4]), _number(m[2])), update)
            self._offset = end + 1

    def _index_span(self, f: BinaryIO, stop: int, update: Update, pos: int | None = None) -> int:
        """Index the complete lines from ``self._offset`` up to byte ``stop``, block by block,
        reading from ``pos`` on (default ``self._offset``; the bytes before it hold no
        newline). Returns how far it read."""
        pos = self._offset if pos is None else pos
        while pos < stop:
            f.seek(pos)
            block = f.read(min(_BLOCK, stop - pos))
            if not block:
                break
            nl = block.rfind(b"\n")
            if nl < 0:
                pos += len(block)
                continue
            end = pos + nl + 1
            if pos == self._offset:
                data = block[:nl + 1]
            else:  # a line began in an earlier block: its bytes are read now, once
                f.seek(self._offset)
                data = f.read(end - self._offset)
            self._index_lines(data, self._offset, update)
            self._offset = pos = end
        return pos

    def _index_lines(self, data: bytes, base: int, update: Update) -> None:
        """Index the complete lines of ``data`` (those ending in a newline), found at ``base``."""
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                return
            self._index_line(data, start, nl, base + start, update)
            start = nl + 1

    def _mtime(self) -> int | None:
        mtime = getattr(self.files, "mtime_ns", None)
        return mtime(self.path) if mtime is not None else None

    def _rewritten(self, size: int, mtime: int | None) -> bool:
        """Whether the indexed bytes were changed in place (same file, not shorter): their
        first and last bytes are compared when the modification time moved (or is too
        recent to tell, or the file grew). File systems with no modification time
        (``mtime_ns``) notice only a shorter or replaced file."""
        head, tail, seen = self._edges
        if not self._offset or mtime is None:
            return False
        if size == self._offset and mtime == seen and time.time_ns() - mtime > _RECENT_NS:
            return False
        with self.files.open(self.path) as f:
            changed = _edges(f, self._offset) != (head, tail)
        if not changed:
            self._edges = (head, tail, mtime)
        return changed

    def _index_line(self, data: bytes, start: int, end: int, offset: int, update: Update) -> None:
        self._line += 1
        if start == end or data[start:end].isspace():
            return
        m = _HEADER_RE.match(data, start, min(end, start + 256))
        if m and int(m[1]) > MAX_STEP:
            m = None  # parsed whole below, and refused there
        if m:
            info = StepInfo(int(m[1]), self._line, offset, end - start, _number(m[3]), _number(m[4]), _number(m[2]))
        else:
            try:
                entry = parse_line(data[start:end])
            except ValueError as exc:
                problem = Problem(self._line, str(exc))
                self._problems[self._line] = problem
                update.problems.append(problem)
                return
            info = StepInfo(entry["step"], self._line, offset, end - start, finite_number(entry.get("loss")),
                            finite_number(entry.get("perplexity")), finite_number(entry.get("timestamp")))
            self._verified.add(self._line)
        self._add_info(info, update)

    def _add_info(self, info: StepInfo, update: Update) -> None:
        if info.step in self._by_step:
            self._changes += 1  # a step logged again: its earlier line no longer counts
        self._by_step[info.step] = info
        self._sorted = None
        update.new.append(info)

    @property
    def steps(self) -> list[StepInfo]:
        """Every indexed step, sorted by step number (refreshes first)."""
        with self._lock:
            self._refresh()
            return self.indexed()

    def indexed(self) -> list[StepInfo]:
        """The steps indexed so far, sorted by step number, without looking at the file
        (:meth:`refresh` decides when appended lines are read)."""
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._by_step.values(), key=lambda s: s.step)
            return self._sorted

    @property
    def version(self) -> str:
        """Changes whenever the step list changed other than by new steps being indexed: the
        file was read anew (truncated or replaced), a step was logged again, or a step's line
        turned out broken. While it stays the same, the steps seen earlier are still the steps,
        and only what was indexed since has to be asked for (the ``steps?after=`` route)."""
        with self._lock:
            return f"{self._token}.{self._changes}"

    def indexed_after(self, step: int | None) -> tuple[list[StepInfo], int, str]:
        """``(steps, num_steps, version)``, taken together, without looking at the file:
        the indexed steps numbered above ``step`` (all of them when None), sorted, found by a
        binary search; how many steps are indexed in all; and :attr:`version`."""
        with self._lock:
            steps = self.indexed()
            if step is not None:
                steps = steps[bisect.bisect_right(steps, step, key=lambda s: s.step):]
            return steps, len(self._by_step), self.version

    @property
    def problems(self) -> list[Problem]:
        """Lines skipped so far, by line number."""
        with self._lock:
            return [self._problems[k] for k in sorted(self._problems)]

    def read(self, info: StepInfo) -> dict[str, Any]:
        """The entry at ``info``. Raises ValueError (naming the file and line) when that line
        is broken; the step is then dropped from the index and the line joins ``problems``."""
        with self.files.open(self.path) as f:
            f.seek(info.offset)
            raw = f.read(info.length)
        try:
            entry = parse_line(raw)
            if entry["step"] != info.step:
                raise ValueError(f"its header says step {info.step} but its body step {entry['step']}")
        except ValueError as exc:
            self.demote(info, str(exc))
            raise ValueError(f"{self.path}:{info.line}: {exc}") from None
        with self._lock:
            self._verified.add(info.line)
        return entry

    def demote(self, info: StepInfo, message: str) -> Problem:
        """Record that the line of ``info`` is broken: it is no longer a step, and is listed in ``problems``."""
        problem = Problem(info.line, message, info.step)
        with self._lock:
            if self._by_step.get(info.step) is info:
                del self._by_step[info.step]
                self._sorted = None
                self._changes += 1
            if info.line not in self._problems:
                self._demoted.append(problem)
            self._problems[info.line] = problem
        return problem

    def take_demoted(self) -> list[Problem]:
        """The lines that stopped being steps since the last call (found broken on read)."""
        with self._lock:
            out, self._demoted = self._demoted, []
            return out

    def demote_line(self, problem: Problem) -> bool:
        """Take a broken line found by another reader of the same file: True when it was
        one of this reader's steps (and is not any more)."""
        with self._lock:
            info = self._by_step.get(problem.step) if problem.step is not None else None
            if info is None or info.line != problem.line:
                self._problems.setdefault(problem.line, problem)
                return False
            self.demote(info, problem.message)
            return True

    def _broken_line(self, line: int, message: str) -> None:
        """Line ``line`` (read whole) is broken: demote it if it is indexed as a step."""
        with self._lock:
            info = next((i for i in self._by_step.values() if i.line == line), None)
            if info is not None:
                self.demote(info, message)
            else:
                self._problems[line] = Problem(line, message)

    def verify(self) -> list[Problem]:
        """Read every indexed line not read yet (refreshing first), so that every step listed
        can be read; returns the lines found broken now (dropped from the index)."""
        found = []
        for info in self.steps:
            if info.line not in self._verified:
                try:
                    self.read(info)
                except ValueError:
                    found.append(self._problems[info.line])
                except OSError:
                    break  # the file went away; the next call tries again
        return found

    def read_view(self, info: StepInfo, encoded: bool = False, stored_only: bool = False) -> Any:
        """The step view (:func:`~seqviz_trackers.format.view.step_view`) of the entry at
        ``info``: from its columns record when that holds the view and the line is the one
        the record was made from (the same CRC-32), without parsing the line; else from the
        parsed line (``stored_only``: None instead). ``encoded``: as :class:`EncodedJSON` (what
        :func:`client_json` makes of the view), which the record holds as it is. Raises
        ValueError as :meth:`read` does."""
        found = self._stored_view(info)
        if found is not None:
            view, deflated, _spans = found
            if encoded:
                out = EncodedJSON(view)
                out.deflated = deflated
                return out
            try:
                return json.loads(view)
            except ValueError:
                pass
        if stored_only:
            return None
        from ..format.view import step_view

        out = step_view(self.read(info))
        return EncodedJSON(client_json(out)) if encoded else out

    def _stored_view(self, info: StepInfo) -> tuple[bytes, bytes, Any] | None:
        """(the step view as JSON, as stored, where its sequences are) from the line's
        columns record, when it has one and the line has the checksum it was made from;
        kept for the last line asked about (its first sequences, then the whole view)."""
        last = self._last_view
        if last is not None and last[0] is info:
            return last[1]
        found = self.columns.view(info)
        if found is None:
            return None
        view, line_crc, deflated, spans = found
        with self.files.open(self.path) as f:
            f.seek(info.offset)
            raw = f.read(info.length)
        if len(raw) != info.length or zlib.crc32(raw) != line_crc:
            return None
        self._last_view = (info, (view, deflated, spans))
        return self._last_view[1]

    #: :meth:`read_view_part` cuts no stored view shorter than this (the whole arrives about
    #: as soon as a part would).
    PART_MIN_BYTES = 1 << 20

    def read_view_part(self, info: StepInfo, count: int) -> EncodedJSON:
        """What a dashboard draws first of a large step, while its whole view (:meth:`read_view`)
        is on its way (encoded): ``{"of": N, "view"}``, the view of only the first ``count``
        of the step's N sequences, cut out of the view the columns record holds where the
        record says where its sequences are in it (``view_seqs``) and the view has
        :data:`PART_MIN_BYTES` or more; else ``{"of": null, "view": null}`` (a small view, one
        only the line holds, ``count`` covering all of it). Never parses the line."""
        from .columns import view_part

        found = self._stored_view(info)
        part = view_part(found[0], found[2], count) if found is not None and len(found[0]) >= self.PART_MIN_BYTES \
            else None
        if part is None or len(part) == len(found[0]):
            return EncodedJSON(b'{"of":null,"view":null}')
        return EncodedJSON(b'{"of":%d,"view":' % (len(found[2]) - 1) + part + b"}")

    def prediction_at(self, info: StepInfo, seq: int, pos: int) -> dict[str, Any] | None:
        """The logged prediction at position ``pos`` of sequence ``seq`` (its place in the
        entry) of the line ``info``, parsed alone; None when it cannot be read so (the caller
        parses the line), LookupError when the record shows that there is none. Where the
        columns record says the line's prediction objects are its rows, in order (``whole``),
        the line is searched once for where each object starts (``{"position":`` starts an
        object wherever it stands in valid JSON); the object read must then have the row's
        position, first candidate and target probability."""
        try:
            found = self._prediction_starts(info)
            if found is None:
                return None
            return self._prediction(info, found, seq, pos)
        except OSError:
            return None  # (the line is read the usual way, which says what went wrong)

    def _prediction(self, info: StepInfo, found: tuple[Any, np.ndarray, np.ndarray], seq: int,
                    pos: int) -> dict[str, Any] | None:
        from ..format.entry import facts

        record, starts, bases = found
        seqs = record[1]
        if not 0 <= seq < len(seqs):
            raise LookupError(f"no sequence {seq}")
        cols = seqs[seq][2]
        rows = np.flatnonzero(cols.pos == pos)
        if not len(rows):
            raise LookupError(f"no prediction at position {pos} of sequence {seq}")
        row = int(rows[0])
        k = int(bases[seq]) + row
        start = int(starts[k])
        end = int(starts[k + 1]) if k + 1 < len(starts) else info.length
        with self.files.open(self.path) as f:
            f.seek(info.offset + start)
            raw = f.read(end - start)
        try:
            pred, _end = json.JSONDecoder().raw_decode(raw.decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(pred, dict) or pred.get("position") != pos:
            return None
        if b"\\ud" in raw or b"\\uD" in raw:
            pred = _replace_lone_surrogates(pred, "$", [])
        f = facts(pred)
        same_top = (f.top[0][0] if f.top else -1) == int(cols.top1[row])
        prob = float(cols.prob[row])
        same_prob = (f.prob is None if math.isnan(prob)
                     else f.prob is not None and abs(f.prob - prob) <= 1e-6 * (1 + prob))  # (float32 in the record)
        return pred if same_top and same_prob else None

    def _prediction_starts(self, info: StepInfo) -> tuple[Any, np.ndarray, np.ndarray] | None:
        """(the record, where each prediction object of the line starts, the first row of
        each sequence) for ``info``; kept for the last two lines asked about."""
        with self._lock:
            for cached_info, value in self._starts:
                if cached_info is info:
                    return value
        if not self.columns.whole(info):
            return None
        record = self.columns.get(info)
        if record is None:
            return None
        with self.files.open(self.path) as f:
            f.seek(info.offset)
            raw = f.read(info.length)
        starts = np.fromiter((m.start() for m in _PREDICTION_START.finditer(raw)), dtype=np.int64)
        sizes = [len(cols) for _key, _text, cols in record[1]]
        if len(raw) != info.length or len(starts) != sum(sizes):
            return None
        value = (record, starts, np.cumsum([0] + sizes))
        with self._lock:
            self._starts = [(info, value)] + self._starts[:1]
        return value

    def get_view(self, step: int, encoded: bool = False, seqs: int | None = None) -> Any:
        """:meth:`get_step`, as its step view (see :meth:`read_view`; ``seqs``: its first
        ``seqs`` sequences, see :meth:`read_view_part`)."""
        info = self.step_info(step)
        if info is None:
            return None
        try:
            return self.read_view(info, encoded) if seqs is None else self.read_view_part(info, seqs)
        except ValueError:
            return None

    def get_step(self, step: int) -> dict[str, Any] | None:
        """The entry logged at ``step``, or None (also when its line turns out broken:
        then it is listed in ``problems``). The file is looked at first (a ``stat``), so a
        rewritten file is read anew."""
        info = self.step_info(step)
        if info is None:
            return None
        try:
            return self.read(info)
        except ValueError:
            return None

    def step_info(self, step: int) -> StepInfo | None:
        """Where ``step`` is in the file now (after a look at the file, as :meth:`get_step`),
        or None. The same object while its line stays where it is: a key for caches."""
        self.refresh()
        return self._by_step.get(step)

    def problem_of(self, step: int) -> Problem | None:
        """Why ``step`` is not a step any more: the problem of the broken line that named it, or None."""
        with self._lock:
            return next((p for p in reversed(list(self._problems.values())) if p.step == step), None)

    def latest(self, refresh: bool = True, view: bool = False, encoded: bool = False) -> Any:
        """The entry with the highest readable step, or None when there is none.
        ``refresh=False``: among the steps indexed so far (for a caller that reports what
        each :meth:`refresh` found, and must not have lines indexed behind its back).
        ``view``: its step view (see :meth:`read_view`; ``encoded``: as :class:`EncodedJSON`)."""
        while True:
            steps = self.steps if refresh else self.indexed()
            if not steps:
                return None
            try:
                return self.read_view(steps[-1], encoded) if view else self.read(steps[-1])
            except ValueError:
                continue  # that line is broken and was dropped: the one before is the latest

    get_latest = latest

    def read_all(self) -> list[dict[str, Any]]:
        """Every good entry in file order (bad lines are skipped and listed in ``problems``)."""
        return list(self)

    def iter_steps(self) -> Iterator[dict[str, Any]]:
        """Every good entry in file order, streamed (the original reader's name for ``iter(reader)``)."""
        return iter(self)

    # -- streaming -------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every good entry in file order; bad lines are skipped and recorded in ``problems``."""
        if self.files.stat(self.path) is None:
            raise FileNotFoundError(f"{self.path}: no such file")
        with self.files.open(self.path) as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    self._problems[number] = Problem(number, "incomplete last line (no newline yet: a writer may be mid-append)")
                    break
                if raw.isspace():
                    continue
                try:
                    entry = parse_line(raw)
                except ValueError as exc:
                    self._broken_line(number, str(exc))
                    continue
                with self._lock:
                    self._verified.add(number)
                yield entry

    # -- as a table ------------------------------------------------------------
    def to_arrow(self, top_k: bool = True) -> Any:
        """Every logged prediction as a ``pyarrow.Table``, one row per (step, sequence,
        position); the columns are listed in :mod:`seqviz_trackers.storage.arrow`.
        ``top_k=False`` leaves out the candidate lists (and reads the columns file where it
        can, which is much faster). Needs pyarrow (the ``analysis`` extra)."""
        from .arrow import token_table

        return token_table(self, top_k=top_k)

    def to_pandas(self, top_k: bool = True) -> Any:
        """:meth:`to_arrow` as a ``pandas.DataFrame`` (strings as categoricals); needs pandas too."""
        from .arrow import token_dataframe

        return token_dataframe(self, top_k=top_k)

    def vocab_table(self) -> Any:
        """The display string of every candidate id (the ``top_k`` column holds ids) as a
        ``pyarrow.Table`` of ``id`` and ``token``; ``.to_pandas()`` for pandas. Needs pyarrow."""
        from .arrow import vocab_table

        return vocab_table(self)

    def get_summary(self) -> dict[str, Any]:
        """Counts, loss and perplexity figures over the steps, after :meth:`verify` (so a
        broken line is never counted). Beside our keys it carries the original reader's:
        ``total_steps``, ``avg_loss``, ``min_loss``, ``max_loss``, ``avg_perplexity``,
        ``min_perplexity``, ``max_perplexity`` (None where no step logs the figure)."""
        self.verify()
        steps = self.indexed()
        losses = [(s.loss, s.step) for s in steps if s.loss is not None]
        ppl = [s.perplexity for s in steps if s.perplexity is not None]
        min_loss, min_loss_step = min(losses) if losses else (None, None)
        return {
            "path": self.path,
            "num_steps": len(steps),
            "total_steps": len(steps),
            "first_step": steps[0].step if steps else None,
            "last_step": steps[-1].step if steps else None,
            "avg_loss": sum(l for l, _ in losses) / len(losses) if losses else None,
            "min_loss": min_loss,
            "min_loss_step": min_loss_step,
            "max_loss": max(l for l, _ in losses) if losses else None,
            "last_loss": steps[-1].loss if steps else None,
            "avg_perplexity": sum(ppl) / len(ppl) if ppl else None,
            "min_perplexity": min(ppl) if ppl else None,
            "max_perplexity": max(ppl) if ppl else None,
            "skipped_lines": len(self._problems),
        }
