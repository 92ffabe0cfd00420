"""The training-dynamics data routes, served by every back end through :data:`seqviz_trackers.api.ROUTES`.

Each function takes ``(runs, query)`` and returns JSON-ready data, or raises
:class:`~seqviz_trackers.api.NotFound` (404) / :class:`~seqviz_trackers.api.BadRequest` (400).
The response shapes are documented on the functions of :mod:`seqviz_trackers.dynamics`
they call, and in ``docs/dynamics.md``; every response also carries ``"run"``.

- ``sequences?run=R[&step=S]``            tracked sequences (and which is which at step S)
- ``series?run=R&seq=N&pos=P[&points=K]``  one token's target prob / rank / loss / entropy / top-1 over all steps
- ``diff?run=R[&a=A][&b=B][&limit=N][&tokens=1]``   what changed from step A to step B
  (B defaults to the last step, A to the step logged before B)
- ``learned?run=R[&seq=N][&limit=N]``     learned-at steps, per-step counts, forgetting events
"""

from __future__ import annotations

from typing import Any

from . import dynamics
from .api import BadRequest, NotFound, Runs, parse_step

__all__ = ["sequences_route", "series_route", "diff_route", "learned_route", "DYNAMICS_ROUTES"]

Query = dict[str, str]


def _int(query: Query, name: str, default: int | None = None, *, low: int = 0, high: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def _required(query: Query, name: str) -> int:
    value = _int(query, name)
    if value is None:
        raise BadRequest(f"missing query parameter {name!r}")
    return value


def sequences_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "sequences": [...], "at_step": {...}|null}``: see :func:`dynamics.sequences_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    step = parse_step(query["step"]) if query.get("step") not in (None, "") else None
    try:
        return {"run": run, **dynamics.sequences_json(reader, step)}
    except KeyError:
        raise NotFound(f"run {run!r} has no step {step}") from None


def series_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "seq", "pos", "steps", "target_prob", ...}``: see :func:`dynamics.series_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    seq, pos = _required(query, "seq"), _required(query, "pos")
    points = _int(query, "points", None, low=2)
    try:
        return {"run": run, **dynamics.series_json(reader, seq, pos, points)}
    except IndexError as exc:
        raise NotFound(f"run {run!r}: {exc}") from None


def diff_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "a", "b", "summary", "learned", "forgotten", "worsened", "improved", ...}``:
    see :func:`dynamics.diff_json`. ``tokens=1`` adds ``per_token`` (colour every token)."""
    run = query.get("run")
    reader = runs.reader(run)
    steps = reader.steps
    if not steps:
        raise NotFound(f"run {run!r} has no steps yet")
    b = parse_step(query["b"]) if query.get("b") not in (None, "") else steps[-1].step
    if query.get("a") not in (None, ""):
        a = parse_step(query["a"])
    else:
        before = dynamics.previous_step(reader, b)
        if before is None:
            if reader.get_step(b) is None:
                raise NotFound(f"run {run!r} has no step {b}")
            raise BadRequest(f"step {b} is the first logged step of run {run!r}: there is no earlier step to compare with")
        a = before
    limit = _int(query, "limit", 20, low=0, high=1000)
    per_token = query.get("tokens", "") in ("1", "true", "yes")
    try:
        return {"run": run, **dynamics.diff_json(reader, a, b, limit=limit, per_token=per_token)}
    except KeyError as exc:
        raise NotFound(f"run {run!r} has no step {exc.args[0]}") from None
    except ValueError as exc:  # the line of that step is corrupt
        raise NotFound(f"run {run!r}: {exc}") from None


def learned_route(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "per_step", "sequences", "forgetting", ...}``: see :func:`dynamics.learned_json`."""
    run = query.get("run")
    reader = runs.reader(run)
    seq = _int(query, "seq")
    limit = _int(query, "limit", 100, low=0, high=100000)
    try:
        return {"run": run, **dynamics.learned_json(reader, seq, limit)}
    except IndexError as exc:
        raise NotFound(f"run {run!r}: {exc}") from None


DYNAMICS_ROUTES = {
    "sequences": sequences_route,
    "series": series_route,
    "diff": diff_route,
    "learned": learned_route,
}
