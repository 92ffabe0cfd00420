"""Named runs (one JSONL file behind one reader each) and the errors a data route raises.

Every route function, whatever back end serves it, takes ``(runs, query)`` and returns
JSON-ready data or raises :class:`NotFound` (HTTP 404) / :class:`BadRequest` (HTTP 400).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from .storage.jsonl import Files, TrainingDataReader

__all__ = ["Runs", "unreadable", "NotFound", "BadRequest", "Query", "parse_step", "int_param", "required_int"]

#: A request's query parameters.
Query = dict[str, str]


class NotFound(LookupError):
    """The run or step asked for does not exist (HTTP 404)."""


class BadRequest(ValueError):
    """The request itself is malformed (HTTP 400)."""


class Runs:
    """Named runs, each one JSONL file behind one :class:`TrainingDataReader`.

    ``discover`` (optional) returns ``{name: path}`` for the runs that exist now; it
    is called on each :meth:`names` so runs that appear later are picked up.
    """

    def __init__(self, discover: Callable[[], dict[str, str]] | None = None, files: Files | None = None,
                 readers: Callable[[str], TrainingDataReader] | None = None):
        self._discover = discover
        self._files = files
        self._make_reader = readers
        self._paths: dict[str, str] = {}
        self._readers: dict[str, TrainingDataReader] = {}
        self._lock = threading.Lock()
        #: ``{name: why}`` for places that look like runs but cannot be read at all (a folder
        #: that cannot be searched); filled by ``discover``, shown by the ``runs`` route.
        self.unlisted: dict[str, str] = {}

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
            path = self._paths[name]
            if self._make_reader is not None:
                return self._make_reader(path)
            reader = self._readers.get(name)
            if reader is None or reader.path != path:
                reader = self._readers[name] = TrainingDataReader(path, files=self._files)
            return reader


def unreadable(exc: OSError) -> str:
    """What a route or listing says about a run whose file cannot be read."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot be read ({where}{exc.strerror or exc})"


def parse_step(value: Any) -> int:
    """A step number from a query string, or :class:`BadRequest`."""
    try:
        step = int(str(value))
    except (TypeError, ValueError):
        raise BadRequest(f"step must be a non-negative integer, got {value!r}") from None
    if step < 0:
        raise BadRequest(f"step must be a non-negative integer, got {value!r}")
    return step


def int_param(query: Query, name: str, default: int | None = None, *, low: int = 0, high: int | None = None) -> int | None:
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


def required_int(query: Query, name: str) -> int:
    value = int_param(query, name)
    if value is None:
        raise BadRequest(f"missing query parameter {name!r}")
    return value
