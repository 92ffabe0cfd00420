"""Comparing two logged steps position by position: :func:`compare`.

Change in log p(target), change in rank, top-1 flips, and a divergence between the
two predicted distributions (see :data:`DIVERGENCE`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Hashable, Iterable, NamedTuple, Sequence

import numpy as np

from ..format.entry import Candidate, Columns, by_position, candidates, columns, facts, is_num, sequence_key
from ..format.view import is_view, view_columns

__all__ = ["DIVERGENCE", "Logged", "compare", "compare_logged", "record_sequences", "js_topk_other", "logp", "sig",
           "sig_list", "token_context"]

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
#: Log-probabilities are floored here when only a probability of 0 is known.
_LOGP_FLOOR = math.log(1e-30)


def logp(loss: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """log p(target): minus the loss (more precise for tiny p), else log of the probability."""
    loss, prob = np.asarray(loss, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(np.isnan(loss), np.log(prob), -loss)
    return np.maximum(out, _LOGP_FLOOR)



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


def sig(x: Any, digits: int = 4) -> Any:
    """A float rounded to ``digits`` significant digits for JSON, or None for NaN."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def sig_list(values: Iterable[Any]) -> list[Any]:
    """:func:`sig` of each value (numbers or None), the same floats, rounded in NumPy.

    A value ``v`` with 4 significant digits at decimal exponent ``e`` is ``n / 10**(3 - e)``
    for an integer ``n``: ``rint(v * 10**(3 - e))`` gives ``n`` unless ``v * 10**(3 - e)`` lies
    within rounding error of a tie, and the division (exact powers of ten up to 1e22) rounds
    to the float nearest ``n``'s decimal, as ``float(f"{v:.4g}")`` does. Ties and values
    outside 1e-19..1e25 are formatted one by one."""
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).ravel()
    finite = np.isfinite(x)
    if not finite.any():
        return [None] * len(x)
    out = np.where(finite, x, 0.0)
    size = np.abs(out)
    k = 3 - np.floor(np.log10(np.where(size > 0, size, 1.0))).astype(np.int64)
    slow = finite & (size > 0) & (np.abs(k) > 22)
    k = np.clip(k, -22, 22)
    scale = 10.0 ** np.abs(k)
    with np.errstate(over="ignore", invalid="ignore"):  # (values formatted one by one)
        scaled = np.where(k >= 0, out * scale, out / scale)
        whole = np.rint(scaled)
        slow |= np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-6
        out = np.where(k >= 0, whole / scale, whole * scale)
    out = np.where(size > 0, out, x)  # zeros keep their sign
    listed = out.tolist()
    for i in np.flatnonzero(slow).tolist():
        listed[i] = sig(x[i])
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            listed[i] = None
    return listed


def token_context(tokens: list[str], pos: int, before: int = 6) -> str:
    return "".join(t for t in tokens[max(0, pos - before + 1):pos + 1] if isinstance(t, str))


class _At(NamedTuple):
    """What a diff row shows of one side's prediction beyond its columns."""

    top1: str | None     # the first candidate's display string
    target: Any          # the target's display string as logged
    prob: float | None   # p(target), None when only bounded
    rank_gt: int | None
    p_lt: float | None


def _side(seq: dict[str, Any], divergence: bool) -> tuple[Columns, Callable[[int], _At]]:
    """A sequence's :class:`Columns` and what a row shows of its prediction at a position,
    from its predictions or, without ``divergence``, from its step view where it has one."""
    cols = view_columns(seq) if not divergence and is_view(seq) else None
    if cols is None:
        preds: dict[int, dict[str, Any]] = {}

        def at(p: int) -> _At:
            if not preds:
                preds.update(by_position(seq))
            f = facts(preds[p])
            return _At((f.top or [(-1, None, 0.0)])[0][1], preds[p].get("target_token_str"), f.prob, f.rank_gt, f.p_lt)
        return columns(seq), at
    view = seq["view"]
    where: dict[int, int] = {}

    def at_view(p: int) -> _At:
        if not where:
            where.update(zip(view["position"], range(len(view["position"]))))
        i = where[p]
        bounded = "rank_gt" in view
        return _At(view["top1_str"][i] if isinstance(view.get("top1_str"), list) else None,
                   view["target_token_str"][i] if isinstance(view.get("target_token_str"), list) else None,
                   view["target_prob"][i], view["rank_gt"][i] if bounded else None, view["p_lt"][i] if bounded else None)
    return cols, at_view


class Logged(NamedTuple):
    """One logged sequence as a diff reads it: ``side()`` gives its :class:`Columns` and what a
    row shows of its prediction at a position, ``seq()`` the sequence itself (its tokens, and
    its candidates for the divergences). Both are called only when needed."""

    key: Hashable
    side: Callable[[], tuple[Columns, Callable[[int], _At]]]
    seq: Callable[[], dict[str, Any]]


def _logged(seqs: list[dict[str, Any]], divergence: bool) -> list[Logged]:
    def one(s: dict[str, Any]) -> Logged:
        return Logged(sequence_key(s), lambda: _side(s, divergence), lambda: s)
    return [one(s) for s in seqs]


def record_sequences(seqs: list[tuple[Hashable, Columns]], entry: Callable[[], dict[str, Any]]) -> list[Logged]:
    """The sequences of a step read from its columns record: per sequence its key and its
    :class:`Columns`, in the order of the entry's sequences. ``entry()`` reads the step (or
    its step view), once, and only when a diff row needs it: the numbers come from the columns."""
    entry = functools.cache(entry)

    @functools.cache
    def logged(i: int) -> dict[str, Any]:
        return [s for s in entry().get("sequences") or () if isinstance(s, dict)][i]

    @functools.cache
    def at(i: int) -> Callable[[int], _At]:
        return _side(logged(i), False)[1]

    def one(i: int, key: Hashable, cols: Columns) -> Logged:
        return Logged(key, lambda: (cols, lambda p: at(i)(p)), lambda: logged(i))
    return [one(i, key, cols) for i, (key, cols) in enumerate(seqs)]


def _at_positions(sa: dict[str, Any], sb: dict[str, Any], positions: list[int]) -> tuple[list[Any], list[Any]]:
    preds_a, preds_b = by_position(sa), by_position(sb)
    return [preds_a[p] for p in positions], [preds_b[p] for p in positions]


def compare(entry_a: dict[str, Any], entry_b: dict[str, Any], *, limit: int = 20, per_token: bool = False,
            number: Callable[[dict[str, Any]], int | None] | None = None, divergence: bool = True) -> dict[str, Any]:
    """Compare the predictions of two entries, position by position (see :func:`diff_json` for the shape).

    Sequences are matched by :func:`sequence_key`, positions by ``position``. ``number``
    gives the ``seq`` reported for a sequence (default: its index in ``entry_b``). Without
    ``divergence`` the divergences are not computed (null): of a prediction's candidates only
    the first is read, and only for the rows listed; an entry may then be a
    :func:`~seqviz_trackers.format.view.step_view` (its sequences' views are read in bulk,
    the same diff).
    """
    seqs_a, seqs_b = ([s for s in e.get("sequences") or () if isinstance(s, dict)] for e in (entry_a, entry_b))
    return compare_logged((entry_a.get("step"), entry_a.get("loss"), _logged(seqs_a, divergence)),
                          (entry_b.get("step"), entry_b.get("loss"), _logged(seqs_b, divergence)), limit=limit,
                          per_token=per_token, number=(lambda s: number(s.seq())) if number is not None else None,
                          divergence=divergence)


def compare_logged(step_a: tuple[Any, Any, list[Logged]], step_b: tuple[Any, Any, list[Logged]], *, limit: int = 20,
                   per_token: bool = False, number: Callable[[Logged], int | None] | None = None,
                   divergence: bool = True) -> dict[str, Any]:
    """:func:`compare` of two steps given as ``(step, loss, [Logged])``."""
    (a, loss_a, seqs_a), (b, loss_b, seqs_b) = step_a, step_b
    index_a: dict[Hashable, int] = {}
    for i, s in enumerate(seqs_a):
        index_a.setdefault(s.key, i)
    sequences, per, parts = [], [], []
    for ib, sb in enumerate(seqs_b):
        ia = index_a.get(sb.key)
        if ia is None:
            continue
        sa = seqs_a[ia]
        seq_no = number(sb) if number is not None else ib
        name = sb.key[1] if sb.key[0] == "name" else None
        sequences.append({"seq": seq_no, "name": name, "index_a": ia, "index_b": ib})
        (ca, at_a), (cb, at_b) = sa.side(), sb.side()
        common, ja, jb = np.intersect1d(ca.pos, cb.pos, return_indices=True)
        part = {
            "k": np.full(len(common), len(parts)), "pos": common,
            "p_a": ca.prob[ja], "p_b": cb.prob[jb], "rank_a": ca.rank[ja], "rank_b": cb.rank[jb],
            "d_logp": logp(cb.loss, cb.prob)[jb] - logp(ca.loss, ca.prob)[ja],
            "div": (_divergences(*_at_positions(sa.seq(), sb.seq(), common.tolist())) if divergence
                    else np.full(len(common), np.nan)),
        }
        parts.append((part, seq_no, name, ib, sb, at_a, at_b))
        if per_token:
            known = (part["rank_a"] >= 1) & (part["rank_b"] >= 1)
            flip = (part["rank_b"] == 1).astype(np.int64) - (part["rank_a"] == 1)
            per.append({"seq": seq_no, "index_b": ib, "positions": common.tolist(),
                        "delta_logp": sig_list(part["d_logp"]),
                        "delta_rank": np.where(known, part["rank_b"].astype(np.int64) - part["rank_a"], None).tolist(),
                        "divergence": sig_list(part["div"]), "flip": flip.tolist()})

    cat = {f: np.concatenate([p[0][f] for p in parts]) if parts else np.zeros(0) for f in
           ("k", "pos", "p_a", "p_b", "rank_a", "rank_b", "d_logp", "div")}
    d_logp, div = cat["d_logp"], cat["div"]
    flip = (cat["rank_b"] == 1).astype(np.int64) - (cat["rank_a"] == 1)
    known_d = ~np.isnan(d_logp)
    nothing = np.zeros(0, dtype=np.int64)  # (no rows asked for: no order needed)
    # biggest gain first, biggest loss first
    order_up = np.argsort(-np.where(known_d, d_logp, -np.inf), kind="stable") if limit else nothing
    order_down = np.argsort(np.where(known_d, d_logp, np.inf), kind="stable") if limit else nothing

    def row(i: int) -> dict[str, Any]:
        part, seq_no, name, ib, sb, at_a, at_b = parts[int(cat["k"][i])]
        p = int(cat["pos"][i])
        tokens = sb.seq().get("tokens")
        tokens = tokens if isinstance(tokens, list) else []
        ra, rb = int(cat["rank_a"][i]), int(cat["rank_b"][i])
        fa, fb = at_a(p), at_b(p)
        target = fb.target
        return {
            "seq": seq_no, "name": name, "index": ib, "pos": p,
            "context": token_context(tokens, p), "token": tokens[p] if p < len(tokens) else None,
            "target": target if isinstance(target, str) else None,
            "p_a": sig(cat["p_a"][i]), "p_b": sig(cat["p_b"][i]),
            "rank_a": ra or None, "rank_b": rb or None,
            "delta_logp": sig(d_logp[i]), "delta_rank": rb - ra if ra and rb else None,
            "divergence": sig(div[i]), "top1_a": fa.top1, "top1_b": fb.top1,
            "flip": int(flip[i]),
            # a target outside the logged candidates: rank > rank_gt, p < p_lt (when p is not known itself)
            "rank_gt_a": fa.rank_gt if not ra else None, "rank_gt_b": fb.rank_gt if not rb else None,
            "p_lt_a": sig(fa.p_lt) if fa.prob is None else None, "p_lt_b": sig(fb.p_lt) if fb.prob is None else None,
        }

    def pick(order: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
        return [row(i) for i in order[mask[order]][:limit].tolist()]

    out: dict[str, Any] = {
        "a": a, "b": b,
        "loss_a": sig(loss_a, 6) if is_num(loss_a) else None,
        "loss_b": sig(loss_b, 6) if is_num(loss_b) else None,
        "divergence": DIVERGENCE,
        "summary": {
            "compared": int(len(d_logp)),
            "improved": int((d_logp[known_d] > 0).sum()),
            "worsened": int((d_logp[known_d] < 0).sum()),
            "wrong_to_right": int((flip == 1).sum()),
            "right_to_wrong": int((flip == -1).sum()),
            "mean_delta_logp": sig(d_logp[known_d].mean()) if known_d.any() else None,
            "mean_divergence": sig(np.nanmean(div)) if (~np.isnan(div)).any() else None,
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

