"""The data routes every dashboard back end answers, as plain functions.

``seqviz serve`` (HTTP beside its websocket) and the TensorBoard plugin both expose
these under the same relative names, so the dashboard's fetch adapter works on both:

- ``runs``                 -> ``{"runs": [{"run", "num_steps", "last_step"}]}``
- ``steps?run=R``          -> ``{"run", "steps": [{"step", "loss", "perplexity", "timestamp"}],
                               "problems": [{"line", "message"}]}``
- ``step?run=R&step=N``    -> the entry logged at step N (a JSON object in the schema)
- ``sequences``, ``series``, ``diff``, ``learned`` -> training dynamics, see
  :mod:`seqviz_trackers.dynamics_routes` and ``docs/dynamics.md``

Each function returns data or raises :class:`NotFound` / :class:`BadRequest`; the
back end turns those into a 404 / 400 with ``{"error": message}``. :data:`ROUTES` maps
each route name to a function of ``(runs, query)``; a back end serves every entry of it,
so a new route is added here once and every back end answers it.

The dashboard's own files (:data:`WEB_DIR`) are served by every back end too, through
:func:`web_file` and :func:`content_type`.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from pathlib import Path
from typing import Any, Callable

from .jsonl import Files, TrainingDataReader

__all__ = ["Runs", "NotFound", "BadRequest", "runs_impl", "steps_impl", "step_impl", "parse_step", "ROUTES", "handle",
           "WEB_DIR", "web_file", "content_type"]

#: The dashboard's static files.
WEB_DIR = Path(__file__).resolve().parent / "web"
_CONTENT_TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
    ".json": "application/json", ".map": "application/json", ".txt": "text/plain", ".md": "text/plain",
}


class NotFound(LookupError):
    """The run or step asked for does not exist (HTTP 404)."""


class BadRequest(ValueError):
    """The request itself is malformed (HTTP 400)."""


class Runs:
    """Named runs, each one JSONL file behind one :class:`TrainingDataReader`.

    ``discover`` (optional) returns ``{name: path}`` for the runs that exist now; it
    is called on each :meth:`names` so runs that appear later are picked up.
    """

    def __init__(self, discover: Callable[[], dict[str, str]] | None = None, files: Files | None = None):
        self._discover = discover
        self._files = files
        self._paths: dict[str, str] = {}
        self._readers: dict[str, TrainingDataReader] = {}
        self._lock = threading.Lock()

    def add(self, name: str, path: str | os.PathLike[str]) -> None:
        self._paths[name] = str(path)

    def names(self) -> list[str]:
        if self._discover is not None:
            self._paths.update(self._discover())
        return sorted(self._paths)

    def reader(self, name: str | None) -> TrainingDataReader:
        if not name:
            raise BadRequest("missing query parameter 'run'")
        with self._lock:
            if name not in self._paths:
                self.names()
            if name not in self._paths:
                raise NotFound(f"unknown run {name!r}")
            reader = self._readers.get(name)
            if reader is None or reader.path != self._paths[name]:
                reader = self._readers[name] = TrainingDataReader(self._paths[name], files=self._files)
            return reader


def parse_step(value: Any) -> int:
    """A step number from a query string, or :class:`BadRequest`."""
    try:
        step = int(str(value))
    except (TypeError, ValueError):
        raise BadRequest(f"step must be a non-negative integer, got {value!r}") from None
    if step < 0:
        raise BadRequest(f"step must be a non-negative integer, got {value!r}")
    return step


def runs_impl(runs: Runs) -> dict[str, Any]:
    """``{"runs": [{"run", "num_steps", "last_step"}]}``, runs with at least one step."""
    out = []
    for name in runs.names():
        steps = runs.reader(name).steps
        if steps:
            out.append({"run": name, "num_steps": len(steps), "last_step": steps[-1].step})
    return {"runs": out}


def steps_impl(runs: Runs, run: str | None) -> dict[str, Any]:
    """``{"run", "steps": [...], "problems": [...]}`` for one run, from its index."""
    reader = runs.reader(run)
    steps = reader.steps
    return {
        "run": run,
        "steps": [s.to_json() for s in steps],
        "problems": [p.to_json() for p in reader.problems],
    }


def step_impl(runs: Runs, run: str | None, step: Any) -> dict[str, Any]:
    """The entry logged at ``step`` in ``run``."""
    reader = runs.reader(run)
    number = parse_step(step)
    try:
        entry = reader.get_step(number)
    except ValueError as exc:  # the indexed line turned out corrupt
        raise NotFound(f"step {number} of run {run!r} cannot be read: {exc}") from None
    if entry is None:
        raise NotFound(f"run {run!r} has no step {number}")
    return entry


Query = dict[str, str]

#: route name -> function(runs, query) returning JSON-ready data.
ROUTES: dict[str, Callable[[Runs, Query], Any]] = {
    "runs": lambda runs, q: runs_impl(runs),
    "steps": lambda runs, q: steps_impl(runs, q.get("run")),
    "step": lambda runs, q: step_impl(runs, q.get("run"), q.get("step")),
}


def _dynamics_route(name: str) -> Callable[[Runs, Query], Any]:
    """A route of :mod:`seqviz_trackers.dynamics_routes`, imported on first use."""
    def call(runs: Runs, q: Query) -> Any:
        from .dynamics_routes import DYNAMICS_ROUTES
        return DYNAMICS_ROUTES[name](runs, q)
    return call


# Training dynamics: sequences, series, diff, learned (shapes in docs/dynamics.md).
ROUTES.update({name: _dynamics_route(name) for name in ("sequences", "series", "diff", "learned")})


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
