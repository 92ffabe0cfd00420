"""The JSONL file: one entry per line. One writer, one reader, used by every part.

Writing appends each entry as one line in a single ``write`` call, so a crash can at
worst leave an incomplete *last* line, which the next writer removes and every reader
skips. Reading indexes the byte offset of each line once and extends the index as the
file grows, so ``get_step`` is one seek and one parse, however long the run.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import stat as stat_module
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

from ..format.schema import SchemaValidationError, check_schema, find_non_finite

__all__ = [
    "TrainingDataWriter", "TrainingDataReader", "StepInfo", "Problem", "Update",
    "encode_entry", "LocalFiles",
]

log = logging.getLogger(__name__)

#: Fields written first on each line, in this order: readers index a file from them.
HEADER = ("step", "timestamp", "loss", "perplexity")
_NUM = rb"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null)"
_HEADER_RE = re.compile(rb'\{"step":(\d+),"timestamp":' + _NUM + rb',"loss":' + _NUM + rb',"perplexity":' + _NUM + rb"[,}]")
_BLOCK = 1 << 20


def encode_entry(entry: dict[str, Any], validate: bool = True) -> bytes:
    """One entry as one JSONL line (bytes, ending in a newline).

    Raises:
        SchemaValidationError: the entry breaks the schema or holds NaN/Infinity;
            the message names the JSON path of the field.
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
    return text.encode("utf-8") + b"\n"


class TrainingDataWriter:
    """Append entries to a JSONL file, one line per step.

    >>> with TrainingDataWriter("runs/a/steps.jsonl") as w:
    ...     w.write_step(entry)

    Args:
        path: the file; parent folders are created.
        validate: check each entry against the schema before writing (nothing is
            written when it fails).
        fsync: force each line to disk before ``write_step`` returns.
        columns: also keep the columns file ``<path>.cols``, a binary cache that makes
            the training-dynamics views fast to build (see
            :mod:`seqviz_trackers.storage.columns`; about 4 % of the JSONL's size).
    """

    def __init__(self, path: str | os.PathLike[str], validate: bool = True, fsync: bool = False, columns: bool = True):
        self.path = Path(path)
        self.validate = validate
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._drop_incomplete_tail()
        self._columns: Any = None
        if columns:
            try:
                from .columns import ColumnsWriter

                self._columns = ColumnsWriter(self.path, os.fstat(self._fd).st_size)
            except OSError as exc:
                log.warning("%s: no columns file (%s); dynamics views will parse the JSONL instead", self.path, exc)

    def _drop_incomplete_tail(self) -> None:
        """A writer that died mid-line left bytes with no newline: remove them."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            pos = size
            while pos > 0:
                start = max(0, pos - _BLOCK)
                f.seek(start)
                block = f.read(pos - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    pos = start + nl + 1
                    break
                pos = start
        if pos < size:
            log.warning("%s: removed an incomplete last line (%d bytes) left by an interrupted writer", self.path, size - pos)
            os.ftruncate(self._fd, pos)

    def write_step(self, entry: dict[str, Any]) -> int:
        """Validate and append one entry; returns the bytes written."""
        return self.write_line(encode_entry(entry, self.validate), entry)

    def write_line(self, line: bytes, entry: dict[str, Any] | None = None) -> int:
        """Append one line already made by :func:`encode_entry` from ``entry``
        (give the entry to keep the columns file up to date)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._fd)
        if self._columns is not None and entry is not None:
            offset = os.lseek(self._fd, 0, os.SEEK_CUR) - len(line)
            try:
                self._columns.append(entry, offset, len(line) - 1)
            except Exception as exc:  # the JSONL line is written; only the cache is lost
                log.warning("%s: columns file switched off (%s: %s); dynamics views will parse the JSONL instead",
                            self.path, type(exc).__name__, exc)
                self._columns.close()
                self._columns = None
        return len(line)

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

    Only regular files are read: a folder, FIFO or device where a run's file should be
    raises :class:`OSError` (opening a FIFO would wait for a writer forever)."""

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


def parse_line(raw: bytes) -> dict[str, Any]:
    """One line as an entry dict, or :class:`ValueError` saying what is wrong with it."""
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"not a JSON object but a {type(entry).__name__}")
    step = entry.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"field 'step' is missing or not a non-negative integer ({step!r})")
    return entry


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
    first), so a line whose header is fine but whose body is broken is found when it is
    read: it then stops being a step at once (it leaves ``steps``, :meth:`get_step` gives
    None, and it joins ``problems``). :meth:`verify` reads every line not read yet, so that
    every step listed is one that can be read; :meth:`get_summary` does that first.

    When a step number appears on several lines, the last one wins. One reader may be
    shared by threads (the index is updated under a lock).

    The original seq-viz reader's methods work too: :meth:`read_all`, :meth:`iter_steps`,
    :meth:`get_latest`, :meth:`get_step`, :meth:`get_summary` (with its keys).
    """

    def __init__(self, path: str | os.PathLike[str], files: Files | None = None):
        self.path = str(path)
        self.files: Files = files or LocalFiles()
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._offset = 0
        self._line = 0
        self._identity: Any = None
        self._edges = (b"", b"", None)  # fingerprint of what is indexed: first, last bytes, mtime_ns
        self._by_step: dict[int, StepInfo] = {}
        self._sorted: list[StepInfo] | None = None
        self._problems: dict[int, Problem] = {}
        self._verified: set[int] = set()  # lines read whole and found good
        self._demoted: list[Problem] = []  # steps found broken since the last take_demoted()

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
        if size == self._offset:
            return update
        with self.files.open(self.path) as f:
            f.seek(self._offset)
            carry = b""
            base = self._offset
            while True:
                block = f.read(_BLOCK)
                if not block:
                    break
                data = carry + block
                start = 0
                while True:
                    nl = data.find(b"\n", start)
                    if nl < 0:
                        break
                    self._index_line(data, start, nl, base + start, update)
                    start = nl + 1
                base += start
                carry = data[start:]
            self._offset = base  # an incomplete last line waits for its newline
            self._edges = (*_edges(f, base), mtime)
        return update

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

    def get_step(self, step: int) -> dict[str, Any] | None:
        """The entry logged at ``step``, or None (also when its line turns out broken:
        then it is listed in ``problems``). The file is looked at first (a ``stat``), so a
        rewritten file is read anew."""
        self.refresh()
        info = self._by_step.get(step)
        if info is None:
            return None
        try:
            return self.read(info)
        except ValueError:
            return None

    def problem_of(self, step: int) -> Problem | None:
        """Why ``step`` is not a step any more: the problem of the broken line that named it, or None."""
        with self._lock:
            return next((p for p in reversed(list(self._problems.values())) if p.step == step), None)

    def latest(self) -> dict[str, Any] | None:
        """The entry with the highest readable step, or None when there is none."""
        while True:
            steps = self.steps
            if not steps:
                return None
            try:
                return self.read(steps[-1])
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
