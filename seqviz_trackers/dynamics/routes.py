"""The training-dynamics data routes, served by every back end through :data:`seqviz_trackers.serve.api.ROUTES`.

Each function takes ``(runs, query)`` and returns JSON-ready data, or raises
:class:`~seqviz_trackers.runs.NotFound` (404) / :class:`~seqviz_trackers.runs.BadRequest` (400).
The ``*_json`` functions build the response shapes (documented on each of them and in
``docs/dynamics.md``); the command line uses them too; every response also carries ``"run"``.

- ``sequences?run=R[&step=S]``            tracked sequences (and which is which at step S)
- ``series?run=R&seq=N&pos=P[&points=K]``  one token's target prob / rank / loss / entropy / top-1 over all steps
- ``diff?run=R[&a=A][&b=B][&limit=N][&tokens=1]``   what changed from step A to step B
  (B defaults to the last step, A to the step logged before B)
- ``learned?run=R[&seq=N][&limit=N]``     learned-at steps, per-step counts, forgetting events
- ``compare_runs?a=A&b=B[&step=S]``        two runs token by token (:mod:`.runs_compare`)
"""

from __future__ import annotations

import bisect
import functools
import operator
from typing import Any

import numpy as np

from ..runs import BadRequest, NotFound, Query, Runs, int_param, parse_step, required_int
from .cache import light_entry, synced
from .compare import compare, compare_logged, record_sequences, sig_list
from .runs_compare import compare_runs_route
from .tracks import evenly_spaced

__all__ = ["sequences_json", "series_json", "learned_json", "diff_json", "previous_step",
           "sequences_route", "series_route", "diff_route", "learned_route", "DYNAMICS_ROUTES"]

_STEP = operator.attrgetter("step")


def sequences_json(reader: Any, step: int | None = None) -> dict[str, Any]:
    """Tracked sequences of a run::

        {"sequences": [{"seq", "name", "label", "num_positions", "num_steps", "first_step", "last_step"}],
         "at_step": {"step", "seq": [seq number of each sequence of that entry, in entry order]} | null}

    ``at_step`` is present when ``step`` is given; KeyError when the run has no such step.
    """
    with synced(reader) as state:
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
         "rank_gt": [int|null], "p_lt": [float|null],   # the target is not among that step's n logged
                                                        # candidates: rank > n and p < p_n (else null)
         "top1_tokens": {"<id>": str},          # display strings of the ids in top1
         "learned_at": int|null, "learned_at_top5": int|null,
         "forgotten": [{"step", "since", "last_top1"}],
         "num_steps": int}                      # steps logged in all, before any thinning

    IndexError when ``seq`` or ``pos`` does not exist.
    """
    with synced(reader) as state:
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
        none = [None] * len(top1)
        return {
            "seq": seq, "name": track.name, "pos": pos,
            "token": track.tokens[pos] if pos < len(track.tokens) else None,
            "target": {"id": int(track.target[pos]) if track.target[pos] >= 0 else None, "token": track.target_str[pos]},
            "steps": track.steps[:n][rows].tolist(),
            "target_prob": sig_list(track.prob[rows, pos]),
            "target_rank": [r if r >= 1 else None for r in track.rank[rows, pos].tolist()],
            "loss": sig_list(track.loss[rows, pos]),
            "entropy": sig_list(track.entropy[rows, pos]),
            "top1": top1,
            "rank_gt": none if track.rank_gt is None else [r if r >= 1 else None for r in track.rank_gt[rows, pos].tolist()],
            "p_lt": none if track.p_lt is None else sig_list(track.p_lt[rows, pos]),
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
    with synced(reader) as state:
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


def diff_json(reader: Any, a: int, b: int, *, limit: int = 20, per_token: bool = False,
              divergence: bool = True) -> dict[str, Any]:
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
               "top1_a", "top1_b", "flip", "rank_gt_a", "rank_gt_b", "p_lt_a", "p_lt_b"}

    Δ log p = log p_b(target) - log p_a(target) (natural log; minus the change in token
    loss); Δ rank = rank_b - rank_a (negative: better); flip = +1 wrong→right, -1
    right→wrong. ``rank_gt_*`` / ``p_lt_*``: the target is not among that step's logged
    candidates, so its rank is above ``rank_gt`` and p below ``p_lt`` (else null). Each
    list holds at most ``limit`` rows. ``index`` is the sequence's index in entry ``b``;
    ``context`` is up to six tokens ending with the one predicting.

    Without ``divergence`` every divergence is null, and the steps are read from the step
    views their columns records hold where they can (:func:`light_entry`: the lines, with
    every candidate, are not parsed): what colouring tokens by their change needs.
    """
    with synced(reader) as state:
        key = (a, b, limit, per_token, divergence)
        cached = state.diffs.get(key)
        if cached is not None:
            return cached
        infos = [reader.step_info(step) for step in (a, b)]
        for step, info in zip((a, b), infos):
            if info is None:
                raise KeyError(step)
        dyn = state.dyn
        # without divergences, the numbers come from the steps' columns records, as the tracks'
        # do; a step is read (its step view where it has one) only for the rows listed
        records = [] if divergence else [state.columns.get(info) for info in infos]
        if records and all(record is not None for record in records):
            sides = [(info.step, info.loss, record_sequences([(k, cols) for k, _text, cols in record[1]],
                                                             functools.partial(light_entry, reader, info)))
                     for info, record in zip(infos, records)]
            out = compare_logged(*sides, limit=limit, per_token=per_token, number=lambda s: dyn.number_of_key(s.key),
                                 divergence=False)
        else:
            read = reader.read if divergence else (lambda info: light_entry(reader, info))
            entries = []
            for step, info in zip((a, b), infos):
                try:
                    entry = read(info)
                except ValueError:
                    entry = None
                if entry is None:
                    raise KeyError(step)
                entries.append(entry)
            out = compare(entries[0], entries[1], limit=limit, per_token=per_token, number=dyn.number_of,
                          divergence=divergence)
        if len(state.diffs) >= 16:
            state.diffs.pop(next(iter(state.diffs)))
        state.diffs[key] = out
        return out


# -- the routes ---------------------------------------------------------------------------------
def sequences_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "sequences": [...], "at_step": {...}|null}``: see :func:`sequences_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    step = parse_step(query["step"]) if query.get("step") not in (None, "") else None
    try:
        return {"run": run, **sequences_json(reader, step)}
    except KeyError:
        raise NotFound(f"run {run!r} has no step {step}") from None


def series_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "seq", "pos", "steps", "target_prob", ...}``: see :func:`series_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    seq, pos = required_int(query, "seq"), required_int(query, "pos")
    points = int_param(query, "points", None, low=2)
    try:
        return {"run": run, **series_json(reader, seq, pos, points)}
    except IndexError as exc:
        raise NotFound(f"run {run!r}: {exc}") from None


def diff_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "a", "b", "summary", "learned", "forgotten", "worsened", "improved", ...}``:
    see :func:`diff_json`. ``tokens=1`` adds ``per_token`` (colour every token);
    ``divergence=0`` leaves the divergences out (null), which spares reading every candidate."""
    run = query.get("run")
    reader = runs.reader(run)
    steps = reader.steps
    if not steps:
        raise NotFound(f"run {run!r} has no steps yet")
    b = parse_step(query["b"]) if query.get("b") not in (None, "") else steps[-1].step
    if query.get("a") not in (None, ""):
        a = parse_step(query["a"])
    else:
        before = previous_step(reader, b)
        if before is None:
            if reader.get_step(b) is None:
                raise NotFound(f"run {run!r} has no step {b}")
            raise BadRequest(f"step {b} is the first logged step of run {run!r}: there is no earlier step to compare with")
        a = before
    limit = int_param(query, "limit", 20, low=0, high=1000)
    per_token = query.get("tokens", "") in ("1", "true", "yes")
    divergence = query.get("divergence", "") not in ("0", "false", "no")
    try:
        return {"run": run, **diff_json(reader, a, b, limit=limit, per_token=per_token, divergence=divergence)}
    except KeyError as exc:
        raise NotFound(f"run {run!r} has no step {exc.args[0]}") from None
    except ValueError as exc:  # the line of that step is corrupt
        raise NotFound(f"run {run!r}: {exc}") from None


def learned_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "per_step", "sequences", "forgetting", ...}``: see :func:`learned_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    seq = int_param(query, "seq")
    limit = int_param(query, "limit", 100, low=0, high=100000)
    try:
        return {"run": run, **learned_json(reader, seq, limit)}
    except IndexError as exc:
        raise NotFound(f"run {run!r}: {exc}") from None


DYNAMICS_ROUTES = {
    "sequences": sequences_route,
    "series": series_route,
    "diff": diff_route,
    "learned": learned_route,
    "compare_runs": compare_runs_route,
}
