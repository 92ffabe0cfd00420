"""The data routes every dashboard back end answers, as plain functions.

``seqviz serve`` (HTTP beside its websocket) and the TensorBoard plugin both expose
these under the same relative names, so the dashboard's fetch adapter works on both:

- ``runs``                 -> ``{"runs": [{"run", "num_steps", "last_step"}]}`` (+ ``"problems":
                               [{"run", "message"}]`` when some run cannot be read)
- ``steps?run=R``          -> ``{"run", "steps": [{"step", "loss", "perplexity", "timestamp"}],
                               "problems": [{"line", "message"}], "num_steps", "version"}``
- ``steps?run=R&after=N``  -> the same with only the steps numbered above N in ``steps`` (and
                               ``"after": N``); ``num_steps`` still counts every step. A client that
                               keeps the list polls with ``after=`` its last step, and asks for the
                               whole list again when ``version`` changed (the file was truncated or
                               replaced, a step logged again or found broken) or when the steps it
                               holds plus the new ones are not ``num_steps``
- ``step?run=R&step=N``    -> the entry logged at step N (a JSON object in the schema); with
                               ``&view=1`` its step view, what the dashboard draws (no candidates,
                               see :mod:`seqviz_trackers.format.view`); with ``&view=1&seqs=K``
                               ``{"of": N, "view"}``: the view of only the first K of a large step's N
                               sequences, what a dashboard draws while the whole view is on its way
                               (``{"of": null, "view": null}`` where there is none to send, see
                               :meth:`~seqviz_trackers.storage.jsonl.TrainingDataReader.read_view_part`)
- ``candidates?run=R&step=N&seq=S&pos=P`` -> ``{"run", "step", "seq", "pos", "top_k": [[id, token, p]]}``:
                               the logged candidates of the prediction at position P of the
                               S-th sequence (its place in the entry), most likely first
- ``sequences``, ``series``, ``diff``, ``learned``, ``compare_runs`` -> training dynamics, see
  :mod:`seqviz_trackers.dynamics.routes` and ``docs/dynamics.md``
- ``batches``, ``batch`` -> training batches and loss spikes, see
  :mod:`seqviz_trackers.dynamics.spikes` and ``docs/spikes.md``

Each function returns data or raises :class:`NotFound` / :class:`BadRequest`; the
back end turns those into a 404 / 400 with ``{"error": message}`` (:func:`handle` does,
and answers anything else, such as a file that cannot be read, with a 500 saying what). :data:`ROUTES` maps
each route name to a function of ``(runs, query)``; a back end serves every entry of it,
so a new route is added here once and every back end answers it.

The dashboard's own files (:data:`WEB_DIR`) are served by every back end too, through
:func:`web_file` and :func:`content_type`.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from ..dynamics.routes import DYNAMICS_ROUTES
from ..dynamics.spikes import BATCH_ROUTES
from ..format.entry import candidates
from ..format.view import candidates_at, step_view
from ..runs import BadRequest, NotFound, Query, Runs, int_param, parse_step, required_int, unreadable

__all__ = ["Runs", "NotFound", "BadRequest", "runs_impl", "steps_impl", "step_impl", "candidates_impl", "parse_step", "ROUTES", "QUICK_ROUTES", "handle",
           "WEB_DIR", "web_file", "content_type"]

log = logging.getLogger(__name__)

#: The dashboard's static files.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_CONTENT_TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
    ".json": "application/json", ".map": "application/json", ".txt": "text/plain", ".md": "text/plain",
}


def runs_impl(runs: Runs) -> dict[str, Any]:
    """``{"runs": [{"run", "num_steps", "last_step"}]}``, runs with at least one step, and
    ``"problems": [{"run", "message"}]`` when some run cannot be read (the others are listed)."""
    out, problems = [], []
    for name in runs.names():
        try:
            steps = runs.reader(name).steps
        except OSError as exc:
            problems.append({"run": name, "message": unreadable(exc)})
            continue
        if steps:
            out.append({"run": name, "num_steps": len(steps), "last_step": steps[-1].step})
    problems += [{"run": name, "message": why} for name, why in sorted(runs.unlisted.items())]
    return {"runs": out, "problems": problems} if problems else {"runs": out}


def steps_impl(runs: Runs, run: str | None, after: int | None = None) -> dict[str, Any]:
    """``{"run", "steps": [...], "problems": [...], "num_steps", "version"}`` for one run, from
    its index; with ``after`` (a step number, or -1) only the steps numbered above it, and
    ``"after"``. ``num_steps`` and ``version`` tell a client holding the earlier steps whether
    they are still the run's steps (see the module's docstring)."""
    reader = runs.reader(run)
    reader.refresh()
    steps, total, version = reader.indexed_after(after)
    out: dict[str, Any] = {"run": run}
    if after is not None:
        out["after"] = after
    out.update(steps=[s.to_json() for s in steps], problems=[p.to_json() for p in reader.problems],
               num_steps=total, version=version)
    return out


def step_impl(runs: Runs, run: str | None, step: Any, view: Any = None, seqs: int | None = None) -> Any:
    """The entry logged at ``step`` in ``run``; its :func:`~seqviz_trackers.format.view.step_view`
    when ``view`` is ``"1"``, encoded already (:class:`~seqviz_trackers.storage.jsonl.EncodedJSON`,
    read from the columns file where it holds it, see
    :meth:`~seqviz_trackers.storage.jsonl.TrainingDataReader.read_view`); with ``seqs``,
    ``{"of", "view"}``: the view of the first ``seqs`` sequences of a large step
    (:meth:`~seqviz_trackers.storage.jsonl.TrainingDataReader.read_view_part`)."""
    if view not in (None, "", "0", "1"):
        raise BadRequest(f"view must be 0 or 1, got {view!r}")
    if seqs is not None and view != "1":
        raise BadRequest("seqs is only for a step view (view=1)")
    reader = runs.reader(run)
    number = parse_step(step)
    entry = reader.get_view(number, encoded=True, seqs=seqs) if view == "1" else reader.get_step(number)
    if entry is None:
        broken = reader.problem_of(number)
        if broken is not None:  # its line turned out broken: listed in the run's problems from now on
            raise NotFound(f"step {number} of run {run!r} cannot be read (line {broken.line}: {broken.message})")
        raise NotFound(f"run {run!r} has no step {number}")
    return entry


#: (path, step) -> (its StepInfo, the step view with its candidates) of the steps whose
#: candidates were asked for last: a click after a click on the same step reads no line.
_CANDIDATES: "OrderedDict[tuple[str, int], tuple[Any, dict[str, Any]]]" = OrderedDict()
_CANDIDATES_KEPT = 2
_CANDIDATES_LOCK = threading.Lock()


def _with_candidates(runs: Runs, run: str | None, step: Any) -> dict[str, Any]:
    reader = runs.reader(run)
    number = parse_step(step)
    info = reader.step_info(number)
    key = (reader.path, number)
    with _CANDIDATES_LOCK:
        hit = _CANDIDATES.get(key)
        if hit is not None and hit[0] is info:
            _CANDIDATES.move_to_end(key)
            return hit[1]
    page = step_view(step_impl(runs, run, number), with_candidates=True)
    with _CANDIDATES_LOCK:
        _CANDIDATES[key] = (info, page)
        while len(_CANDIDATES) > _CANDIDATES_KEPT:
            _CANDIDATES.popitem(last=False)
    return page


def candidates_impl(runs: Runs, query: Query) -> dict[str, Any]:
    """``{"run", "step", "seq", "pos", "top_k": [[id, token, p], ...]}``: the logged candidates of
    one prediction (``pos``: its position; ``seq``: the sequence's place in the entry)."""
    run = query.get("run")
    seq, pos = required_int(query, "seq"), required_int(query, "pos")
    reader = runs.reader(run)
    info = reader.step_info(parse_step(query.get("step")))
    try:
        pred = reader.prediction_at(info, seq, pos) if info is not None else None
    except LookupError:
        raise NotFound(f"step {info.step} of run {run!r} has no prediction at position {pos} of sequence {seq}") \
            from None
    if pred is not None:  # read alone, where the columns record maps the line's predictions
        return {"run": run, "step": info.step, "seq": seq, "pos": pos, "top_k": [list(c) for c in candidates(pred)]}
    entry = _with_candidates(runs, run, query.get("step"))
    top = candidates_at(entry, seq, pos)
    if top is None:
        raise NotFound(f"step {entry['step']} of run {run!r} has no prediction at position {pos} of sequence {seq}")
    return {"run": run, "step": entry["step"], "seq": seq, "pos": pos, "top_k": top}


#: route name -> function(runs, query) returning JSON-ready data.
ROUTES: dict[str, Callable[[Runs, Query], Any]] = {
    "runs": lambda runs, q: runs_impl(runs),
    "steps": lambda runs, q: steps_impl(runs, q.get("run"), int_param(q, "after", low=-1)),
    "step": lambda runs, q: step_impl(runs, q.get("run"), q.get("step"), q.get("view"), int_param(q, "seqs")),
    "candidates": candidates_impl,
}


#: Routes that read one line or an index: every back end answers them beside (never behind)
#: the dynamics routes, which may take seconds.
QUICK_ROUTES = frozenset({"runs", "steps", "step", "candidates"})

# Training dynamics: sequences, series, diff, learned, compare_runs (shapes in docs/dynamics.md).
ROUTES.update(DYNAMICS_ROUTES)
# Training batches and loss spikes: batches, batch (shapes in docs/spikes.md).
ROUTES.update(BATCH_ROUTES)


def handle(runs: Runs, route: str, query: Query) -> tuple[int, Any]:
    """Answer one request: ``(HTTP status, JSON-ready body)``. Never raises for bad input."""
    fn = ROUTES.get(route)
    if fn is None:
        return 404, {"error": f"unknown route {route!r}"}
    try:
        return 200, fn(runs, query)
    except NotFound as exc:
        return 404, {"error": str(exc)}
    except BadRequest as exc:
        return 400, {"error": str(exc)}
    except OSError as exc:  # that run's file: the other runs are not affected
        name = query.get("run")
        return 500, {"error": (f"run {name!r} " if name else "") + unreadable(exc)}
    except Exception as exc:  # a fault on our side: one answer, never a dropped request
        log.exception("route %r failed", route)
        return 500, {"error": f"{route}: {type(exc).__name__}: {exc}"}


def web_file(web_dir: str | os.PathLike[str], relative: str) -> Path | None:
    """The file under ``web_dir`` that ``relative`` (a URL-decoded, ``/``-separated path)
    names, or None when it names nothing there: a backslash, NUL, empty, ``.``/``..`` or
    hidden part, a folder, a missing file, or a link that leads outside."""
    parts = relative.split("/")
    if "\\" in relative or "\0" in relative or any(p == "" or p.startswith(".") for p in parts):
        return None
    root = Path(web_dir).resolve()
    target = root.joinpath(*parts).resolve()
    return target if root in target.parents and target.is_file() else None


def content_type(path: str | os.PathLike[str]) -> str:
    """The content type a static file is served with."""
    suffix = Path(path).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(os.fspath(path))[0] or "application/octet-stream"
