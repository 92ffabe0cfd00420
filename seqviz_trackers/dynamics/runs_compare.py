"""Two runs compared token by token: :func:`compare_runs_json` and the ``compare_runs`` route.

Built on each run's :class:`~seqviz_trackers.dynamics.tracks.Dynamics` (through
:func:`~seqviz_trackers.dynamics.cache.synced`), vectorised with NumPy:

- **Probes** are matched across the runs by :func:`~seqviz_trackers.format.entry.sequence_key`
  (the name, else the token ids). A matched pair is compared only when its text is the
  same (the same tokens, and the same token ids when both runs logged them); otherwise it
  is reported as ``different_text`` (another tokenizer, or another probe text) and none of
  its tokens are compared.
- **Steps** are aligned by number: each run is read at its nearest logged step at or
  before the step asked for (``exact`` says whether it is that step).
- **Learned at** is taken *as of* each run's aligned step: the first step from which the
  target stays top-1 through the last step (up to the aligned one) where it was predicted.
  Run A is *ahead* on a token when it learned it earlier than B, or learned it and B did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from ..runs import BadRequest, NotFound, Query, Runs, int_param, parse_step
from .cache import synced
from .compare import logp, sig, sig_list, token_context

__all__ = ["compare_runs_json", "compare_runs_route", "LISTS"]

#: The lists of the response, in the order a viewer shows them.
LISTS = ("earlier_in_a", "earlier_in_b", "only_in_a", "only_in_b", "biggest_gap")


@dataclass
class _TrackAt:
    """One tracked sequence of a run, read up to the run's aligned step (views that later
    steps do not change: rows are only ever appended)."""

    seq: int
    name: str | None
    label: str
    tokens: list[str]
    token_ids: list[int] | None
    target: np.ndarray       # target id per position (-1 / -2: unknown)
    target_str: list[str | None]
    steps: np.ndarray        # [rows up to the aligned step]
    rank: np.ndarray         # [rows, width]
    present: np.ndarray      # [rows, width]
    logp_now: np.ndarray     # per position at the aligned step (NaN: not predicted there)
    prob_now: np.ndarray
    rank_now: np.ndarray     # 0: unknown / not predicted
    index: int | None        # the sequence's index in the entry at the aligned step

    @property
    def width(self) -> int:
        return self.rank.shape[1]

    def learned_at(self) -> np.ndarray:
        """Per position: the learned-at step as of the aligned step, or -1."""
        n = len(self.steps)
        if not n:
            return np.full(self.width, -1, dtype=np.int64)
        rows = np.arange(n)[:, None]
        last_miss = np.where(self.present & (self.rank != 1), rows, -1).max(0)  # the last step it was not top-1
        first = np.where(self.present & (rows > last_miss), rows, n).min(0)     # the first prediction after that
        return np.where(first < n, self.steps[np.minimum(first, n - 1)], -1)

    def predicted(self) -> np.ndarray:
        """Per position: predicted at some step up to the aligned one."""
        return self.present.any(0)


@dataclass
class _RunAt:
    name: str
    step: int              # the aligned step
    summary: dict[str, Any]
    tracks: dict[Hashable, _TrackAt]


def _run_at(reader: Any, name: str, step: int | None) -> _RunAt:
    """``reader``'s run read at its nearest logged step at or before ``step`` (default: its
    last step). KeyError naming the run when it has no such step."""
    with synced(reader) as state:
        dyn = state.dyn
        steps = dyn.steps.view()
        i = len(steps) - 1 if step is None else int(np.searchsorted(steps, step, side="right")) - 1
        if i < 0:
            raise KeyError(f"run {name!r} has no step at or before {step}" if len(steps) else f"run {name!r} has no steps yet")
        aligned = int(steps[i])
        in_entry = dyn.step_seqs[i]
        tracks = {}
        for key, t in dyn.tracks_by_key().items():
            rows = int(np.searchsorted(t.steps[:t.n], aligned, side="right"))
            width = t.width
            row = t.row_of.get(aligned)
            if row is not None:
                now_logp = logp(t.loss[row, :width], t.prob[row, :width])
                now_logp[~t.present[row, :width]] = np.nan
                now_prob, now_rank = t.prob[row, :width], np.where(t.present[row, :width], t.rank[row, :width], 0)
            else:
                now_logp = now_prob = np.full(width, np.nan)
                now_rank = np.zeros(width, dtype=np.int32)
            tracks[key] = _TrackAt(
                seq=t.number, name=t.name, label=t.label(), tokens=t.tokens, token_ids=t.token_ids,
                target=t.target.copy(), target_str=list(t.target_str), steps=t.steps[:rows],
                rank=t.rank[:rows, :width], present=t.present[:rows, :width],
                logp_now=now_logp, prob_now=now_prob, rank_now=now_rank,
                index=in_entry.index(t.number) if t.number in in_entry else None)
        summary = {"run": name, "step": aligned, "exact": step is None or aligned == step,
                   "num_steps": len(steps), "first_step": int(steps[0]), "last_step": int(steps[-1])}
        return _RunAt(name, aligned, summary, tracks)


def _text_difference(a: _TrackAt, b: _TrackAt) -> str | None:
    """Why two probes of the same name cannot be compared token by token, or None."""
    if a.token_ids is not None and b.token_ids is not None and a.token_ids != b.token_ids:
        what, x, y = "token ids", a.token_ids, b.token_ids
    elif a.tokens != b.tokens:
        what, x, y = "tokens", a.tokens, b.tokens
        if len(x) == len(y) and a.token_ids is not None and a.token_ids == b.token_ids:
            what = "token strings for the same ids (another tokenizer?)"
    else:
        return None
    first = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
    return f"different {what}: {len(x)} vs {len(y)} tokens, first difference at token {first}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _verdict(counts: dict[str, int]) -> str:
    """``"B ahead on 41 tokens, A on 7, 12 learned by neither"`` (and those learned at the same step)."""
    text = f"B ahead on {_plural(counts['b_ahead'], 'token')}, A on {counts['a_ahead']}"
    if counts["same"]:
        text += f", {counts['same']} learned at the same step"
    return text + f", {counts['neither']} learned by neither"


def _counts(la: np.ndarray, lb: np.ndarray) -> dict[str, int]:
    ka, kb = la >= 0, lb >= 0
    return {"compared": int(len(la)),
            "a_ahead": int((ka & (~kb | (la < lb))).sum()),
            "b_ahead": int((kb & (~ka | (lb < la))).sum()),
            "same": int((ka & kb & (la == lb)).sum()),
            "neither": int((~ka & ~kb).sum())}


def compare_runs_json(reader_a: Any, reader_b: Any, step: int | None = None, *, names: tuple[str, str] = ("A", "B"),
                      limit: int = 20, per_token: bool = False) -> dict[str, Any]:
    """Compare two runs token by token at ``step`` (default: run A's last step)::

        {"step": S,
         "a": {"run", "step", "exact", "num_steps", "first_step", "last_step"},   # A at its step <= S
         "b": {...},                                                               # B likewise
         "summary": {"matched", "different_text", "only_a", "only_b",             # probes
                     "compared", "a_ahead", "b_ahead", "same", "neither",          # tokens
                     "mean_delta_logp", "verdict"},
         "probes": [{"name", "label", "seq_a", "seq_b", "index_a",
                     "status": "matched" | "different_text" | "only_a" | "only_b",
                     "reason": str|null, "compared", "a_ahead", "b_ahead", "same", "neither",
                     "mean_delta_logp", "verdict": str|null}],
         "earlier_in_a": [row],  # learned in both, earlier in A; biggest head start first
         "earlier_in_b": [row],  # learned in both, earlier in B; biggest head start first
         "only_in_a":    [row],  # learned in A only; earliest first
         "only_in_b":    [row],  # learned in B only; earliest first
         "biggest_gap":  [row],  # predicted at both aligned steps; biggest |Δ log p| first
         "per_token": [{"seq_a", "index_a", "positions": [int], "delta_logp": [float|null]}]}  # with per_token

        row = {"seq_a", "seq_b", "name", "index_a", "pos", "context", "token", "target",
               "learned_a", "learned_b", "lead", "p_a", "p_b", "rank_a", "rank_b", "delta_logp"}

    ``learned_a`` / ``learned_b`` are learned-at steps as of each run's aligned step (null:
    not learned); ``lead`` = learned_b - learned_a (positive: A learned it that many steps
    earlier; null unless both learned it). Δ log p = log p_B(target) - log p_A(target) at
    the aligned steps (positive: B better). A probe's ``verdict`` reads "B ahead on 41
    tokens, A on 7, 12 learned by neither". ``index_a`` is the sequence's index in run A's
    entry at its aligned step (null when it was not logged there); ``seq_a`` / ``seq_b``
    its tracked number in each run. Only positions predicted in both runs, with the same
    target, are compared. KeyError (a message naming the run) when a run has no step at
    or before ``step``.
    """
    a = _run_at(reader_a, names[0], step)
    b = _run_at(reader_b, names[1], a.step if step is None else step)
    probes: list[dict[str, Any]] = []
    parts: list[tuple[dict[str, Any], _TrackAt, _TrackAt, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    empty = {"compared": 0, "a_ahead": 0, "b_ahead": 0, "same": 0, "neither": 0, "mean_delta_logp": None, "verdict": None}
    for key, ta in a.tracks.items():
        tb = b.tracks.get(key)
        probe = {"name": ta.name, "label": ta.label, "seq_a": ta.seq, "seq_b": tb.seq if tb else None,
                 "index_a": ta.index, "status": "only_a", "reason": f"no probe of this {'name' if ta.name is not None else 'text'} in run {b.name!r}",
                 **empty}
        probes.append(probe)
        if tb is None:
            continue
        reason = _text_difference(ta, tb)
        if reason is not None:
            probe.update(status="different_text", reason=reason)
            continue
        w = min(ta.width, tb.width)
        same_target = (ta.target[:w] == tb.target[:w]) | (ta.target[:w] < 0) | (tb.target[:w] < 0)
        pos = np.flatnonzero(same_target & ta.predicted()[:w] & tb.predicted()[:w])
        la, lb = ta.learned_at()[pos], tb.learned_at()[pos]
        d = tb.logp_now[pos] - ta.logp_now[pos]
        counts = _counts(la, lb)
        known = ~np.isnan(d)
        probe.update(status="matched", reason=None, **counts,
                     mean_delta_logp=sig(d[known].mean()) if known.any() else None, verdict=_verdict(counts))
        parts.append((probe, ta, tb, pos, la, lb, d))
    probes += [{"name": tb.name, "label": tb.label, "seq_a": None, "seq_b": tb.seq, "index_a": None, "status": "only_b",
                "reason": f"no probe of this {'name' if tb.name is not None else 'text'} in run {a.name!r}", **empty}
               for key, tb in b.tracks.items() if key not in a.tracks]

    k = np.concatenate([np.full(len(p[3]), i) for i, p in enumerate(parts)]) if parts else np.zeros(0, dtype=int)
    pos, la, lb, d = (np.concatenate([p[j] for p in parts]) if parts else np.zeros(0) for j in (3, 4, 5, 6))
    ka, kb, known = la >= 0, lb >= 0, ~np.isnan(d)

    def row(i: int) -> dict[str, Any]:
        probe, ta, tb, *_ = parts[int(k[i])]
        p, xa, xb = int(pos[i]), int(la[i]), int(lb[i])
        return {"seq_a": ta.seq, "seq_b": tb.seq, "name": ta.name, "index_a": ta.index, "pos": p,
                "context": token_context(ta.tokens, p), "token": ta.tokens[p] if p < len(ta.tokens) else None,
                "target": ta.target_str[p] if p < len(ta.target_str) else None,
                "learned_a": xa if xa >= 0 else None, "learned_b": xb if xb >= 0 else None,
                "lead": xb - xa if xa >= 0 and xb >= 0 else None,
                "p_a": sig(ta.prob_now[p]), "p_b": sig(tb.prob_now[p]),
                "rank_a": int(ta.rank_now[p]) or None, "rank_b": int(tb.rank_now[p]) or None,
                "delta_logp": sig(d[i])}

    def pick(mask: np.ndarray, score: np.ndarray) -> list[dict[str, Any]]:
        at = np.flatnonzero(mask)
        return [row(i) for i in at[np.argsort(score[at], kind="stable")][:limit].tolist()]

    counts = _counts(la, lb)
    matched = [p for p in probes if p["status"] == "matched"]
    out: dict[str, Any] = {
        "step": a.step if step is None else step, "a": a.summary, "b": b.summary,
        "summary": {**{s: sum(p["status"] == s for p in probes) for s in ("matched", "different_text", "only_a", "only_b")},
                    **counts, "mean_delta_logp": sig(d[known].mean()) if known.any() else None,
                    "verdict": _verdict(counts) if matched else None},
        "probes": probes,
        "earlier_in_a": pick(ka & kb & (la < lb), la - lb),
        "earlier_in_b": pick(ka & kb & (lb < la), lb - la),
        "only_in_a": pick(ka & ~kb, la),
        "only_in_b": pick(kb & ~ka, lb),
        "biggest_gap": pick(known, -np.abs(np.where(known, d, 0))),
    }
    if per_token:
        out["per_token"] = [{"seq_a": ta.seq, "index_a": ta.index, "positions": p.tolist(), "delta_logp": sig_list(dd)}
                            for _probe, ta, _tb, p, _la, _lb, dd in parts if ta.index is not None]
    return out


def compare_runs_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``compare_runs?a=A&b=B[&step=S][&limit=N][&tokens=1]``: ``{"run": A, "vs": B, ...}``,
    see :func:`compare_runs_json`. ``tokens=1`` adds ``per_token`` (colour every token of A)."""
    names = query.get("a") or query.get("run"), query.get("b")
    if not names[1]:
        raise BadRequest("missing query parameter 'b' (the run to compare with)")
    readers = [runs.reader(n) for n in names]
    step = parse_step(query["step"]) if query.get("step") not in (None, "") else None
    limit = int_param(query, "limit", 20, low=0, high=1000)
    per_token = query.get("tokens", "") in ("1", "true", "yes")
    try:
        result = compare_runs_json(*readers, step, names=(names[0], names[1]), limit=limit, per_token=per_token)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from None
    return {"run": names[0], "vs": names[1], **result}
