"""The step view: what the dashboard draws of a logged entry, without the candidates.

A step of 8 sequences x 2,048 tokens with a top-20 per position is ~10 MB of JSON;
the token grid, the figures and the charts need only a few numbers per position. The
view keeps every field of the entry and of its sequences except ``predictions``, and
gives each sequence a ``view``: its predictions as columns, one item per prediction,
read by :func:`seqviz_trackers.format.entry.facts` (logged fields, else derived, else
bounded)::

    {"position": [...], "target_token_id": [...], "target_token_str": [...],
     "target_prob": [...], "target_rank": [...], "loss": [...], "entropy": [...],
     "correct": [...], "top1_id": [...], "top1_str": [...], "top1_p": [...],
     "rank_gt": [...], "p_lt": [...]}          # (the last two only when some target is bounded)

``None`` where a value is unknown. The candidates of one prediction are asked for when
they are shown (:func:`candidates_at`, the ``candidates`` route). A page that carries
its data (an export, a W&B panel) holds them all in columns beside the view
(``with_candidates=True``): ``"candidates": {"n": [per prediction], "id": [...], "p": [...]}``
per sequence and the display strings once per step in ``"candidate_strings": {id: token}``
(a sequence whose strings do not follow one id -> string table carries ``"token": [...]``).

The dashboard reads the view in ``web/entry.js`` (``readStep``, ``candidatesAt``);
:func:`view_columns` reads a sequence's view as
:func:`~seqviz_trackers.format.entry.columns` reads its predictions, which is all the
training-dynamics tracks and a diff without divergences read (with :func:`view_targets`
and the top-1 strings).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from .entry import _MAX_POSITIONS, Columns, Facts, by_position, candidate_lists, candidates, columns, facts, is_int, is_num

__all__ = ["VIEW_FIELDS", "step_view", "sequence_view", "candidates_at", "is_view", "view_columns", "sequence_columns",
           "view_targets"]

#: The columns of a sequence's ``view`` (``rank_gt`` / ``p_lt`` only when some target is bounded).
VIEW_FIELDS = ("position", "target_token_id", "target_token_str", "target_prob", "target_rank", "loss", "entropy",
               "correct", "top1_id", "top1_str", "top1_p")


def _facts(pred: dict[str, Any]) -> Facts:
    """:func:`facts` of ``pred``, reading only its first candidate when that says it all
    (the target's p and rank are logged): the same facts, without the rest of the list."""
    top = pred.get("top_k")
    p, rank = pred.get("target_prob"), pred.get("target_rank")
    if ("top_20" not in pred and isinstance(top, list) and len(top) > 1
            and is_num(p) and 0 <= p <= 1 and is_int(rank) and rank >= 1):
        first = facts({**pred, "top_k": top[:1]})
        if first.rank is not None and first.prob is not None and first.top:
            return first
    return facts(pred)


def _predictions(seq: dict[str, Any]) -> list[dict[str, Any]]:
    preds = seq.get("predictions")
    return [p for p in preds if isinstance(p, dict) and is_int(p.get("position"))] if isinstance(preds, list) else []


_FAST = operator.itemgetter("position", "target_token_id", "target_token_str", "target_prob", "target_rank", "entropy",
                            "top_k")
_FIRST = operator.itemgetter(0)
_GET_LOSS = operator.methodcaller("get", "loss")
_GET_CORRECT = operator.methodcaller("get", "correct")


def _fast_columns(preds: list[Any]) -> dict[str, list[Any]] | None:
    """The view's columns of the converter's predictions, read in bulk: every field present
    with exactly its JSON type (``loss`` and ``correct`` may be absent), the target's p in
    [0, 1] and rank >= 1 logged, a first candidate ``[int, str, p]``, no ``top_20``. Then
    :func:`facts` takes every number as logged (``loss`` derived from p where absent) and
    only the first candidate matters: these are exactly the columns the prediction-by-
    prediction loop gives. None when some prediction is not of that form."""
    try:
        if not set(map(type, preds)) <= {dict} or any("top_20" in p for p in preds):
            return None
        position, target, target_str, prob, rank, entropy, tops = (list(c) for c in zip(*map(_FAST, preds))) \
            if preds else ([], [], [], [], [], [], [])
        losses, correct = list(map(_GET_LOSS, preds)), list(map(_GET_CORRECT, preds))
        if not (set(map(type, position)) <= {int} and set(map(type, target)) <= {int} and set(map(type, target_str)) <= {str}
                and set(map(type, prob)) <= {float, int} and set(map(type, rank)) <= {int}
                and set(map(type, entropy)) <= {float, int} and set(map(type, losses)) <= {float, int, type(None)}
                and set(map(type, tops)) <= {list}):
            return None
        firsts = list(map(_FIRST, tops))  # IndexError: no candidate
        if not (set(map(type, firsts)) <= {list} and (not firsts or min(map(len, firsts)) >= 3)):
            return None
        top1_id, top1_str, top1_p = (list(map(operator.itemgetter(j), firsts)) for j in range(3))
        if not (set(map(type, top1_id)) <= {int} and set(map(type, top1_str)) <= {str} and set(map(type, top1_p)) <= {float, int}):
            return None
        for ints in (position, target, rank, top1_id):
            np.array(ints, dtype=np.int64)  # OverflowError: past int64, which is_int refuses
        p, e, first_p = (np.array(c, dtype=np.float64) for c in (prob, entropy, top1_p))
        given = [x for x in losses if x is not None]
        lo = np.array(given, dtype=np.float64)
        if not (((p >= 0) & (p <= 1)).all() and np.isfinite(e).all() and np.isfinite(first_p).all()
                and (np.array(rank, dtype=np.int64) >= 1).all() and (np.isfinite(lo) & (lo >= 0)).all()):
            return None
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        return None
    prob_f = p.tolist()
    loss = [float(x) if x is not None else (-math.log(q) if q > 0 else None) for x, q in zip(losses, prob_f)] \
        if len(given) < len(losses) or not set(map(type, given)) <= {float} else given
    return {"position": position, "target_token_id": target, "target_token_str": target_str, "target_prob": prob_f,
            "target_rank": rank, "loss": loss, "entropy": e.tolist(),
            "correct": [c if type(c) is bool else r == 1 for c, r in zip(correct, rank)],
            "top1_id": top1_id, "top1_str": top1_str, "top1_p": first_p.tolist()}


def _slow_columns(preds: list[dict[str, Any]]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {name: [] for name in VIEW_FIELDS}
    gt: list[Any] = []
    lt: list[Any] = []
    (position, target, target_str, prob, rank, loss, entropy, correct, top1_id, top1_str, top1_p) = cols.values()
    for pred in preds:
        f = _facts(pred)
        tid, tstr = pred.get("target_token_id"), pred.get("target_token_str")
        position.append(pred["position"])
        target.append(tid if is_int(tid) else None)
        target_str.append(tstr if isinstance(tstr, str) else None)
        prob.append(f.prob)
        rank.append(f.rank)
        loss.append(f.loss)
        entropy.append(f.entropy)
        correct.append(f.correct)
        top1_id.append(f.top[0][0] if f.top else None)
        top1_str.append(f.top[0][1] if f.top else None)
        top1_p.append(f.top[0][2] if f.top else None)
        gt.append(f.rank_gt)
        lt.append(f.p_lt)
    if any(g is not None for g in gt):
        cols["rank_gt"], cols["p_lt"] = gt, lt
    return cols


def sequence_view(seq: dict[str, Any], *, with_candidates: bool = False,
                  strings: dict[int, Any] | None = None) -> dict[str, Any]:
    """One logged sequence as the dashboard draws it (see the module docstring); never
    raises on odd data (predictions without an integer position are left out).
    ``strings``: the step's id -> display string table, filled with the candidates'."""
    preds = _predictions(seq)
    fast = _fast_columns(preds)
    cols = _slow_columns(preds) if fast is None else fast
    out = {k: v for k, v in seq.items() if k != "predictions"}
    out["view"] = cols
    if with_candidates:
        out["candidates"] = _candidate_columns(preds, strings if strings is not None else {})
    return out


def _candidate_columns(preds: list[dict[str, Any]], strings: dict[int, Any]) -> dict[str, Any]:
    counts, ids, tokens, probs = candidate_lists(preds, range(len(preds)))
    id_list = ids.tolist()
    own = False
    for cid, token in zip(id_list, tokens):
        if strings.setdefault(cid, token) != token:
            own = True
    out: dict[str, Any] = {"n": counts.tolist(), "id": id_list, "p": probs.tolist()}
    if own:
        out["token"] = list(tokens)
    return out


def step_view(entry: dict[str, Any], *, with_candidates: bool = False) -> dict[str, Any]:
    """A logged entry as the dashboard draws it: every field, each sequence as
    :func:`sequence_view`; with ``with_candidates``, every prediction's candidates too
    (in columns, see the module docstring). Never raises on odd data."""
    strings: dict[int, Any] = {}
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "sequences" and isinstance(value, list):
            value = [sequence_view(s, with_candidates=with_candidates, strings=strings) if isinstance(s, dict) else s
                     for s in value]
        out[key] = value
    if with_candidates:
        out["candidate_strings"] = {str(k): v for k, v in strings.items()}
    return out


def candidates_at(entry: dict[str, Any], seq: int, pos: int) -> list[list[Any]] | None:
    """The logged candidates of the prediction at position ``pos`` of sequence ``seq``
    (its place in the entry) as ``[id, token, p]`` lists, most likely first (what
    :func:`~seqviz_trackers.format.entry.candidates` reads); None when there is no such prediction.
    ``entry``: a logged entry, or its :func:`step_view` with its candidates."""
    seqs = entry.get("sequences")
    if not isinstance(seqs, list) or not 0 <= seq < len(seqs) or not isinstance(seqs[seq], dict):
        return None
    cand = seqs[seq].get("candidates")
    if cand is None:
        pred = by_position(seqs[seq]).get(pos)
        return None if pred is None else [list(c) for c in candidates(pred)]
    positions = seqs[seq]["view"]["position"]
    if pos not in positions:
        return None
    i = positions.index(pos)
    lo = sum(cand["n"][:i])
    hi = lo + cand["n"][i]
    strings = entry.get("candidate_strings") or {}
    tokens = cand["token"][lo:hi] if "token" in cand else [strings.get(str(c)) for c in cand["id"][lo:hi]]
    return [[c, t, p] for c, t, p in zip(cand["id"][lo:hi], tokens, cand["p"][lo:hi])]


def view_columns(seq: dict[str, Any]) -> Columns | None:
    """A sequence of a :func:`step_view` as :class:`~seqviz_trackers.format.entry.Columns`:
    what :func:`~seqviz_trackers.format.entry.columns` gives of the logged sequence (with its
    targets), read off the view's lists in bulk. None when ``seq`` holds no well-formed view."""
    cols = seq.get("view") if isinstance(seq, dict) else None
    if not isinstance(cols, dict):
        return None
    bounded = "rank_gt" in cols
    names = ("position", "target_prob", "target_rank", "loss", "entropy", "top1_id", "target_token_id") + \
        (("rank_gt", "p_lt") if bounded else ())
    lists = [cols.get(k) for k in names + ("top1_str", "target_token_str")]
    if not all(isinstance(c, list) for c in lists) or len({len(c) for c in lists}) != 1:
        return None
    lists = lists[:len(names)]
    try:
        pos, prob, rank, loss, entropy, top1, target, *bound = (np.array(c, dtype=np.float64) for c in lists)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(pos).all() and (pos == np.round(pos)).all()):
        return None

    def ints(a: np.ndarray, unknown: int) -> np.ndarray:
        return np.where(np.isnan(a), unknown, a).astype(np.int64)

    tokens = seq.get("tokens")
    limit = min(len(tokens) if isinstance(tokens, list) else 0, _MAX_POSITIONS)
    n = len(pos)
    index = np.arange(n)
    contiguous = n <= limit and bool((pos == index).all())
    out = Columns(index if contiguous else pos.astype(np.int64), prob, ints(rank, 0), loss, entropy, ints(top1, -1),
                  ints(target, -1), index, contiguous,
                  rank_gt=ints(bound[0], 0) if bounded else None, p_lt=bound[1] if bounded else None)
    if n and not contiguous and (pos.min() < 0 or pos.max() >= limit):  # as columns() does
        keep = (pos >= 0) & (pos < limit)
        out = Columns(*(getattr(out, f)[keep] for f in ("pos", "prob", "rank", "loss", "entropy", "top1", "target",
                                                        "index")),
                      rank_gt=None if out.rank_gt is None else out.rank_gt[keep],
                      p_lt=None if out.p_lt is None else out.p_lt[keep])
    return out


def is_view(seq: dict[str, Any]) -> bool:
    """Whether ``seq`` is a sequence of a :func:`step_view` (a view, no predictions)."""
    return "predictions" not in seq and isinstance(seq.get("view"), dict)


def sequence_columns(seq: dict[str, Any]) -> Columns:
    """:func:`view_columns` of a step view's sequence, else
    :func:`~seqviz_trackers.format.entry.columns` of a logged one (empty for a view that is
    not well-formed: it has no predictions)."""
    cols = view_columns(seq) if is_view(seq) else None
    return columns(seq) if cols is None else cols


def view_targets(seq: dict[str, Any]) -> dict[int, tuple[int, str | None]]:
    """:func:`~seqviz_trackers.format.entry.targets` of a step view's sequence (none when its
    view is not well-formed)."""
    view = seq["view"]
    lists = [view.get(k) for k in ("position", "target_token_id", "target_token_str")]
    if not all(isinstance(c, list) for c in lists):
        return {}
    pos, ids, strs = lists
    if set(map(type, pos)) | set(map(type, ids)) <= {int} and len(pos) == len(ids) == len(strs):
        try:  # all plain ints (the view of a converter's entry): checked in bulk
            np.array(pos, dtype=np.int64), np.array(ids, dtype=np.int64)
        except OverflowError:
            pass
        else:
            return dict(zip(pos, zip(ids, (s if type(s) is str else None for s in strs))))
    return {p: (t if is_int(t) else -1, s if isinstance(s, str) else None)
            for p, t, s in zip(*lists) if is_int(p)}
