"""Training dynamics: how each predicted token changes across the logged steps.

Pure Python and NumPy. Three questions, one module:

- **Series**: for every tracked sequence and position, the target probability, target
  rank, loss, entropy and top-1 token at every step where the sequence was logged.
  :class:`Dynamics` keeps them in NumPy arrays that grow by step; adding a step costs
  work proportional to that step, not to the run.
- **Learned-when**: the step from which the target stays top-1 (and top-5) up to the
  last step where it was predicted, and *forgetting events*: the target was top-1 at
  one logged step and not at the next one where it was predicted.
- **Compare two steps** (:func:`compare`): change in log p(target), change in rank,
  top-1 flips, and a divergence between the two predicted distributions (see
  :data:`DIVERGENCE`).

Identity: a sequence is the same across steps when it has the same ``name``; a
sequence without a name is known by its ``token_ids`` (or, in old files without ids,
its ``tokens``). Tracked sequences are numbered ``seq = 0, 1, ...`` in the order they
first appear in the run. Steps where a sequence is absent are simply not part of its
series; "stays top-1 to the end" is judged over the steps where that position was
predicted.

Old files may lack ``target_prob`` / ``target_rank`` / ``loss`` / ``token_ids`` /
``name``: the probability and rank are read off the logged candidates when the target
is among them, and are *unknown* (NaN here, ``null`` in JSON) otherwise. An unknown
rank counts as "not top-1, not top-5".

:func:`dynamics_for` keeps one :class:`Dynamics` per :class:`TrainingDataReader`, brought
up to date on each call (a truncated or rewritten file, or a step logged again, rebuilds
it). The ``series`` / ``diff`` / ``learned`` / ``sequences`` route functions at the end
return the JSON shapes documented on each of them and in ``docs/dynamics.md``.
"""

from __future__ import annotations

import bisect
import json
import math
import operator
import threading
import time
import weakref
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "Dynamics", "Columns", "columns", "sequence_key", "compare", "js_topk_other", "dynamics_for",
    "DIVERGENCE", "series_json", "learned_json", "sequences_json", "diff_json", "candidates", "candidate_lists", "targets",
    "previous_step", "evenly_spaced",
]

#: The divergence reported by :func:`compare`, named so a UI can say what it shows.
DIVERGENCE = {
    "name": "js_topk_other",
    "label": "JS divergence (top-k + other)",
    "description": (
        "Jensen-Shannon divergence in nats (0 to ln 2 = 0.693) between the two predicted "
        "distributions, each restricted to the union of both logged top-k sets plus one "
        "'other' bucket holding its remaining mass; a token missing from one side's top-k "
        "counts as probability 0 there."
    ),
}

_FIELDS = operator.itemgetter("position", "target_prob", "target_rank", "loss", "entropy")
_TOP = operator.itemgetter("top_k")
_FIRST = operator.itemgetter(0)
_STEP = operator.attrgetter("step")
#: Log-probabilities are floored here when only a probability of 0 is known.
_LOGP_FLOOR = math.log(1e-30)
_MAX_POSITIONS = 1 << 20
_MAX_KNOWN = 1 << 24  # token ids below this have their display string looked up
_NONE = np.zeros(0, dtype=np.int64)


def sequence_key(seq: dict[str, Any]) -> Hashable:
    """What identifies a logged sequence across steps: its name, else its token ids, else its tokens."""
    name = seq.get("name")
    if isinstance(name, str):
        return ("name", name)
    ids = seq.get("token_ids")
    if isinstance(ids, list):
        return ("ids", tuple(ids))
    tokens = seq.get("tokens")
    return ("tokens", tuple(tokens) if isinstance(tokens, list) else ())


def text_checksum(seq: dict[str, Any]) -> int:
    """A checksum of a logged sequence's text (its token ids, else its tokens)."""
    ids = seq.get("token_ids")
    text = ids if isinstance(ids, list) else seq.get("tokens")
    return zlib.crc32(json.dumps(text if isinstance(text, list) else None).encode())


Candidate = tuple[int, Any, float]


def _candidate(c: Any) -> Candidate | None:
    """``[id, token, p]`` (or the original format's ``{"token_id", "token_str", "prob"}``, also
    read as ``{"id", "token", "p"}``) as a tuple, or None."""
    if isinstance(c, (list, tuple)) and len(c) >= 3:
        cid, token, p = c[0], c[1], c[2]
    elif isinstance(c, dict):
        cid, token, p = c.get("token_id", c.get("id")), c.get("token_str", c.get("token")), c.get("prob", c.get("p"))
    else:
        return None
    return (cid, token if isinstance(token, str) else None, float(p)) if _is_int(cid) and _is_num(p) else None


def candidates(pred: dict[str, Any]) -> list[Candidate]:
    """The logged candidates of one prediction as ``(id, token, p)``, most likely first
    (``top_k``, or the longer ``top_20`` of the original format); malformed items are dropped."""
    best: list[Any] = []
    for field in ("top_k", "top_20"):
        value = pred.get(field)
        if isinstance(value, list) and len(value) > len(best):
            best = value
    return [c for c in map(_candidate, best) if c is not None]


_SECOND = operator.itemgetter(1)
_THIRD = operator.itemgetter(2)


def candidate_lists(preds: list[Any], index: Iterable[int]) -> tuple[np.ndarray, np.ndarray, list[Any], np.ndarray]:
    """The candidates of ``preds[i]`` for each ``i`` in ``index``, as :func:`candidates` reads
    them, flattened: (how many per prediction, ids, display strings or None, probabilities).

    The converter's ``[int id, str, finite p]`` lists are read in bulk; any other shape falls
    back to :func:`candidates` prediction by prediction.
    """
    chosen = [preds[i] for i in index]
    try:
        if any("top_20" in p for p in chosen):
            raise TypeError("the original format's top_20")
        lists = list(map(_TOP, chosen))
        flat = list(chain.from_iterable(lists))
        if not (set(map(type, lists)) <= {list} and set(map(type, flat)) <= {list} and set(map(len, flat)) <= {3}):
            raise TypeError("not [id, token, p] lists")
        ids, strings, probs = list(map(_FIRST, flat)), list(map(_SECOND, flat)), list(map(_THIRD, flat))
        if not (set(map(type, ids)) <= {int} and set(map(type, strings)) <= {str} and set(map(type, probs)) <= {int, float}):
            raise TypeError("odd candidate values")
        id_array, prob_array = np.array(ids, dtype=np.int64), np.array(probs, dtype=np.float64)
        if not np.isfinite(prob_array).all():
            raise ValueError("non-finite probability")
        return np.fromiter(map(len, lists), dtype=np.int64, count=len(lists)), id_array, strings, prob_array
    except (KeyError, TypeError, ValueError, OverflowError):
        found = [candidates(p) for p in chosen]
        flat_c = list(chain.from_iterable(found))
        return (np.array([len(c) for c in found], dtype=np.int64), np.array([c[0] for c in flat_c], dtype=np.int64),
                [c[1] for c in flat_c], np.array([c[2] for c in flat_c], dtype=np.float64))


def _first_candidate(pred: Any) -> Candidate | None:
    """The most likely logged candidate of one prediction, or None."""
    for field in ("top_k", "top_20"):
        value = pred.get(field) if isinstance(pred, dict) else None
        if isinstance(value, list) and value:
            first = _candidate(value[0])
            if first is not None:
                return first
    return None


def _is_int(x: Any) -> bool:
    """An int that fits NumPy's int64 (larger ids, positions or ranks count as malformed)."""
    return isinstance(x, int) and not isinstance(x, bool) and -(1 << 63) <= x < (1 << 63)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Columns:
    """One logged sequence's predictions as arrays, one item per prediction.

    ``prob``/``loss``/``entropy`` are NaN and ``rank`` is 0 where unknown; ``top1`` is
    the most likely token id (-1 when no candidates were logged); ``target`` is the
    target token id (None when not read: a step's targets are read once per text, see
    :func:`targets`); ``index`` is the prediction's index in the ``predictions`` list.
    """

    pos: np.ndarray
    prob: np.ndarray
    rank: np.ndarray
    loss: np.ndarray
    entropy: np.ndarray
    top1: np.ndarray
    target: np.ndarray | None
    index: np.ndarray
    contiguous: bool = False  # positions are exactly 0, 1, ..., len - 1

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def width(self) -> int:
        """One more than the highest position (0 when empty)."""
        return len(self.pos) if self.contiguous else (int(self.pos.max()) + 1 if len(self.pos) else 0)


def columns(seq: dict[str, Any]) -> Columns:
    """Read a sequence's predictions into :class:`Columns`; never raises on odd data.

    Predictions with a position outside the sequence's tokens are dropped.
    """
    preds = seq.get("predictions")
    if not isinstance(preds, list):
        preds = []
    tokens = seq.get("tokens")
    limit = min(len(tokens) if isinstance(tokens, list) else 0, _MAX_POSITIONS)
    n = len(preds)
    try:  # files written by the converter: every field present
        flat = np.fromiter(chain.from_iterable(map(_FIELDS, preds)), dtype=np.float64, count=5 * n).reshape(n, 5)
        top1 = np.fromiter(map(_FIRST, map(_FIRST, map(_TOP, preds))), dtype=np.int64, count=n)
        if n and not (np.isfinite(flat).all() and flat[:, 2].min() >= 1):
            raise ValueError("odd values")
        index = np.arange(n)
        contiguous = n <= limit and bool((flat[:, 0] == index).all())
        cols = Columns(index if contiguous else flat[:, 0].astype(np.int64), flat[:, 1], flat[:, 2].astype(np.int64),
                       flat[:, 3], flat[:, 4], top1, None, index, contiguous)
        if not contiguous and n and not (flat[:, 0] == cols.pos).all():
            raise ValueError("fractional position")
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        cols = _columns_slow(preds)
    if n and not cols.contiguous and (cols.pos.min() < 0 or cols.pos.max() >= limit):
        keep = (cols.pos >= 0) & (cols.pos < limit)
        cols = Columns(*(None if getattr(cols, f) is None else getattr(cols, f)[keep]
                         for f in ("pos", "prob", "rank", "loss", "entropy", "top1", "target", "index")))
    return cols


def _columns_slow(preds: list[Any]) -> Columns:
    rows = []
    for index, pred in enumerate(preds):
        if not isinstance(pred, dict) or not _is_int(pred.get("position")):
            continue
        cands = candidates(pred)
        target = pred.get("target_token_id")
        target = target if _is_int(target) else -1
        where = next((i for i, c in enumerate(cands) if c[0] == target), None)
        prob = pred.get("target_prob")
        prob = float(prob) if _is_num(prob) and 0 <= prob <= 1 else (cands[where][2] if where is not None else math.nan)
        loss = pred.get("loss")
        loss = float(loss) if _is_num(loss) and loss >= 0 else math.nan
        if math.isnan(loss) and prob > 0:
            loss = -math.log(prob)
        elif math.isnan(prob) and not math.isnan(loss):
            prob = math.exp(-loss)
        rank = pred.get("target_rank")
        rank = rank if _is_int(rank) and rank >= 1 else (where + 1 if where is not None else 0)
        entropy = pred.get("entropy")
        entropy = float(entropy) if _is_num(entropy) else math.nan
        rows.append((pred["position"], prob, rank, loss, entropy, cands[0][0] if cands else -1, target, index))
    if not rows:
        e = np.zeros(0)
        i = np.zeros(0, dtype=np.int64)
        return Columns(i, e, i, e, e, i, i, i)
    pos, prob, rank, loss, entropy, top1, target, index = (np.array(c) for c in zip(*rows))
    return Columns(pos.astype(np.int64), prob.astype(np.float64), rank.astype(np.int64), loss.astype(np.float64),
                   entropy.astype(np.float64), top1.astype(np.int64), target.astype(np.int64), index.astype(np.int64))


def _logp(cols: Columns) -> np.ndarray:
    """log p(target): minus the loss (more precise for tiny p), else log of the probability."""
    with np.errstate(divide="ignore"):
        out = np.where(np.isnan(cols.loss), np.log(cols.prob), -cols.loss)
    return np.maximum(out, _LOGP_FLOOR)


# -- growing storage ------------------------------------------------------------------------------
class _Track:
    """The series of one tracked sequence: rows are the steps where it was logged."""

    ARRAYS = {"prob": (np.float32, np.nan), "loss": (np.float32, np.nan), "entropy": (np.float32, np.nan),
              "rank": (np.int32, 0), "top1": (np.int64, -1), "present": (np.bool_, False)}
    STATE = {"target": (np.int64, -2), "top1_now": (np.bool_, False), "since1": (np.int64, -1),
             "since5": (np.int64, -1), "last_seen": (np.int64, -1), "times_forgotten": (np.int32, 0)}

    def __init__(self, number: int, seq: dict[str, Any]):
        self.number = number
        self.name: str | None = seq.get("name") if isinstance(seq.get("name"), str) else None
        self.tokens: list[str] = []
        self.token_ids: list[int] | None = None
        self.text: int | None = None  # text_checksum of the tokens
        self.target_str: list[str | None] = []
        self.n = 0
        self.width = 0
        self.steps = np.zeros(8, dtype=np.int64)
        self.row_of: dict[int, int] = {}
        for field, (dtype, fill) in self.ARRAYS.items():
            setattr(self, field, np.full((8, 0), fill, dtype=dtype))
        for field, (dtype, fill) in self.STATE.items():
            setattr(self, field, np.full(0, fill, dtype=dtype))

    def _grow(self, rows: int, width: int) -> None:
        cap = self.steps.shape[0]
        if rows <= cap and width <= self.width:
            return
        new_cap = max(cap, rows) if rows <= cap else max(rows, 2 * cap)
        new_width = max(width, self.width)
        if new_cap != cap:
            steps = np.zeros(new_cap, dtype=np.int64)
            steps[:self.n] = self.steps[:self.n]
            self.steps = steps
        for field, (dtype, fill) in self.ARRAYS.items():
            old = getattr(self, field)
            arr = np.full((new_cap, new_width), fill, dtype=dtype)
            arr[:self.n, :self.width] = old[:self.n, :self.width]
            setattr(self, field, arr)
        for field, (dtype, fill) in self.STATE.items():
            old = getattr(self, field)
            arr = np.full(new_width, fill, dtype=dtype)
            arr[:self.width] = old
            setattr(self, field, arr)
        self.target_str.extend([None] * (new_width - self.width))
        self.width = new_width

    def _at(self, cols: Columns) -> Any:
        return slice(0, len(cols)) if cols.contiguous else cols.pos  # a slice is much cheaper than fancy indexing

    def add(self, step: int, cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Append one step; returns (gained positions, lost positions, their since-steps, their last top-1 steps)."""
        self._grow(self.n + 1, cols.width)
        row, pos, at = self.n, cols.pos, self._at(cols)
        self.steps[row] = step
        self.row_of[step] = row
        self.prob[row, at] = cols.prob
        self.loss[row, at] = cols.loss
        self.entropy[row, at] = cols.entropy
        self.rank[row, at] = cols.rank
        self.top1[row, at] = cols.top1
        self.present[row, at] = True
        self.n += 1

        # learned-when state, at the predicted positions only
        hit1 = cols.rank == 1
        was1 = self.top1_now[at]
        changed = hit1 != was1
        if changed.any():
            lost, gained = pos[changed & was1], pos[changed & hit1]
            since, last = self.since1[lost], self.last_seen[lost]
            self.times_forgotten[lost] += 1
            self.since1[lost] = -1
            self.since1[gained] = step
            self.top1_now[at] = hit1
        else:
            lost = gained = since = last = _NONE
        hit5 = (cols.rank - 1).astype(np.uint64) < 5  # rank 1..5 (an unknown rank 0 wraps around)
        since5 = self.since5[at]
        self.since5[at] = np.where(hit5, np.where(since5 < 0, step, since5), -1)
        self.last_seen[at] = step
        return gained, lost, since, last

    def set_text(self, seq: dict[str, Any], cols: Columns) -> None:
        """Take the tokens, and the targets at ``cols``' positions, from ``seq`` when they are new
        (call after :meth:`add`)."""
        ids = seq.get("token_ids")
        tokens = seq.get("tokens")
        new_text = isinstance(tokens, list) and (not self.tokens or ids != self.token_ids
                                                 or (ids is None and tokens != self.tokens))
        if new_text:
            self.tokens = [t if isinstance(t, str) else str(t) for t in tokens]
            self.token_ids = ids if isinstance(ids, list) else None
            self.text = text_checksum(seq)
        if new_text or (self.target[self._at(cols)] == -2).any():  # read targets once per text and position
            for p, (target_id, target_str) in targets(seq).items():
                if p < self.width:
                    self.target[p], self.target_str[p] = target_id, target_str

    def knows_text(self, text: int, cols: Columns) -> bool:
        """Whether this track has text ``text`` and the targets at all of ``cols``' positions."""
        return text == self.text and cols.width <= self.width and not (self.target[self._at(cols)] == -2).any()

    def label(self) -> str:
        if self.name is not None:
            return self.name
        text = "".join(self.tokens[:12])
        return text if len(self.tokens) <= 12 else text + "…"


def targets(seq: dict[str, Any]) -> dict[int, tuple[int, str | None]]:
    """Position -> (target token id or -1, target display string or None) of a logged sequence."""
    out: dict[int, tuple[int, str | None]] = {}
    for pred in seq.get("predictions") or ():
        if isinstance(pred, dict) and _is_int(pred.get("position")):
            tid, tstr = pred.get("target_token_id"), pred.get("target_token_str")
            out[pred["position"]] = (tid if _is_int(tid) else -1, tstr if isinstance(tstr, str) else None)
    return out


class KnownIds:
    """Top-1 token ids whose display string has been looked up: a bool array indexed by
    id that grows as larger ids arrive (ids from 2**24 on are skipped: no real vocabulary
    is that large, and the array would be)."""

    def __init__(self) -> None:
        self.marks = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.marks)

    def new_strings(self, seq: dict[str, Any], cols: Columns) -> dict[int, str]:
        """Display strings of the top-1 ids of ``seq``'s :class:`Columns` not looked up
        before; marks them. One pass over the predictions, and only when there are some."""
        top = cols.top1
        ok = (top >= 0) & (top < _MAX_KNOWN)
        if not ok.any():
            return {}
        hi = int(top[ok].max())
        if hi >= len(self.marks):
            grown = np.zeros(max(hi + 1, 2 * len(self.marks)), dtype=bool)
            grown[:len(self.marks)] = self.marks
            self.marks = grown
        new = ok.copy()
        new[ok] = ~self.marks[top[ok]]
        if not new.any():
            return {}
        out: dict[int, str] = {}
        preds = seq["predictions"]
        for i, t in zip(cols.index[new].tolist(), top[new].tolist()):
            first = _first_candidate(preds[i])
            if first is not None and first[1] is not None:
                out.setdefault(t, first[1])
        self.marks[top[ok]] = True
        return out


def evenly_spaced(n: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` (>= 2) evenly spaced rows of ``n``, the first and last included."""
    if n <= limit:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, limit).tolist()})


class _Grow:
    """A 1-D NumPy array that grows by appending (amortised O(1))."""

    def __init__(self, dtype: Any):
        self.data = np.zeros(16, dtype=dtype)
        self.n = 0

    def append(self, value: Any) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self.data[:self.n]


class Dynamics:
    """Per-token series and learned-when state of one run, built step by step.

    >>> dyn = Dynamics()
    >>> for entry in entries:        # in increasing step order
    ...     dyn.add_entry(entry)
    >>> dyn.learned_at(0)            # per position of sequence 0: step or -1

    Steps must arrive in increasing order (:meth:`add_entry` raises ValueError
    otherwise); :func:`dynamics_for` rebuilds when a file's steps do not.
    """

    def __init__(self) -> None:
        self.tracks: list[_Track] = []
        self._by_key: dict[Hashable, _Track] = {}
        self.steps = _Grow(np.int64)
        self.gained = _Grow(np.int64)
        self.forgotten = _Grow(np.int64)
        self.step_seqs: list[list[int]] = []
        self._events: list[np.ndarray] = []  # per step: (seq, pos, step, since, last top-1) rows
        self.vocab: dict[int, str] = {}
        self._known = KnownIds()

    # -- building --------------------------------------------------------------------------------
    def add_entry(self, entry: dict[str, Any]) -> None:
        """Add one logged step. Raises ValueError when its step is not after the last one."""
        seqs = entry.get("sequences")
        seqs = [seq for seq in seqs if isinstance(seq, dict)] if isinstance(seqs, list) else []
        self._add(entry.get("step"), [(sequence_key(seq), seq, columns(seq)) for seq in seqs])

    def add_columns(self, step: int, seqs: list[tuple[Hashable, int, Columns]], vocab: dict[int, str]) -> bool:
        """Add one step read from a columns file (see :mod:`seqviz_trackers.columns_file`):
        per sequence its key, text checksum and :class:`Columns`, plus display strings of
        top-1 ids. Returns False, adding nothing, when a sequence is new or its text or
        targets are not known yet: add that step's entry instead."""
        for key, text, cols in seqs:
            track = self._by_key.get(key)
            if track is None or not track.knows_text(text, cols):
                return False
        self._add(step, [(key, None, cols) for key, _text, cols in seqs])
        for top, string in vocab.items():
            self.vocab.setdefault(top, string)
        return True

    def _add(self, step: Any, seqs: list[tuple[Hashable, dict[str, Any] | None, Columns]]) -> None:
        if not _is_int(step) or step < 0:
            raise ValueError(f"entry has no valid 'step' ({step!r})")
        if self.steps.n and step <= self.steps.data[self.steps.n - 1]:
            raise ValueError(f"step {step} arrives after step {int(self.steps.data[self.steps.n - 1])}; steps must increase")
        numbers: list[int] = []
        n_gained = n_lost = 0
        events = []
        for key, seq, cols in seqs:
            track = self._by_key.get(key)
            if track is None:
                track = self._by_key[key] = _Track(len(self.tracks), seq or {})
                self.tracks.append(track)
            elif track.row_of.get(step) is not None:
                continue  # the same sequence twice in one step: the first one counts
            numbers.append(track.number)
            gained, lost, since, last = track.add(step, cols)
            if seq is not None:
                for top, string in self._known.new_strings(seq, cols).items():
                    self.vocab.setdefault(top, string)
                track.set_text(seq, cols)
            n_gained += len(gained)
            n_lost += len(lost)
            if len(lost):
                events.append(np.stack([np.full(len(lost), track.number), lost, np.full(len(lost), step), since, last], 1))
        self.steps.append(step)
        self.gained.append(n_gained)
        self.forgotten.append(n_lost)
        self.step_seqs.append(numbers)
        if events:
            self._events.append(np.concatenate(events).astype(np.int64))

    def add_missing_step(self, step: int) -> None:
        """Record a logged step whose entry could not be read (no sequences at it)."""
        self.add_entry({"step": step, "sequences": []})

    # -- queries ---------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.steps.n

    def track(self, seq: int) -> _Track:
        """The tracked sequence numbered ``seq``; IndexError when there is none."""
        if not 0 <= seq < len(self.tracks):
            raise IndexError(f"no sequence {seq} (the run has {len(self.tracks)})")
        return self.tracks[seq]

    def number_of(self, seq: dict[str, Any]) -> int | None:
        """The tracked number of a logged sequence, or None when it was never added."""
        track = self._by_key.get(sequence_key(seq))
        return None if track is None else track.number

    def learned_at(self, seq: int, top: int = 1) -> np.ndarray:
        """Per position of sequence ``seq``: the step from which its target stays within the
        top ``top`` (1 or 5) to the last step where it was predicted, or -1 if it does not."""
        track = self.track(seq)
        return (track.since1 if top == 1 else track.since5).copy()

    def events(self) -> np.ndarray:
        """Every forgetting event as rows ``(seq, pos, step, since, last_top1)``, oldest first:
        the target was top-1 from ``since`` through ``last_top1`` and was not at ``step``."""
        if len(self._events) > 1:
            self._events = [np.concatenate(self._events)]
        return self._events[0] if self._events else np.zeros((0, 5), dtype=np.int64)

    def per_step(self) -> dict[str, np.ndarray]:
        """Per logged step: ``gained`` (became top-1 there), ``forgotten`` (lost top-1 there),
        and ``learned`` (tokens whose learned-at step, as of now, is that step)."""
        steps = self.steps.view()
        learned = np.zeros(len(steps), dtype=np.int64)
        for track in self.tracks:
            at = track.since1[track.since1 >= 0]
            np.add.at(learned, np.searchsorted(steps, at), 1)
        return {"steps": steps.copy(), "learned": learned, "gained": self.gained.view().copy(),
                "forgotten": self.forgotten.view().copy()}


# -- comparing two steps ---------------------------------------------------------------------------
def js_topk_other(a: Sequence[Candidate], b: Sequence[Candidate]) -> float:
    """The divergence named in :data:`DIVERGENCE` between two lists of ``(id, token, p)`` candidates."""
    pa = {c[0]: max(float(c[2]), 0.0) for c in a}
    pb = {c[0]: max(float(c[2]), 0.0) for c in b}
    if not pa and not pb:
        return math.nan
    union = pa.keys() | pb.keys()
    va = [pa.get(t, 0.0) for t in union]
    vb = [pb.get(t, 0.0) for t in union]
    va.append(max(0.0, 1.0 - sum(pa.values())))
    vb.append(max(0.0, 1.0 - sum(pb.values())))
    sa, sb = sum(va), sum(vb)
    total = 0.0
    for x, y in zip(va, vb):
        x, y = x / sa, y / sb
        m = 0.5 * (x + y)
        if x > 0:
            total += 0.5 * x * math.log(x / m)
        if y > 0:
            total += 0.5 * y * math.log(y / m)
    return max(total, 0.0)


def _topk_arrays(preds: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, probabilities), each ``(len(preds), k)``, of predictions whose ``top_k`` lists are
    well-formed ``[int id, str, finite p]`` items of one length; else None."""
    try:
        if not preds or any("top_20" in p for p in preds):
            return None
        arr = np.array([p["top_k"] for p in preds], dtype=object)
    except (KeyError, TypeError, ValueError):
        return None
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] != 3:
        return None
    ids, probs = arr[:, :, 0], arr[:, :, 2]
    if not set(map(type, ids.flat)) <= {int} or not set(map(type, probs.flat)) <= {int, float}:
        return None
    try:
        ids, probs = ids.astype(np.int64), probs.astype(np.float64)
    except OverflowError:  # an id past int64
        return None
    return (ids, np.maximum(probs, 0.0)) if np.isfinite(probs).all() else None


def _divergences(preds_a: list[dict[str, Any]], preds_b: list[dict[str, Any]]) -> np.ndarray:
    """:func:`js_topk_other` of each pair of predictions, vectorised when both sides'
    top-k lists allow it (see :func:`_topk_arrays`)."""
    def one_by_one(rows: Iterable[int]) -> np.ndarray:
        return np.array([js_topk_other(candidates(preds_a[i]), candidates(preds_b[i])) for i in rows], dtype=np.float64)

    a, b = _topk_arrays(preds_a), _topk_arrays(preds_b)
    if a is None or b is None:
        return one_by_one(range(len(preds_a)))
    (ida, pa), (idb, pb) = a, b
    match = ida[:, :, None] == idb[:, None, :]
    pb_at_a = (match * pb[:, None, :]).sum(2)              # B's probability of each of A's ids (0: not in B's top-k)
    pb_only = np.where(match.any(1), 0.0, pb)              # B's ids missing from A's top-k
    oa, ob = np.maximum(0.0, 1.0 - pa.sum(1)), np.maximum(0.0, 1.0 - pb.sum(1))  # the "other" buckets
    sa, sb = (pa.sum(1) + oa)[:, None], (pb.sum(1) + ob)[:, None]

    def half_kl_to_mean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, 0.5 * x * np.log(2 * x / (x + y)), 0.0).sum(1)

    x = np.concatenate([pa / sa, np.zeros_like(pb_only), oa[:, None] / sa], 1)
    y = np.concatenate([pb_at_a / sb, pb_only / sb, ob[:, None] / sb], 1)
    out = np.maximum(half_kl_to_mean(x, y) + half_kl_to_mean(y, x), 0.0)
    repeated = ((np.diff(np.sort(ida, 1), axis=1) == 0).any(1) | (np.diff(np.sort(idb, 1), axis=1) == 0).any(1))
    if repeated.any():  # an id twice in one top-k: the last one counts, as in js_topk_other
        rows = np.flatnonzero(repeated)
        out[rows] = one_by_one(rows.tolist())
    return out


def _sig(x: Any, digits: int = 4) -> Any:
    """A float rounded to ``digits`` significant digits for JSON, or None for NaN."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def _sig_list(values: Iterable[Any]) -> list[Any]:
    return [_sig(v) for v in values]


def _context(tokens: list[str], pos: int, before: int = 6) -> str:
    return "".join(t for t in tokens[max(0, pos - before + 1):pos + 1] if isinstance(t, str))


def compare(entry_a: dict[str, Any], entry_b: dict[str, Any], *, limit: int = 20, per_token: bool = False,
            number: Callable[[dict[str, Any]], int | None] | None = None) -> dict[str, Any]:
    """Compare the predictions of two entries, position by position (see :func:`diff_json` for the shape).

    Sequences are matched by :func:`sequence_key`, positions by ``position``. ``number``
    gives the ``seq`` reported for a sequence (default: its index in ``entry_b``).
    """
    seqs_a = [s for s in entry_a.get("sequences") or () if isinstance(s, dict)]
    seqs_b = [s for s in entry_b.get("sequences") or () if isinstance(s, dict)]
    index_a: dict[Hashable, int] = {}
    for i, s in enumerate(seqs_a):
        index_a.setdefault(sequence_key(s), i)
    sequences, per, parts = [], [], []
    for ib, sb in enumerate(seqs_b):
        ia = index_a.get(sequence_key(sb))
        if ia is None:
            continue
        sa = seqs_a[ia]
        seq_no = number(sb) if number is not None else ib
        name = sb.get("name") if isinstance(sb.get("name"), str) else None
        sequences.append({"seq": seq_no, "name": name, "index_a": ia, "index_b": ib})
        ca, cb = columns(sa), columns(sb)
        common, ja, jb = np.intersect1d(ca.pos, cb.pos, return_indices=True)
        preds_a, preds_b = _by_position(sa), _by_position(sb)
        positions = common.tolist()
        part = {
            "k": np.full(len(common), len(parts)), "pos": common,
            "p_a": ca.prob[ja], "p_b": cb.prob[jb], "rank_a": ca.rank[ja], "rank_b": cb.rank[jb],
            "d_logp": _logp(cb)[jb] - _logp(ca)[ja],
            "div": _divergences([preds_a[p] for p in positions], [preds_b[p] for p in positions]),
        }
        parts.append((part, seq_no, name, ib, sb, preds_a, preds_b))
        if per_token:
            known = (part["rank_a"] >= 1) & (part["rank_b"] >= 1)
            flip = (part["rank_b"] == 1).astype(np.int64) - (part["rank_a"] == 1)
            per.append({"seq": seq_no, "index_b": ib, "positions": common.tolist(),
                        "delta_logp": _sig_list(part["d_logp"]),
                        "delta_rank": [int(b - a) if k else None for a, b, k in
                                       zip(part["rank_a"].tolist(), part["rank_b"].tolist(), known.tolist())],
                        "divergence": _sig_list(part["div"]), "flip": flip.tolist()})

    cat = {f: np.concatenate([p[0][f] for p in parts]) if parts else np.zeros(0) for f in
           ("k", "pos", "p_a", "p_b", "rank_a", "rank_b", "d_logp", "div")}
    d_logp, div = cat["d_logp"], cat["div"]
    flip = (cat["rank_b"] == 1).astype(np.int64) - (cat["rank_a"] == 1)
    known_d = ~np.isnan(d_logp)
    order_up = np.argsort(-np.where(known_d, d_logp, -np.inf), kind="stable")   # biggest gain first
    order_down = np.argsort(np.where(known_d, d_logp, np.inf), kind="stable")   # biggest loss first

    def row(i: int) -> dict[str, Any]:
        part, seq_no, name, ib, sb, preds_a, preds_b = parts[int(cat["k"][i])]
        p = int(cat["pos"][i])
        tokens = sb.get("tokens") if isinstance(sb.get("tokens"), list) else []
        ra, rb = int(cat["rank_a"][i]), int(cat["rank_b"][i])
        first_a, first_b = ((candidates(preds[p]) or [(-1, None, 0.0)])[0] for preds in (preds_a, preds_b))
        target = preds_b[p].get("target_token_str")
        return {
            "seq": seq_no, "name": name, "index": ib, "pos": p,
            "context": _context(tokens, p), "token": tokens[p] if p < len(tokens) else None,
            "target": target if isinstance(target, str) else None,
            "p_a": _sig(cat["p_a"][i]), "p_b": _sig(cat["p_b"][i]),
            "rank_a": ra or None, "rank_b": rb or None,
            "delta_logp": _sig(d_logp[i]), "delta_rank": rb - ra if ra and rb else None,
            "divergence": _sig(div[i]), "top1_a": first_a[1], "top1_b": first_b[1],
            "flip": int(flip[i]),
        }

    def pick(order: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
        return [row(i) for i in order[mask[order]][:limit].tolist()]

    out: dict[str, Any] = {
        "a": entry_a.get("step"), "b": entry_b.get("step"),
        "loss_a": _sig(entry_a.get("loss"), 6) if _is_num(entry_a.get("loss")) else None,
        "loss_b": _sig(entry_b.get("loss"), 6) if _is_num(entry_b.get("loss")) else None,
        "divergence": DIVERGENCE,
        "summary": {
            "compared": int(len(d_logp)),
            "improved": int((d_logp[known_d] > 0).sum()),
            "worsened": int((d_logp[known_d] < 0).sum()),
            "wrong_to_right": int((flip == 1).sum()),
            "right_to_wrong": int((flip == -1).sum()),
            "mean_delta_logp": _sig(d_logp[known_d].mean()) if known_d.any() else None,
            "mean_divergence": _sig(np.nanmean(div)) if (~np.isnan(div)).any() else None,
        },
        "sequences": sequences,
        "learned": pick(order_up, flip == 1),
        "forgotten": pick(order_down, flip == -1),
        "worsened": pick(order_down, known_d & (d_logp < 0)),
        "improved": pick(order_up, known_d & (d_logp > 0)),
    }
    if per_token:
        out["per_token"] = per
    return out


def _by_position(seq: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["position"]: p for p in seq.get("predictions") or () if isinstance(p, dict) and _is_int(p.get("position"))}


# -- one Dynamics per reader -----------------------------------------------------------------------
class _RunState:
    """A reader's :class:`Dynamics`, the step index it was built from, its columns file, and recent diffs."""

    def __init__(self, reader: Any) -> None:
        from .columns_file import ColumnsReader

        self.columns = ColumnsReader(reader.path, reader.files)
        self.lock = threading.Lock()
        self.dyn = Dynamics()
        self.infos: list[Any] = []
        self.sorted_ref: Any = None
        self.diffs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.build_seconds = 0.0


_registry: "weakref.WeakKeyDictionary[Any, _RunState]" = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _state(reader: Any) -> _RunState:
    with _registry_lock:
        state = _registry.get(reader)
        if state is None:
            state = _registry[reader] = _RunState(reader)
        return state


def _sync(reader: Any, state: _RunState) -> None:
    """Bring ``state`` up to date with ``reader``'s steps; call with ``state.lock`` held."""
    infos = reader.steps
    if infos is state.sorted_ref:
        return
    n = len(state.infos)
    if len(infos) < n or not all(map(operator.is_, infos, state.infos)):
        state.dyn, state.infos, state.diffs = Dynamics(), [], {}  # rewritten file or a step logged again
        n = 0
    start = time.perf_counter()
    for info in infos[n:]:
        record = state.columns.get(info)
        if record is not None and state.dyn.add_columns(*record):
            state.infos.append(info)
            continue
        try:
            entry = reader.read(info)
        except ValueError:
            state.dyn.add_missing_step(info.step)
        except OSError:
            break  # the file went away mid-read; the next call tries again
        else:
            state.dyn.add_entry(entry)
        state.infos.append(info)
    else:
        state.sorted_ref = infos
    state.build_seconds += time.perf_counter() - start


@contextmanager
def _synced(reader: Any) -> Iterator[_RunState]:
    """``reader``'s state, brought up to date and locked for the ``with`` block."""
    state = _state(reader)
    with state.lock:
        _sync(reader, state)
        yield state


def dynamics_for(reader: Any) -> Dynamics:
    """The up-to-date :class:`Dynamics` of a :class:`~seqviz_trackers.jsonl.TrainingDataReader`.

    Kept per reader object: each call reads only the steps indexed since the last one.
    The object is replaced, not changed in place, when the file is rewritten.
    """
    with _synced(reader) as state:
        return state.dyn


# -- JSON shapes (used by the routes in api.py and the command line) ------------------------------
def sequences_json(reader: Any, step: int | None = None) -> dict[str, Any]:
    """Tracked sequences of a run::

        {"sequences": [{"seq", "name", "label", "num_positions", "num_steps", "first_step", "last_step"}],
         "at_step": {"step", "seq": [seq number of each sequence of that entry, in entry order]} | null}

    ``at_step`` is present when ``step`` is given; KeyError when the run has no such step.
    """
    with _synced(reader) as state:
        dyn = state.dyn
        out: dict[str, Any] = {"sequences": [{
            "seq": t.number, "name": t.name, "label": t.label(), "num_positions": t.width, "num_steps": t.n,
            "first_step": int(t.steps[0]) if t.n else None, "last_step": int(t.steps[t.n - 1]) if t.n else None,
        } for t in dyn.tracks], "at_step": None}
        if step is not None:
            steps = dyn.steps.view()
            i = int(np.searchsorted(steps, step))
            if i >= len(steps) or steps[i] != step:
                raise KeyError(step)
            out["at_step"] = {"step": step, "seq": dyn.step_seqs[i]}
        return out


def series_json(reader: Any, seq: int, pos: int, points: int | None = None) -> dict[str, Any]:
    """One token's history (at most about ``points`` steps when given: evenly spaced,
    plus the first, last, learned-at and forgetting steps)::

        {"seq", "name", "pos", "token", "target": {"id", "token"},
         "steps": [int],                        # steps where the sequence was logged
         "target_prob": [float|null], "target_rank": [int|null], "loss": [float|null],
         "entropy": [float|null], "top1": [int|null],   # null: not predicted / unknown at that step
         "top1_tokens": {"<id>": str},          # display strings of the ids in top1
         "learned_at": int|null, "learned_at_top5": int|null,
         "forgotten": [{"step", "since", "last_top1"}],
         "num_steps": int}                      # steps logged in all, before any thinning

    IndexError when ``seq`` or ``pos`` does not exist.
    """
    with _synced(reader) as state:
        dyn = state.dyn
        track = dyn.track(seq)
        if not 0 <= pos < track.width:
            raise IndexError(f"sequence {seq} has no prediction at position {pos} (positions 0..{track.width - 1})")
        n = track.n
        ev = dyn.events()
        mine = ev[(ev[:, 0] == seq) & (ev[:, 1] == pos)]
        since1, since5 = int(track.since1[pos]), int(track.since5[pos])
        rows: Any = slice(0, n)
        if points is not None and n > max(points, 2):
            keep = set(evenly_spaced(n, max(points, 2)))
            keep.update(track.row_of[s] for s in (since1, since5, *mine[:, 2].tolist()) if s in track.row_of)
            rows = np.array(sorted(keep))
        present = track.present[rows, pos]
        top1 = [int(t) if ok and t >= 0 else None for t, ok in zip(track.top1[rows, pos].tolist(), present.tolist())]
        return {
            "seq": seq, "name": track.name, "pos": pos,
            "token": track.tokens[pos] if pos < len(track.tokens) else None,
            "target": {"id": int(track.target[pos]) if track.target[pos] >= 0 else None, "token": track.target_str[pos]},
            "steps": track.steps[:n][rows].tolist(),
            "target_prob": _sig_list(track.prob[rows, pos]),
            "target_rank": [r if r >= 1 else None for r in track.rank[rows, pos].tolist()],
            "loss": _sig_list(track.loss[rows, pos]),
            "entropy": _sig_list(track.entropy[rows, pos]),
            "top1": top1,
            "top1_tokens": {str(t): dyn.vocab.get(t) for t in sorted({t for t in top1 if t is not None})},
            "learned_at": since1 if since1 >= 0 else None,
            "learned_at_top5": since5 if since5 >= 0 else None,
            "forgotten": [{"step": int(r[2]), "since": int(r[3]), "last_top1": int(r[4])} for r in mine],
            "num_steps": n,
        }


def learned_json(reader: Any, seq: int | None = None, limit: int = 100) -> dict[str, Any]:
    """Learned-at steps and forgetting events of a run::

        {"num_steps", "first_step", "last_step",
         "per_step": {"steps": [int], "learned": [int], "gained": [int], "forgotten": [int]},
         "sequences": [{"seq", "name", "label", "tokens": [str], "targets": [str|null],
                        "learned_at": [int|null], "learned_at_top5": [int|null],
                        "times_forgotten": [int]}],     # lists indexed by position
         "forgetting": {"total": int, "events": [{"seq", "pos", "step", "since", "last_top1"}]}}

    ``events`` holds the ``limit`` most recent events (of sequence ``seq`` when given).
    IndexError when ``seq`` does not exist.
    """
    with _synced(reader) as state:
        dyn = state.dyn
        tracks = dyn.tracks if seq is None else [dyn.track(seq)]
        ev = dyn.events()
        if seq is not None:
            ev = ev[ev[:, 0] == seq]
        steps = dyn.steps.view()
        recent = ev[len(ev) - min(len(ev), max(limit, 0)):] if len(ev) else ev
        return {
            "num_steps": len(steps),
            "first_step": int(steps[0]) if len(steps) else None,
            "last_step": int(steps[-1]) if len(steps) else None,
            "per_step": {k: v.tolist() for k, v in dyn.per_step().items()},
            "sequences": [{
                "seq": t.number, "name": t.name, "label": t.label(),
                "tokens": t.tokens[:t.width], "targets": list(t.target_str),
                "learned_at": [s if s >= 0 else None for s in t.since1.tolist()],
                "learned_at_top5": [s if s >= 0 else None for s in t.since5.tolist()],
                "times_forgotten": t.times_forgotten.tolist(),
            } for t in tracks],
            "forgetting": {"total": int(len(ev)), "events": [
                {"seq": int(r[0]), "pos": int(r[1]), "step": int(r[2]), "since": int(r[3]), "last_top1": int(r[4])}
                for r in recent.tolist()]},
        }


def previous_step(reader: Any, step: int) -> int | None:
    """The logged step just before ``step``, or None."""
    steps = reader.steps
    i = bisect.bisect_left(steps, step, key=_STEP)
    return steps[i - 1].step if i else None


def diff_json(reader: Any, a: int, b: int, *, limit: int = 20, per_token: bool = False) -> dict[str, Any]:
    """Compare steps ``a`` and ``b`` of a run (KeyError naming the step when one is missing)::

        {"a", "b", "loss_a", "loss_b",
         "divergence": {"name": "js_topk_other", "label", "description"},
         "summary": {"compared", "improved", "worsened", "wrong_to_right", "right_to_wrong",
                     "mean_delta_logp", "mean_divergence"},
         "sequences": [{"seq", "name", "index_a", "index_b"}],   # sequences logged at both steps
         "learned":   [row],  # top-1 at b, not at a; biggest Δ log p first
         "forgotten": [row],  # top-1 at a, not at b; most negative Δ log p first
         "worsened":  [row],  # Δ log p < 0, most negative first (= biggest loss increase)
         "improved":  [row],  # Δ log p > 0, biggest first
         "per_token": [{"seq", "index_b", "positions": [int], "delta_logp": [float|null],
                        "delta_rank": [int|null], "divergence": [float|null],
                        "flip": [1|0|-1]}]}                        # only with per_token

        row = {"seq", "name", "index", "pos", "context", "token", "target", "p_a", "p_b",
               "rank_a", "rank_b", "delta_logp", "delta_rank", "divergence",
               "top1_a", "top1_b", "flip"}

    Δ log p = log p_b(target) - log p_a(target) (natural log; minus the change in token
    loss); Δ rank = rank_b - rank_a (negative: better); flip = +1 wrong→right, -1
    right→wrong. Each list holds at most ``limit`` rows. ``index`` is the sequence's
    index in entry ``b``; ``context`` is up to six tokens ending with the one predicting.
    """
    with _synced(reader) as state:
        key = (a, b, limit, per_token)
        cached = state.diffs.get(key)
        if cached is not None:
            return cached
        entries = []
        for step in (a, b):
            entry = reader.get_step(step)
            if entry is None:
                raise KeyError(step)
            entries.append(entry)
        dyn = state.dyn
        out = compare(entries[0], entries[1], limit=limit, per_token=per_token, number=dyn.number_of)
        if len(state.diffs) >= 16:
            state.diffs.pop(next(iter(state.diffs)))
        state.diffs[key] = out
        return out
