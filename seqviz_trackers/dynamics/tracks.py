"""Per-token series of one run: :class:`Dynamics`.

For every tracked sequence and position, the target probability, target rank, loss,
entropy and top-1 token at every step where the sequence was logged, kept in NumPy
arrays that grow by step (adding a step costs work proportional to that step, not to
the run), plus the learned-when state: the step from which the target stays top-1
(and top-5) up to the last step where it was predicted, and *forgetting events* (the
target was top-1 at one logged step and not at the next one where it was predicted).

Tracked sequences (see :func:`~seqviz_trackers.format.entry.sequence_key`) are
numbered ``seq = 0, 1, ...`` in the order they first appear in the run. Steps where a
sequence is absent are not part of its series; an unknown rank counts as "not top-1,
not top-5".
"""

from __future__ import annotations

import itertools
from typing import Any, Hashable

import numpy as np

from ..format.entry import Columns, KnownIds, is_int, sequence_key, targets, text_checksum
from ..format.view import is_view, sequence_columns, view_targets

__all__ = ["Dynamics", "evenly_spaced"]

_NONE = np.zeros(0, dtype=np.int64)


class _Track:
    """The series of one tracked sequence: rows are the steps where it was logged."""

    ARRAYS = {"prob": (np.float32, np.nan), "loss": (np.float32, np.nan), "entropy": (np.float32, np.nan),
              "rank": (np.int32, 0), "top1": (np.int64, -1), "present": (np.bool_, False)}
    #: the bound of a target outside the logged candidates (see Columns.rank_gt / p_lt):
    #: kept only once a step of the track has one (None before)
    BOUND = {"rank_gt": (np.int32, 0), "p_lt": (np.float32, np.nan)}
    STATE = {"target": (np.int64, -2), "top1_now": (np.bool_, False), "since1": (np.int64, -1),
             "since5": (np.int64, -1), "last_seen": (np.int64, -1), "times_forgotten": (np.int32, 0)}

    def __init__(self, number: int, seq: dict[str, Any]):
        self.number = number
        self.name: str | None = seq.get("name") if isinstance(seq.get("name"), str) else None
        self.tokens: list[str] = []
        self.token_ids: list[int] | None = None
        self.text: int | None = None  # text_checksum of the tokens
        self.target_str: list[str | None] = []
        self.n = 0
        self.width = 0
        self.steps = np.zeros(8, dtype=np.int64)
        self.row_of: dict[int, int] = {}
        for field, (dtype, fill) in self.ARRAYS.items():
            setattr(self, field, np.full((8, 0), fill, dtype=dtype))
        self.rank_gt: np.ndarray | None = None
        self.p_lt: np.ndarray | None = None
        for field, (dtype, fill) in self.STATE.items():
            setattr(self, field, np.full(0, fill, dtype=dtype))

    def _grow(self, rows: int, width: int) -> None:
        cap = self.steps.shape[0]
        if rows <= cap and width <= self.width:
            return
        new_cap = max(cap, rows) if rows <= cap else max(rows, 2 * cap)
        new_width = max(width, self.width)
        if new_cap != cap:
            steps = np.zeros(new_cap, dtype=np.int64)
            steps[:self.n] = self.steps[:self.n]
            self.steps = steps
        for field, (dtype, fill) in self._arrays():
            old = getattr(self, field)
            arr = np.full((new_cap, new_width), fill, dtype=dtype)
            arr[:self.n, :self.width] = old[:self.n, :self.width]
            setattr(self, field, arr)
        for field, (dtype, fill) in self.STATE.items():
            old = getattr(self, field)
            arr = np.full(new_width, fill, dtype=dtype)
            arr[:self.width] = old
            setattr(self, field, arr)
        self.target_str.extend([None] * (new_width - self.width))
        self.width = new_width

    def _arrays(self) -> list[tuple[str, tuple[Any, Any]]]:
        """The per-step arrays kept: :attr:`ARRAYS`, and :attr:`BOUND` once there is one."""
        bound = list(self.BOUND.items()) if self.p_lt is not None else []
        return list(self.ARRAYS.items()) + bound

    def _at(self, cols: Columns) -> Any:
        return slice(0, len(cols)) if cols.contiguous else cols.pos  # a slice is much cheaper than fancy indexing

    def add(self, step: int, cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Append one step; returns (gained positions, lost positions, their since-steps, their last top-1 steps)."""
        self._grow(self.n + 1, cols.width)
        row, pos, at = self.n, cols.pos, self._at(cols)
        self.steps[row] = step
        self.row_of[step] = row
        self.prob[row, at] = cols.prob
        self.loss[row, at] = cols.loss
        self.entropy[row, at] = cols.entropy
        self.rank[row, at] = cols.rank
        self.top1[row, at] = cols.top1
        self.present[row, at] = True
        if cols.rank_gt is not None and cols.p_lt is not None:
            if self.p_lt is None:
                for field, (dtype, fill) in self.BOUND.items():
                    setattr(self, field, np.full(self.prob.shape, fill, dtype=dtype))
            self.rank_gt[row, at] = cols.rank_gt
            self.p_lt[row, at] = cols.p_lt
        self.n += 1

        # learned-when state, at the predicted positions only
        hit1 = cols.rank == 1
        was1 = self.top1_now[at]
        changed = hit1 != was1
        if changed.any():
            lost, gained = pos[changed & was1], pos[changed & hit1]
            since, last = self.since1[lost], self.last_seen[lost]
            self.times_forgotten[lost] += 1
            self.since1[lost] = -1
            self.since1[gained] = step
            self.top1_now[at] = hit1
        else:
            lost = gained = since = last = _NONE
        hit5 = (cols.rank - 1).astype(np.uint64) < 5  # rank 1..5 (an unknown rank 0 wraps around)
        since5 = self.since5[at]
        self.since5[at] = np.where(hit5, np.where(since5 < 0, step, since5), -1)
        self.last_seen[at] = step
        return gained, lost, since, last

    def add_rows(self, steps: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Append several steps at once, each with positions ``0 .. n - 1`` (``arrays``: the
        :class:`Columns` fields, one row per step); the same result as :meth:`add` step by step.
        Returns per step the number of gained and lost positions, and the lost ones as rows
        ``(step index, position, since-step, last top-1 step)``."""
        k, n = arrays["rank"].shape
        self._grow(self.n + k, n)
        rows = slice(self.n, self.n + k)
        self.steps[rows] = steps
        self.row_of.update(zip(steps.tolist(), range(self.n, self.n + k)))
        for field in ("prob", "loss", "entropy", "rank", "top1"):
            getattr(self, field)[rows, :n] = arrays[field]
        self.present[rows, :n] = True
        if "rank_gt" in arrays and "p_lt" in arrays:
            if self.p_lt is None:
                for field, (dtype, fill) in self.BOUND.items():
                    setattr(self, field, np.full(self.prob.shape, fill, dtype=dtype))
            self.rank_gt[rows, :n] = arrays["rank_gt"]
            self.p_lt[rows, :n] = arrays["p_lt"]
        self.n += k

        # learned-when state: what add() does step by step, along the rows
        rank = arrays["rank"]
        hit1 = rank == 1
        before = np.concatenate([self.top1_now[None, :n], hit1[:-1]])
        gained, lost = hit1 & ~before, before & ~hit1
        index = np.arange(k)[:, None]
        start = np.maximum.accumulate(np.where(gained, index, -1), axis=0)  # row where the top-1 run began
        since = np.where(start >= 0, steps[np.maximum(start, 0)], self.since1[None, :n])
        r, p = np.nonzero(lost)
        prev = np.maximum(r - 1, 0)
        events = np.stack([r, p, np.where(r > 0, since[prev, p], self.since1[p]),
                           np.where(r > 0, steps[prev], self.last_seen[p])], 1).astype(np.int64)
        self.times_forgotten[:n] += lost.sum(0, dtype=np.int32)
        self.since1[:n] = np.where(hit1[-1], since[-1], -1)
        self.top1_now[:n] = hit1[-1]
        hit5 = (rank - 1).astype(np.uint64) < 5
        miss = np.where(~hit5, index, -1).max(0)  # the last row outside the top 5
        carried = np.where(self.since5[:n] >= 0, self.since5[:n], steps[0])
        self.since5[:n] = np.where(~hit5[-1], -1, np.where(miss >= 0, steps[np.minimum(miss + 1, k - 1)], carried))
        self.last_seen[:n] = steps[-1]
        return gained.sum(1), lost.sum(1), events

    def set_text(self, seq: dict[str, Any], cols: Columns) -> None:
        """Take the tokens, and the targets at ``cols``' positions, from ``seq`` (a logged
        sequence or a step view's, :func:`view_columns`) when they are new (call after :meth:`add`)."""
        ids = seq.get("token_ids")
        tokens = seq.get("tokens")
        new_text = isinstance(tokens, list) and (not self.tokens or ids != self.token_ids
                                                 or (ids is None and tokens != self.tokens))
        if new_text:
            self.tokens = [t if isinstance(t, str) else str(t) for t in tokens]
            self.token_ids = ids if isinstance(ids, list) else None
            self.text = text_checksum(seq)
        if new_text or (self.target[self._at(cols)] == -2).any():  # read targets once per text and position
            found = view_targets(seq) if is_view(seq) else targets(seq)
            at = np.fromiter(found, np.int64, len(found))
            keep = (at >= 0) & (at < self.width)
            self.target[at[keep]] = np.fromiter((t for t, _ in found.values()), np.int64, len(found))[keep]
            strings = self.target_str
            for p, (_, target_str) in zip(at[keep].tolist(), itertools.compress(found.values(), keep.tolist())):
                strings[p] = target_str

    def knows_text(self, text: int, cols: Columns) -> bool:
        """Whether this track has text ``text`` and the targets at all of ``cols``' positions."""
        return text == self.text and cols.width <= self.width and not (self.target[self._at(cols)] == -2).any()

    def label(self) -> str:
        if self.name is not None:
            return self.name
        text = "".join(self.tokens[:12])
        return text if len(self.tokens) <= 12 else text + "…"


def evenly_spaced(n: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` (>= 2) evenly spaced rows of ``n``, the first and last included."""
    if n <= limit:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, limit).tolist()})


class _Grow:
    """A 1-D NumPy array that grows by appending (amortised O(1))."""

    def __init__(self, dtype: Any):
        self.data = np.zeros(16, dtype=dtype)
        self.n = 0

    def append(self, value: Any) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n] = value
        self.n += 1

    def extend(self, values: np.ndarray) -> None:
        while self.n + len(values) > len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n:self.n + len(values)] = values
        self.n += len(values)

    def view(self) -> np.ndarray:
        return self.data[:self.n]


class Dynamics:
    """Per-token series and learned-when state of one run, built step by step.

    >>> dyn = Dynamics()
    >>> for entry in entries:        # in increasing step order
    ...     dyn.add_entry(entry)
    >>> dyn.learned_at(0)            # per position of sequence 0: step or -1

    Steps must arrive in increasing order (:meth:`add_entry` raises ValueError
    otherwise); :func:`dynamics_for` rebuilds when a file's steps do not.
    """

    def __init__(self) -> None:
        self.tracks: list[_Track] = []
        self._by_key: dict[Hashable, _Track] = {}
        self.steps = _Grow(np.int64)
        self.gained = _Grow(np.int64)
        self.forgotten = _Grow(np.int64)
        self.step_seqs: list[list[int]] = []
        self._events: list[np.ndarray] = []  # per step: (seq, pos, step, since, last top-1) rows
        self.vocab: dict[int, str] = {}
        self._known = KnownIds()

    # -- building --------------------------------------------------------------------------------
    def add_entry(self, entry: dict[str, Any]) -> None:
        """Add one logged step: its entry, or its :func:`~seqviz_trackers.format.view.step_view`
        (whose sequences' views are read in bulk: the same tracks). Raises ValueError when its
        step is not after the last one."""
        seqs = entry.get("sequences")
        seqs = [seq for seq in seqs if isinstance(seq, dict)] if isinstance(seqs, list) else []
        self._add(entry.get("step"), [(sequence_key(seq), seq, sequence_columns(seq)) for seq in seqs])

    def add_columns(self, step: int, seqs: list[tuple[Hashable, int, Columns]], vocab: dict[int, str]) -> bool:
        """Add one step read from a columns file (see :mod:`seqviz_trackers.storage.columns`):
        per sequence its key, text checksum and :class:`Columns`, plus display strings of
        top-1 ids. Returns False, adding nothing, when a sequence is new or its text or
        targets are not known yet: add that step's entry instead."""
        for key, text, cols in seqs:
            track = self._by_key.get(key)
            if track is None or not track.knows_text(text, cols):
                return False
        self._add(step, [(key, None, cols) for key, _text, cols in seqs])
        for top, string in vocab.items():
            self.vocab.setdefault(top, string)
        return True

    def add_block(self, block: Any) -> bool:
        """Add the steps of a :class:`~seqviz_trackers.storage.columns.Block` at once, as
        :meth:`add_columns` would one by one. Returns False, adding nothing, when a sequence is
        new or its text or targets are not known yet (then none of the block's steps can be added
        this way: add its first step's entry, then the rest of the block)."""
        steps = block.steps
        if not len(steps):
            return True
        for key, text, n in block.seqs:
            track = self._by_key.get(key)
            if track is None or text != track.text or n > track.width or (track.target[:n] == -2).any():
                return False
        last = self.steps.data[self.steps.n - 1] if self.steps.n else -1
        if steps[0] < 0 or steps[0] <= last or (np.diff(steps) <= 0).any():
            raise ValueError(f"steps {steps.tolist()} do not increase after step {int(last)}")
        k = len(steps)
        n_gained = np.zeros(k, dtype=np.int64)
        n_lost = np.zeros(k, dtype=np.int64)
        events, numbers = [], []
        for order, ((key, _text, _n), arrays) in enumerate(zip(block.seqs, block.arrays)):
            track = self._by_key[key]
            numbers.append(track.number)
            gained, lost, rows = track.add_rows(steps, arrays)
            n_gained += gained
            n_lost += lost
            if len(rows):
                events.append(np.column_stack([rows[:, 0], np.full(len(rows), order), rows[:, 1],
                                               np.full(len(rows), track.number), steps[rows[:, 0]], rows[:, 2], rows[:, 3]]))
        self.steps.extend(steps)
        self.gained.extend(n_gained)
        self.forgotten.extend(n_lost)
        self.step_seqs.extend(list(numbers) for _ in range(k))
        if events:
            rows = np.concatenate(events)
            rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]  # by step, sequence, position
            self._events.append(rows[:, [3, 2, 4, 5, 6]].astype(np.int64))
        for vocab in block.vocab:
            for top, string in vocab.items():
                self.vocab.setdefault(int(top), string)
        return True

    def _add(self, step: Any, seqs: list[tuple[Hashable, dict[str, Any] | None, Columns]]) -> None:
        if not is_int(step) or step < 0:
            raise ValueError(f"entry has no valid 'step' ({step!r})")
        if self.steps.n and step <= self.steps.data[self.steps.n - 1]:
            raise ValueError(f"step {step} arrives after step {int(self.steps.data[self.steps.n - 1])}; steps must increase")
        numbers: list[int] = []
        n_gained = n_lost = 0
        events = []
        for key, seq, cols in seqs:
            track = self._by_key.get(key)
            if track is None:
                track = self._by_key[key] = _Track(len(self.tracks), seq or {})
                self.tracks.append(track)
            elif track.row_of.get(step) is not None:
                continue  # the same sequence twice in one step: the first one counts
            numbers.append(track.number)
            gained, lost, since, last = track.add(step, cols)
            if seq is not None:
                for top, string in self._known.new_strings(seq, cols).items():
                    self.vocab.setdefault(top, string)
                track.set_text(seq, cols)
            n_gained += len(gained)
            n_lost += len(lost)
            if len(lost):
                events.append(np.stack([np.full(len(lost), track.number), lost, np.full(len(lost), step), since, last], 1))
        self.steps.append(step)
        self.gained.append(n_gained)
        self.forgotten.append(n_lost)
        self.step_seqs.append(numbers)
        if events:
            self._events.append(np.concatenate(events).astype(np.int64))

    # -- queries ---------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.steps.n

    def track(self, seq: int) -> _Track:
        """The tracked sequence numbered ``seq``; IndexError when there is none."""
        if not 0 <= seq < len(self.tracks):
            raise IndexError(f"no sequence {seq} (the run has {len(self.tracks)})")
        return self.tracks[seq]

    def tracks_by_key(self) -> dict[Hashable, _Track]:
        """Every tracked sequence by its :func:`~seqviz_trackers.format.entry.sequence_key`, in ``seq`` order."""
        return dict(self._by_key)

    def number_of(self, seq: dict[str, Any]) -> int | None:
        """The tracked number of a logged sequence, or None when it was never added."""
        return self.number_of_key(sequence_key(seq))

    def number_of_key(self, key: Hashable) -> int | None:
        """The tracked number of the sequence of :func:`sequence_key` ``key``, or None."""
        track = self._by_key.get(key)
        return None if track is None else track.number

    def learned_at(self, seq: int, top: int = 1) -> np.ndarray:
        """Per position of sequence ``seq``: the step from which its target stays within the
        top ``top`` (1 or 5) to the last step where it was predicted, or -1 if it does not."""
        track = self.track(seq)
        return (track.since1 if top == 1 else track.since5).copy()

    def events(self) -> np.ndarray:
        """Every forgetting event as rows ``(seq, pos, step, since, last_top1)``, oldest first:
        the target was top-1 from ``since`` through ``last_top1`` and was not at ``step``."""
        if len(self._events) > 1:
            self._events = [np.concatenate(self._events)]
        return self._events[0] if self._events else np.zeros((0, 5), dtype=np.int64)

    def per_step(self) -> dict[str, np.ndarray]:
        """Per logged step: ``gained`` (became top-1 there), ``forgotten`` (lost top-1 there),
        and ``learned`` (tokens whose learned-at step, as of now, is that step)."""
        steps = self.steps.view()
        learned = np.zeros(len(steps), dtype=np.int64)
        for track in self.tracks:
            at = track.since1[track.since1 >= 0]
            np.add.at(learned, np.searchsorted(steps, at), 1)
        return {"steps": steps.copy(), "learned": learned, "gained": self.gained.view().copy(),
                "forgotten": self.forgotten.view().copy()}

