"""THE reader of a logged entry: every consumer asks this module what an entry says.

An entry (one JSONL line, see ``training_data.schema.json``) holds sequences, and each
sequence predictions. This module knows every form they come in and turns them into
the same facts:

- **Candidates**: ``[id, token, p]`` triples (what the converter writes) or objects
  (the original seq-viz form), in ``top_k`` and, in original files, the longer
  ``top_20``: :func:`candidates`, :func:`first_candidate`.
- **Derived fields**: ``target_prob`` / ``target_rank`` / ``loss`` / ``correct`` may be
  absent; they are read off the candidates when the target is among them. When it is
  not, the rank is unknown but bounded: ``rank > n`` and ``p < p_n`` for the ``n``
  candidates logged (``rank_gt`` / ``p_lt``): :func:`facts` says all of it for one
  prediction, :func:`columns` gives one sequence's predictions as NumPy arrays.
- **Identity**: a sequence is the same across steps when it has the same ``name``, else
  the same ``token_ids``, else the same ``tokens``: :func:`sequence_key`.
"""

from __future__ import annotations

import json
import math
import operator
import zlib
from dataclasses import dataclass
from itertools import chain
from typing import Any, Hashable, Iterable

import numpy as np

__all__ = ["Candidate", "Facts", "Columns", "KnownIds", "facts", "candidates", "candidate_lists", "first_candidate", "columns", "sequence_key",
           "text_checksum", "targets", "by_position", "is_int", "is_num"]

_FIELDS = operator.itemgetter("position", "target_prob", "target_rank", "loss", "entropy")
_TOP = operator.itemgetter("top_k")
_FIRST = operator.itemgetter(0)
_MAX_POSITIONS = 1 << 20
_MAX_KNOWN = 1 << 24  # token ids below this have their display string looked up


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
    """``[id, token, p]`` (or the original format's ``{"token_id", "token_str", "prob"}``) as a tuple, or None."""
    if isinstance(c, (list, tuple)) and len(c) >= 3:
        cid, token, p = c[0], c[1], c[2]
    elif isinstance(c, dict):
        cid, token, p = c.get("token_id"), c.get("token_str"), c.get("prob")
    else:
        return None
    return (cid, token if isinstance(token, str) else None, float(p)) if is_int(cid) and is_num(p) else None


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


@dataclass(frozen=True)
class Facts:
    """What one prediction says, whatever form it was logged in (see :func:`facts`).

    ``prob`` / ``rank`` / ``loss`` / ``entropy`` / ``correct`` are None when unknown.
    When the target is not among the ``n`` logged candidates (and no rank was logged),
    ``rank_gt = n`` and ``p_lt`` = the last candidate's p: the rank is more than
    ``rank_gt`` and, unless ``prob`` was logged or derived from ``loss``, p(target) is
    below ``p_lt``. Both are None when the rank is known.
    """

    target: int
    prob: float | None
    rank: int | None
    loss: float | None
    entropy: float | None
    correct: bool | None
    top: list[Candidate]
    rank_gt: int | None = None
    p_lt: float | None = None


def facts(pred: dict[str, Any]) -> Facts:
    """THE reading of one prediction: logged fields where present, else derived from the
    candidates (p and rank of the target among them, ``loss = -log p``, ``correct`` from
    the top-1), else bounded (``rank_gt`` / ``p_lt``). Never raises on odd data."""
    top = candidates(pred)
    target = pred.get("target_token_id")
    target = target if is_int(target) else -1
    where = next((i for i, c in enumerate(top) if c[0] == target), None)
    prob = pred.get("target_prob")
    prob = float(prob) if is_num(prob) and 0 <= prob <= 1 else (top[where][2] if where is not None else None)
    loss = pred.get("loss")
    loss = float(loss) if is_num(loss) and loss >= 0 else None
    if loss is None and prob is not None and prob > 0:
        loss = -math.log(prob)
    elif prob is None and loss is not None:
        prob = math.exp(-loss)
    rank = pred.get("target_rank")
    rank = rank if is_int(rank) and rank >= 1 else (where + 1 if where is not None else None)
    correct = pred.get("correct")
    if not isinstance(correct, bool):
        correct = rank == 1 if rank is not None else (top[0][0] == target if top else None)
    entropy = pred.get("entropy")
    bounded = rank is None and bool(top)
    return Facts(target, prob, rank, loss, float(entropy) if is_num(entropy) else None, correct, top,
                 len(top) if bounded else None, top[-1][2] if bounded else None)


def first_candidate(pred: Any) -> Candidate | None:
    """The most likely logged candidate of one prediction (``candidates(pred)[0]``), or None."""
    best: list[Any] = []
    for field in ("top_k", "top_20"):
        value = pred.get(field) if isinstance(pred, dict) else None
        if isinstance(value, list) and len(value) > len(best):
            best = value
    return next((c for c in map(_candidate, best) if c is not None), None)


def is_int(x: Any) -> bool:
    """An int that fits NumPy's int64 (larger ids, positions or ranks count as malformed)."""
    return isinstance(x, int) and not isinstance(x, bool) and -(1 << 63) <= x < (1 << 63)


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Columns:
    """One logged sequence's predictions as arrays, one item per prediction.

    ``prob``/``loss``/``entropy`` are NaN and ``rank`` is 0 where unknown; ``top1`` is
    the most likely token id (-1 when no candidates were logged); ``target`` is the
    target token id (None when not read: a step's targets are read once per text, see
    :func:`targets`); ``index`` is the prediction's index in the ``predictions`` list.
    ``rank_gt`` / ``p_lt`` hold :class:`Facts`' bound where the target is not among the
    logged candidates (0 / NaN elsewhere), or are None when no prediction is bounded.
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
    rank_gt: np.ndarray | None = None
    p_lt: np.ndarray | None = None

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
    try:  # files written by the converter: every field present, of the types and in the ranges facts() takes
        values = list(chain.from_iterable(map(_FIELDS, preds)))
        if not (set(map(type, values)) <= {int, float} and set(map(type, values[0::5])) <= {int}
                and set(map(type, values[2::5])) <= {int}):
            raise TypeError("odd field types")
        flat = np.array(values, dtype=np.float64).reshape(n, 5)
        firsts = list(map(_FIRST, map(_TOP, preds)))
        if n and not (set(map(type, firsts)) <= {list} and min(map(len, firsts)) >= 3) \
                or any("top_20" in p for p in preds):  # facts() reads the longer of top_k and top_20
            raise ValueError("odd first candidate")
        ids, first_p = list(map(_FIRST, firsts)), list(map(_THIRD, firsts))
        # the first candidate as facts() reads it: [int id, token, finite p]
        if not (set(map(type, ids)) <= {int} and set(map(type, first_p)) <= {int, float}
                and np.isfinite(np.array(first_p, dtype=np.float64)).all()):
            raise ValueError("odd first candidate")
        top1 = np.array(ids, dtype=np.int64)
        if n and not (np.isfinite(flat).all() and flat[:, 2].min() >= 1 and flat[:, 3].min() >= 0
                      and flat[:, 1].min() >= 0 and flat[:, 1].max() <= 1 and np.abs(flat[:, [0, 2]]).max() < 2.0 ** 63):
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
                         for f in ("pos", "prob", "rank", "loss", "entropy", "top1", "target", "index")),
                       rank_gt=None if cols.rank_gt is None else cols.rank_gt[keep],
                       p_lt=None if cols.p_lt is None else cols.p_lt[keep])
    return cols


def _columns_slow(preds: list[Any]) -> Columns:
    rows = []
    bounds = []
    for index, pred in enumerate(preds):
        if not isinstance(pred, dict) or not is_int(pred.get("position")):
            continue
        f = facts(pred)
        rows.append((pred["position"], math.nan if f.prob is None else f.prob, f.rank or 0,
                     math.nan if f.loss is None else f.loss, math.nan if f.entropy is None else f.entropy,
                     f.top[0][0] if f.top else -1, f.target, index))
        bounds.append((f.rank_gt or 0, math.nan if f.p_lt is None else f.p_lt))
    if not rows:
        e = np.zeros(0)
        i = np.zeros(0, dtype=np.int64)
        return Columns(i, e, i, e, e, i, i, i)
    pos, prob, rank, loss, entropy, top1, target, index = (np.array(c) for c in zip(*rows))
    rank_gt, p_lt = (np.array(c) for c in zip(*bounds))
    bounded = bool(rank_gt.any())
    return Columns(pos.astype(np.int64), prob.astype(np.float64), rank.astype(np.int64), loss.astype(np.float64),
                   entropy.astype(np.float64), top1.astype(np.int64), target.astype(np.int64), index.astype(np.int64),
                   rank_gt=rank_gt.astype(np.int64) if bounded else None, p_lt=p_lt.astype(np.float64) if bounded else None)


def targets(seq: dict[str, Any]) -> dict[int, tuple[int, str | None]]:
    """Position -> (target token id or -1, target display string or None) of a logged sequence."""
    out: dict[int, tuple[int, str | None]] = {}
    for pred in seq.get("predictions") or ():
        if isinstance(pred, dict) and is_int(pred.get("position")):
            tid, tstr = pred.get("target_token_id"), pred.get("target_token_str")
            out[pred["position"]] = (tid if is_int(tid) else -1, tstr if isinstance(tstr, str) else None)
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
        before; marks them. One pass over the predictions (or a step view's top-1 column),
        and only when there are some."""
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
        preds = seq.get("predictions")
        view = seq["view"] if preds is None else None  # a step view's sequence: its top-1 strings in a column
        for i, t in zip(cols.index[new].tolist(), top[new].tolist()):
            first = first_candidate(preds[i]) if view is None else (t, view["top1_str"][i])
            if first is not None and first[1] is not None:
                out.setdefault(t, first[1])
        self.marks[top[ok]] = True
        return out


def by_position(seq: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["position"]: p for p in seq.get("predictions") or () if isinstance(p, dict) and is_int(p.get("position"))}

