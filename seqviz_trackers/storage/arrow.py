"""The logged predictions as one table: a row per (step, sequence, position), in Arrow and Parquet.

``seqviz export FILE --format parquet`` writes it; ``TrainingDataReader(...).to_arrow()``
and ``.to_pandas()`` return it. Columns (see :func:`token_schema`):

==============  ========================  ===============================================
step            int64                     the logged step
sequence        int32                     index of the sequence in that step's entry
name            string (dictionary)       the sequence's ``name``, or null
position        int32                     the prediction is made at ``tokens[position]``
token           string (dictionary)       ``tokens[position]``
token_id        int32                     ``token_ids[position]`` (null when not logged)
target          string (dictionary)       the true next token
target_id       int32                     its id
target_prob     float32                   p(target)
target_rank     int32                     1-based rank of the target (null when unknown)
loss            float32                   -log p(target)
entropy         float32                   entropy of the prediction, in nats
top1_id         int32                     the most likely token
top1            string (dictionary)       its display string
correct         bool                      the target ranked first (null when its rank is unknown)
top_k           list<struct<id: int32,    the logged candidates, most likely first; their
                prob: float32>>           display strings are in the vocabulary table
==============  ========================  ===============================================

The vocabulary (:func:`vocab_table`, ``TrainingDataReader.vocab_table()``; written beside
the Parquet file as ``<name>.vocab.parquet``) maps each candidate ``id`` (int32) to its
display string ``token``: join on ``id`` to see the candidates as text. Keeping the
strings out of the rows makes the file about a quarter smaller. Ids that do not fit an
int32 (no real vocabulary has them) are null.

Unknown values (old files without ``target_prob`` or ``target_rank`` whose target is not
among the candidates) are null. The numbers come from the shared readers of
:mod:`seqviz_trackers.format.entry` (``columns``, ``targets``, ``candidate_lists``), so every view
of a file agrees. Without the ``top_k`` column (``top_k=False``) the table is built from
the columns file beside the JSONL (``<file>.cols``) where it matches its lines, parsing
only the lines that introduce a new text; the JSONL is parsed otherwise.

Parquet files are zstd-compressed and hold one row group per range of whole steps (about
:data:`ROWS_PER_GROUP` rows), so a reader filtering on ``step`` skips the others. Strings,
small integers and the candidates' probabilities (few distinct values: the converter
rounds them to 4 significant digits) are dictionary-encoded; the other floats and the
candidate ids are split into byte streams. Needs ``pyarrow`` (the ``analysis`` extra).
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Iterator

import numpy as np

from ..format.entry import Columns, KnownIds, candidate_lists, columns, sequence_key, targets, text_checksum

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

__all__ = ["require_pyarrow", "token_schema", "vocab_schema", "token_batches", "token_table", "token_dataframe",
           "vocab_table", "vocab_path", "write_parquet", "ROWS_PER_GROUP"]

#: About this many rows per Parquet row group (whole steps are never split). Large, as each
#: row group carries its own dictionary of the candidates' probabilities.
ROWS_PER_GROUP = 1 << 20
_STRINGS = ("name", "token", "target", "top1")
_UNKNOWN_TARGET = -2
_INT32 = 1 << 31
_MARKED = 1 << 24


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or ImportError with the command that installs it."""
    try:
        import pyarrow
    except ImportError:
        raise ImportError("reading seqviz files as tables needs pyarrow: pip install pyarrow "
                          "(the 'analysis' extra of seqviz-trackers)") from None
    return pyarrow


def token_schema(top_k: bool = True) -> "pyarrow.Schema":
    """The schema of the token table (``top_k=False``: without the ``top_k`` column)."""
    pa = require_pyarrow()
    text = pa.dictionary(pa.int32(), pa.string())
    fields = [
        ("step", pa.int64()), ("sequence", pa.int32()), ("name", text), ("position", pa.int32()),
        ("token", text), ("token_id", pa.int32()), ("target", text), ("target_id", pa.int32()),
        ("target_prob", pa.float32()), ("target_rank", pa.int32()), ("loss", pa.float32()),
        ("entropy", pa.float32()), ("top1_id", pa.int32()), ("top1", text), ("correct", pa.bool_()),
    ]
    if top_k:
        fields.append(("top_k", _topk_type(pa)))
    return pa.schema(fields)


def vocab_schema() -> "pyarrow.Schema":
    """The schema of the vocabulary: a candidate ``id`` and its display string ``token``."""
    pa = require_pyarrow()
    return pa.schema([("id", pa.int32()), ("token", pa.string())])


def _topk_type(pa: Any) -> Any:
    return pa.list_(pa.field("element", pa.struct([("id", pa.int32()), ("prob", pa.float32())])))


class _Vocab:
    """The display string of every candidate id seen, learnt a batch of candidates at a time
    (ids under 2**24 are marked in a bool array indexed by id, the rare others in the dict)."""

    def __init__(self) -> None:
        self.strings: dict[int, str] = {}
        self.marks = np.zeros(0, dtype=bool)

    def learn(self, ids: np.ndarray, strings: list[Any]) -> None:
        small = (ids >= 0) & (ids < _MARKED)
        new = ~small
        if small.any():
            hi = int(ids[small].max())
            if hi >= len(self.marks):
                grown = np.zeros(max(hi + 1, 2 * len(self.marks)), dtype=bool)
                grown[:len(self.marks)] = self.marks
                self.marks = grown
            new[small] = ~self.marks[ids[small]]
            self.marks[ids[small]] = True
        for at in np.flatnonzero(new).tolist():
            string = strings[at]
            if isinstance(string, str):
                self.strings.setdefault(int(ids[at]), string)

    def table(self) -> "pyarrow.Table":
        pa = require_pyarrow()
        ids = np.array(sorted(k for k in self.strings if -_INT32 <= k < _INT32), dtype=np.int32)
        return pa.table([pa.array(ids, pa.int32()), pa.array([self.strings[int(i)] for i in ids], pa.string())],
                        schema=vocab_schema())


# -- what the columns file does not hold: per text, its tokens and targets ---------------------------
@dataclass
class _Text:
    """One logged text of one sequence: its name, tokens, ids and the targets seen so far."""

    name: str | None
    tokens: np.ndarray  # object array of str
    token_ids: np.ndarray | None
    target_id: np.ndarray  # int64; -1 unknown id, -2 not read yet
    target: np.ndarray  # object array of str or None

    @classmethod
    def of(cls, seq: dict[str, Any]) -> "_Text":
        tokens = seq.get("tokens") if isinstance(seq.get("tokens"), list) else []
        ids = seq.get("token_ids")
        ok_ids = isinstance(ids, list) and len(ids) == len(tokens) and all(type(i) is int for i in ids)
        name = seq.get("name")
        return cls(name if isinstance(name, str) else None,
                   np.array([t if isinstance(t, str) else str(t) for t in tokens], dtype=object),
                   np.array(ids, dtype=np.int64) if ok_ids else None,
                   np.full(len(tokens), _UNKNOWN_TARGET, dtype=np.int64), np.full(len(tokens), None, dtype=object))

    def read_targets(self, seq: dict[str, Any]) -> None:
        for pos, (tid, tstr) in targets(seq).items():
            if 0 <= pos < len(self.target_id):
                self.target_id[pos], self.target[pos] = tid, tstr

    def knows(self, cols: Columns) -> bool:
        return cols.width <= len(self.target_id) and not (self.target_id[cols.pos] == _UNKNOWN_TARGET).any()


# -- building ----------------------------------------------------------------------------------------
class _Batch:
    """Rows of one step, column by column, turned into an Arrow record batch."""

    def __init__(self, top_k: bool, words: _Vocab | None = None):
        self.parts: dict[str, list[Any]] = {k: [] for k in (
            "step", "sequence", "name", "position", "token", "token_id", "target", "target_id",
            "target_prob", "target_rank", "loss", "entropy", "top1_id", "top1")}
        self.top_k = top_k
        self.words = words
        self.lengths: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def add(self, step: int, index: int, text: _Text, cols: Columns, vocab: dict[int, str],
            preds: list[Any] | None = None) -> None:
        n = len(cols)
        pos = cols.pos
        p = self.parts
        p["step"].append(np.full(n, step, dtype=np.int64))
        p["sequence"].append(np.full(n, index, dtype=np.int32))
        p["name"].append(np.full(n, text.name, dtype=object))
        p["position"].append(pos.astype(np.int32))
        p["token"].append(text.tokens[pos])
        p["token_id"].append(text.token_ids[pos] if text.token_ids is not None else np.full(n, -1, dtype=np.int64))
        p["target"].append(text.target[pos])
        p["target_id"].append(text.target_id[pos])
        p["target_prob"].append(cols.prob)
        p["target_rank"].append(cols.rank)
        p["loss"].append(cols.loss)
        p["entropy"].append(cols.entropy)
        p["top1_id"].append(cols.top1)
        p["top1"].append(np.array([vocab.get(t) for t in cols.top1.tolist()], dtype=object))
        if self.top_k and preds is not None:
            lengths, ids, strings, probs = candidate_lists(preds, cols.index.tolist())
            self.lengths.append(lengths)
            self.ids.append(ids)
            self.probs.append(probs)
            if self.words is not None:
                self.words.learn(ids, strings)

    def to_batch(self, pa: Any, plain: Any) -> Any:
        """The rows as a record batch of schema ``plain`` (see :func:`_plain_schema`)."""
        def cat(name: str, dtype: Any = object) -> np.ndarray:
            parts = self.parts[name]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        def ints(name: str, below: int) -> Any:
            """Values under ``below`` are unknown (null), and so are those too large for an int32."""
            return _int32(pa, cat(name, np.int64), below)

        def floats(name: str) -> Any:
            values = cat(name, np.float32).astype(np.float32)
            mask = np.isnan(values)
            return pa.array(values, type=pa.float32(), mask=mask if mask.any() else None)

        rank = cat("target_rank", np.int64)
        arrays = {
            "step": pa.array(cat("step", np.int64), pa.int64()),
            "sequence": pa.array(cat("sequence", np.int32), pa.int32()),
            "position": pa.array(cat("position", np.int32), pa.int32()),
            "token_id": ints("token_id", 0),
            "target_id": ints("target_id", 0),
            "target_prob": floats("target_prob"),
            "target_rank": ints("target_rank", 1),
            "loss": floats("loss"),
            "entropy": floats("entropy"),
            "top1_id": ints("top1_id", 0),
            "correct": pa.array(rank == 1, pa.bool_(), mask=rank < 1),
        }
        for name in _STRINGS:
            arrays[name] = pa.array(cat(name), pa.string())
        if self.top_k:
            def joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
                return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

            struct_type = _topk_type(pa).value_type
            struct = pa.StructArray.from_arrays(
                [_int32(pa, joined(self.ids, np.int64), -_INT32), pa.array(joined(self.probs, np.float32))],
                fields=list(struct_type))
            lengths = joined(self.lengths, np.int64)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            arrays["top_k"] = pa.ListArray.from_arrays(pa.array(offsets), struct, type=_topk_type(pa))
        return pa.record_batch([arrays[f.name] for f in plain], schema=plain)


def _int32(pa: Any, values: np.ndarray, below: int) -> Any:
    """int64 ``values`` as an int32 array; those under ``below`` or too large for an int32 are null."""
    mask = (values < below) | (values >= _INT32)
    return pa.array(values.astype(np.int32), type=pa.int32(), mask=mask if mask.any() else None)


def _plain_schema(pa: Any, schema: Any) -> Any:
    """``schema`` with plain strings in place of dictionary-encoded ones (how steps are gathered)."""
    return pa.schema([pa.field(f.name, pa.string()) if f.name in _STRINGS else f for f in schema])


def _encode_strings(pa: Any, table: Any, schema: Any) -> Any:
    """``table`` (one chunk per column, plain strings) with its strings dictionary-encoded as in ``schema``."""
    columns_out = []
    for field in schema:
        col = table.column(field.name).combine_chunks()
        if field.name in _STRINGS:
            col = col.dictionary_encode()
        columns_out.append(col)
    return pa.Table.from_arrays(columns_out, schema=schema)


def token_batches(reader: Any, *, top_k: bool = True, steps: Iterable[int] | None = None,
                  rows_per_group: int = ROWS_PER_GROUP, words: _Vocab | None = None) -> Iterator["pyarrow.Table"]:
    """The token table of ``reader``'s file as tables of whole steps, in step order.

    Each holds about ``rows_per_group`` rows (at least one step). Lines that cannot be
    read are skipped and listed in ``reader.problems``, as everywhere else.

    Args:
        reader: a :class:`~seqviz_trackers.jsonl.TrainingDataReader`.
        top_k: include the ``top_k`` list column (parses every line; without it the
            columns file, when it matches, spares most of the parsing).
        steps: only these steps (default: every step).
        rows_per_group: about how many rows each table holds.
        words: learns the display strings of the candidates read (with ``top_k``).
    """
    from .columns import ColumnsReader

    pa = require_pyarrow()
    schema = token_schema(top_k)
    infos = reader.steps
    if steps is not None:
        wanted = set(steps)
        infos = [info for info in infos if info.step in wanted]
    cache = None if top_k else ColumnsReader(reader.path, reader.files)
    texts: dict[tuple[Hashable, int], _Text] = {}
    known = KnownIds()
    vocab: dict[int, str] = {}
    plain = _plain_schema(pa, schema)
    batches: list[Any] = []
    rows = 0
    yielded = False
    for info in infos:
        batch = _Batch(top_k, words)
        if not (cache is not None and _from_record(cache.get(info), info.step, texts, vocab, batch)):
            try:
                entry = reader.read(info)
            except ValueError:
                continue  # recorded in reader.problems
            _from_entry(entry, texts, known, vocab, batch)
        record = batch.to_batch(pa, plain)
        batches.append(record)
        rows += record.num_rows
        if rows >= rows_per_group:
            yield _encode_strings(pa, pa.Table.from_batches(batches, schema=plain), schema)
            batches, rows, yielded = [], 0, True
    if batches or not yielded:
        yield _encode_strings(pa, pa.Table.from_batches(batches, schema=plain), schema)


def _from_entry(entry: dict[str, Any], texts: dict[tuple[Hashable, int], _Text], known: KnownIds,
                vocab: dict[int, str], batch: _Batch) -> None:
    seqs = entry.get("sequences")
    seqs = [s for s in seqs if isinstance(s, dict)] if isinstance(seqs, list) else []
    for index, seq in enumerate(seqs):
        cols = columns(seq)
        key = (sequence_key(seq), text_checksum(seq))
        text = texts.get(key)
        if text is None:
            text = texts[key] = _Text.of(seq)
        text.read_targets(seq)
        for top, string in known.new_strings(seq, cols).items():
            vocab.setdefault(top, string)
        preds = seq.get("predictions")
        batch.add(entry["step"], index, text, cols, vocab, preds if isinstance(preds, list) else None)


def _from_record(record: Any, step: int, texts: dict[tuple[Hashable, int], _Text], vocab: dict[int, str],
                 batch: _Batch) -> bool:
    """Fill ``batch`` from a columns-file record; False (``batch`` untouched) when the
    record is missing or refers to a text, target or top-1 string not read yet."""
    if record is None:
        return False
    _step, seqs, new_vocab = record
    for top, string in new_vocab.items():
        vocab.setdefault(top, string)
    found = []
    for key, text_sum, cols in seqs:
        text = texts.get((key, text_sum))
        if text is None or not text.knows(cols):
            return False
        tops = cols.top1[cols.top1 >= 0]
        if len(tops) and not all(t in vocab for t in set(tops.tolist())):
            return False
        found.append((text, cols))
    for index, (text, cols) in enumerate(found):
        batch.add(step, index, text, cols, vocab)
    return True


def token_table(reader: Any, *, top_k: bool = True, steps: Iterable[int] | None = None) -> "pyarrow.Table":
    """The token table of ``reader``'s file as one Arrow table (see the module docstring)."""
    pa = require_pyarrow()
    parts = list(token_batches(reader, top_k=top_k, steps=steps))
    return pa.concat_tables(parts) if parts else token_schema(top_k).empty_table()


def vocab_table(reader: Any, *, steps: Iterable[int] | None = None) -> "pyarrow.Table":
    """The display string of every candidate id in ``reader``'s file (or those ``steps``),
    as a table of ``id`` (int32) and ``token``, sorted by id: what the ``top_k`` ids mean."""
    vocab = _Vocab()
    wanted = None if steps is None else set(steps)
    for info in reader.steps:
        if wanted is not None and info.step not in wanted:
            continue
        try:
            entry = reader.read(info)
        except ValueError:
            continue  # recorded in reader.problems
        seqs = entry.get("sequences")
        for seq in seqs if isinstance(seqs, list) else []:
            preds = seq.get("predictions") if isinstance(seq, dict) else None
            if isinstance(preds, list):
                _lengths, ids, strings, _probs = candidate_lists(preds, columns(seq).index.tolist())
                vocab.learn(ids, strings)
    return vocab.table()


def vocab_path(path: str | os.PathLike[str]) -> Path:
    """Where the vocabulary of the Parquet file ``path`` goes: ``tokens.parquet`` -> ``tokens.vocab.parquet``."""
    path = Path(path)
    stem = path.stem if path.suffix == ".parquet" else path.name
    return path.with_name(f"{stem}.vocab.parquet")


def token_dataframe(reader: Any, *, top_k: bool = True, steps: Iterable[int] | None = None) -> "pandas.DataFrame":
    """The token table as a pandas DataFrame (strings as categoricals); needs pandas and pyarrow."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install pandas (or use to_arrow())") from None
    return token_table(reader, top_k=top_k, steps=steps).to_pandas()


@dataclass(frozen=True)
class ParquetResult:
    """What :func:`write_parquet` wrote."""

    path: Path
    rows: int
    steps: int
    row_groups: int
    bytes: int
    vocab_path: Path | None = None  # None without the top_k column
    vocab_bytes: int = 0
    vocab_rows: int = 0


def write_parquet(reader: Any, path: str | os.PathLike[str], *, top_k: bool = True,
                  steps: Iterable[int] | None = None, rows_per_group: int = ROWS_PER_GROUP,
                  compression_level: int | None = None) -> ParquetResult:
    """Write the token table of ``reader``'s file to a Parquet file (zstd, one row group per
    range of steps) and, with the ``top_k`` column, its vocabulary to :func:`vocab_path`.
    Each file appears whole: it is written beside its path and renamed."""
    require_pyarrow()
    import pyarrow.parquet as pq

    path = Path(path)
    schema = token_schema(top_k)
    # Byte streams for the floats of nearly unique values and the candidate ids (zstd packs
    # them better than a dictionary would); a dictionary for everything else, the candidates'
    # probabilities included (4 significant digits: few distinct values, each stored once per
    # row group).
    leaves = [f.name for f in schema if f.name != "top_k"] + (
        ["top_k.list.element.id", "top_k.list.element.prob"] if top_k else [])
    split = ["target_prob", "loss", "entropy"] + (["top_k.list.element.id"] if top_k else [])
    vocab = _Vocab() if top_k else None
    rows = groups = 0
    seen: set[int] = set()
    with _replacing(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=compression_level,
                              use_dictionary=[name for name in leaves if name not in split],
                              use_byte_stream_split=split, dictionary_pagesize_limit=16 << 20,
                              write_statistics=True) as writer:
            for table in token_batches(reader, top_k=top_k, steps=steps, rows_per_group=rows_per_group, words=vocab):
                if table.num_rows:
                    writer.write_table(table, row_group_size=table.num_rows)
                    groups += 1
                    rows += table.num_rows
                    seen.update(np.unique(table.column("step").to_numpy()).tolist())
    result = ParquetResult(path, rows, len(seen), groups, path.stat().st_size)
    if vocab is None:
        return result
    words = vocab_path(path)
    table = vocab.table()
    with _replacing(words) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=compression_level)
    return dataclasses.replace(result, vocab_path=words, vocab_bytes=words.stat().st_size, vocab_rows=table.num_rows)


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed to it when the block ends without an error."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
