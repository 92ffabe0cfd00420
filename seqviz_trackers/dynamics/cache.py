"""One :class:`~seqviz_trackers.dynamics.tracks.Dynamics` per reader, kept up to date.

:func:`dynamics_for` keeps one per :class:`~seqviz_trackers.storage.jsonl.TrainingDataReader`,
brought up to date on each call from the columns cache where it matches and from the
JSONL otherwise (a truncated or rewritten file, or a step logged again, rebuilds it). A
step the columns cannot add (a sequence's first step: its tokens and targets) is read
from the step view its record holds where there is one (:func:`light_entry`).
"""

from __future__ import annotations

import operator
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from ..storage.columns import Block, ColumnsReader
from .tracks import Dynamics

__all__ = ["dynamics_for", "synced", "light_entry"]


def light_entry(reader: Any, info: Any) -> dict[str, Any]:
    """The step at ``info`` as far as the tracks and a diff without divergences read it: the
    :func:`~seqviz_trackers.format.view.step_view` its columns record holds (the line, with
    every candidate, is not parsed) where there is one, else the logged entry. Raises as
    ``reader.read`` does."""
    view = reader.read_view(info, stored_only=True)
    return view if view is not None else reader.read(info)


class _RunState:
    """A reader's :class:`Dynamics`, the step index it was built from, its columns file, and recent diffs."""

    def __init__(self, reader: Any) -> None:
        self.columns = getattr(reader, "columns", None) or ColumnsReader(reader.path, reader.files)
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
    todo = infos[n:]
    demoted = False
    at = 0  # todo[:at] are done
    for item in state.columns.records(todo):
        if isinstance(item, Block):
            block = item
            while len(block) and not state.dyn.add_block(block):
                done = _add_entry(reader, state, todo[at])  # a step the block cannot add: from its line
                if done is None:
                    break
                demoted = demoted or not done
                at, block = at + 1, block[1:]
            else:
                state.infos.extend(todo[at:at + len(block)])
                at += len(block)
                continue
            break  # the file went away mid-read; the next call tries again
        if item is not None and state.dyn.add_columns(*item):
            state.infos.append(todo[at])
        else:
            done = _add_entry(reader, state, todo[at])
            if done is None:
                break
            demoted = demoted or not done
        at += 1
    else:
        if not demoted:
            state.sorted_ref = infos
    state.build_seconds += time.perf_counter() - start


def _add_entry(reader: Any, state: _RunState, info: Any) -> bool | None:
    """Add the step of ``info`` from its stored view or its line (:func:`light_entry`): True
    when added, False when its line is broken
    (the reader no longer lists it as a step), None when the file went away (try again later)."""
    try:
        entry = light_entry(reader, info)
    except ValueError:
        return False
    except OSError:
        return None
    state.dyn.add_entry(entry)
    state.infos.append(info)
    return True


@contextmanager
def synced(reader: Any) -> Iterator[_RunState]:
    """``reader``'s state, brought up to date and locked for the ``with`` block."""
    state = _state(reader)
    with state.lock:
        _sync(reader, state)
        yield state


def dynamics_for(reader: Any) -> Dynamics:
    """The up-to-date :class:`Dynamics` of a :class:`~seqviz_trackers.storage.jsonl.TrainingDataReader`.

    Kept per reader object: each call reads only the steps indexed since the last one.
    The object is replaced, not changed in place, when the file is rewritten.
    """
    with synced(reader) as state:
        return state.dyn

