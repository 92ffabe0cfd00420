"""Loss spikes and the training batches behind them, read from a run's batches file.

The batches file (``<run>.jsonl.batches``, see :mod:`seqviz_trackers.storage.batches`) holds
one record per optimizer step: every row's loss, the online spike verdict and, at capture
steps, the per-token view of the highest-loss and some random rows. Routes, served by every
back end through :data:`seqviz_trackers.serve.api.ROUTES`:

- ``batches?run=R`` -> ``{"run", "steps": [{"step", "loss", "spike", "captured"}], "spikes": [step, ...]}``
- ``batch?run=R&step=N`` -> one step's batch, see :func:`batch_json`

:func:`spikes_json` is what ``seqviz spikes FILE`` prints.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import weakref
from typing import Any

import numpy as np

from ..capture import SpikeDetector
from ..runs import NotFound, Query, Runs, parse_step
from ..storage.batches import batches_reader
from ..storage.jsonl import TrainingDataReader

__all__ = ["step_summaries", "summary_json", "batch_json", "spikes_json", "batches_route", "batch_route", "BATCH_ROUTES"]

#: The flags written right after a record's header (see capture.BatchCapture.finish).
_FLAGS = re.compile(rb'"spike":(null|\{[^{}]*\}),"reason":(null|"[a-z_]+")')
_PREFIX = 512
HIST_BINS = 24
TYPICAL_STEPS = 32


class _Summaries:
    """Per indexed step of one batches file: (step, loss, spike or None, reason), extended as it grows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.infos: list[Any] = []
        self.rows: list[tuple[int, float | None, dict[str, Any] | None, str | None]] = []


_cache: "weakref.WeakKeyDictionary[TrainingDataReader, _Summaries]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def step_summaries(reader: TrainingDataReader) -> list[tuple[int, float | None, dict[str, Any] | None, str | None]]:
    """``(step, loss, spike, reason)`` of every step of a batches file, in step order; each
    line's flags are read from its first bytes (the rows and captures are not parsed)."""
    with _cache_lock:
        state = _cache.get(reader)
        if state is None:
            state = _cache[reader] = _Summaries()
    with state.lock:
        infos = reader.steps
        if len(infos) < len(state.infos) or any(a is not b for a, b in zip(infos, state.infos)):
            state.infos, state.rows = [], []
        new = infos[len(state.infos):]
        if new:
            with reader.files.open(reader.path) as f:
                for info in new:
                    f.seek(info.offset)
                    m = _FLAGS.search(f.read(min(info.length, _PREFIX)))
                    spike = json.loads(m[1]) if m else None
                    reason = json.loads(m[2]) if m else None
                    state.rows.append((info.step, info.loss, spike, reason))
            state.infos = list(infos)
        return list(state.rows)


def _record(reader: TrainingDataReader, step: int) -> dict[str, Any]:
    try:
        record = reader.get_step(step)
    except ValueError as exc:
        raise NotFound(f"the batch of step {step} cannot be read: {exc}") from None
    if record is None:
        raise NotFound(f"no training batch recorded at step {step}")
    return record


def _row_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The step's rows, highest loss first, each with the index of its captured sequence (or None)."""
    rows = record.get("rows") or {}
    losses = rows.get("loss") or []
    capture = record.get("capture") or {}
    seq_of = {r: i for i, r in enumerate((capture.get("metadata") or {}).get("rows") or [])}
    kinds = (capture.get("metadata") or {}).get("kinds") or []
    index = rows.get("index")
    out = []
    for i, loss in enumerate(losses):
        seq = seq_of.get(i)
        out.append({"row": i, "loss": loss, "tokens": _at(rows.get("tokens"), i), "hash": _at(rows.get("hash"), i),
                    "rank": _at(rows.get("rank"), i), "index": _at(index, i), "seq": seq,
                    "kind": kinds[seq] if seq is not None and seq < len(kinds) else None})
    out.sort(key=lambda r: -r["loss"] if r["loss"] is not None else float("inf"))
    return out


def _at(values: list[Any] | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def _histogram(this: list[float], typical: list[list[float]]) -> dict[str, Any]:
    """Row losses of this step and of typical steps, as fractions of their rows, on shared bins."""
    pooled = [v for vs in typical for v in vs]
    values = np.array([v for v in this + pooled if v is not None], dtype=np.float64)
    if not len(values):
        return {"edges": [], "step": [], "typical": [], "typical_steps": 0}
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)

    def share(vs: list[float]) -> list[float]:
        vs = [v for v in vs if v is not None]
        counts, _ = np.histogram(vs, bins=edges)
        return (counts / max(1, len(vs))).round(4).tolist()

    return {"edges": edges.round(4).tolist(), "step": share(this), "typical": share(pooled), "typical_steps": len(typical)}


def batch_json(reader: TrainingDataReader, step: int) -> dict[str, Any]:
    """One step's training batch::

        {"step", "loss", "perplexity", "spike", "reason",
         "rows": [{"row", "loss", "tokens", "hash", "rank", "index", "seq", "kind"}],   # highest loss first
         "capture": entry | null,      # seq: the row's sequence in it; kind: "top" or "random"
         "histogram": {"edges", "step", "typical", "typical_steps"},   # fractions of rows per bin
         "previous", "next"}           # the neighbouring recorded steps (null at the ends)

    ``typical``: the rows of up to 32 evenly spaced steps of the run that are not spikes.
    """
    record = _record(reader, step)
    summaries = step_summaries(reader)
    steps = [s[0] for s in summaries]
    calm = [s[0] for s in summaries if s[2] is None and s[0] != step]
    picks = [calm[int(i)] for i in np.unique(np.linspace(0, len(calm) - 1, min(TYPICAL_STEPS, len(calm))).astype(int))] if calm else []
    typical = [(reader.get_step(s) or {}).get("rows", {}).get("loss") or [] for s in picks]
    i = bisect.bisect_left(steps, step)
    return {
        "step": step, "loss": record.get("loss"), "perplexity": record.get("perplexity"),
        "spike": record.get("spike"), "reason": record.get("reason"),
        "rows": _row_table(record), "capture": record.get("capture"),
        "histogram": _histogram((record.get("rows") or {}).get("loss") or [], typical),
        "previous": steps[i - 1] if i > 0 else None,
        "next": steps[i + 1] if i + 1 < len(steps) else None,
    }


def _text(seq: dict[str, Any], limit: int) -> str:
    text = "".join(seq.get("tokens") or [])
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _worst_tokens(seq: dict[str, Any], n: int, context: int = 8) -> list[dict[str, Any]]:
    """The ``n`` predictions of a captured row with the highest loss, each with what came before."""
    tokens = seq.get("tokens") or []
    preds = sorted((p for p in seq.get("predictions") or [] if p.get("loss") is not None), key=lambda p: -p["loss"])[:n]
    out = []
    for p in preds:
        j = p["position"] + 1
        top = p.get("top_k") or []
        out.append({"pos": j, "token": p["target_token_str"], "loss": p["loss"], "target_prob": p.get("target_prob"),
                    "context": "".join(tokens[max(0, j - context):j]), "predicted": top[0][1] if top else None})
    return out


def spikes_json(reader: TrainingDataReader, *, rows: int = 3, tokens: int = 5, text_chars: int = 80,
                threshold: float | None = None, window: int | None = None, min_history: int | None = None) -> dict[str, Any]:
    """Every loss spike of a batches file, with its top rows::

        {"num_steps", "detector": {...} | null,
         "spikes": [{"step", "loss", "before", "after", "z", "median", "captured",
                     "rows": [{"row", "rank", "loss", "hash", "index", "text", "worst_tokens": [...]}]}]}

    ``before`` / ``after``: the loss of the recorded step before / after. By default the
    verdicts written during training are used; ``threshold`` / ``window`` / ``min_history``
    detect again over the recorded step losses with those settings. A row that was not
    captured has ``text`` null (its loss and hash are still known).
    """
    summaries = step_summaries(reader)
    verdicts = [s[2] for s in summaries]
    detector = None
    if threshold is not None or window is not None or min_history is not None:
        d = SpikeDetector(window or 100, threshold or 6.0, 20 if min_history is None else min_history)
        detector = {"window": d.values.maxlen, "threshold": d.threshold, "min_history": d.min_history}
        verdicts = [d.update(s[1]) if s[1] is not None else None for s in summaries]
    out = []
    for i, ((step, loss, _spike, _reason), verdict) in enumerate(zip(summaries, verdicts)):
        if verdict is None:
            continue
        record = _record(reader, step)
        capture = record.get("capture") or {}
        seqs = capture.get("sequences") or []
        top = []
        for r in _row_table(record)[:rows]:
            seq = seqs[r["seq"]] if r["seq"] is not None and r["seq"] < len(seqs) else None
            top.append({k: r[k] for k in ("row", "rank", "loss", "hash", "index")} | {
                "text": _text(seq, text_chars) if seq else None,
                "worst_tokens": _worst_tokens(seq, tokens) if seq else []})
        out.append({"step": step, "loss": loss,
                    "before": summaries[i - 1][1] if i > 0 else None,
                    "after": summaries[i + 1][1] if i + 1 < len(summaries) else None,
                    "z": verdict.get("z"), "median": verdict.get("median"), "captured": bool(seqs), "rows": top})
    return {"num_steps": len(summaries), "detector": detector, "spikes": out}


def summary_json(reader: TrainingDataReader) -> dict[str, Any]:
    """Every step of a batches file: ``{"steps": [{"step", "loss", "spike", "captured"}], "spikes": [step, ...]}``."""
    summaries = step_summaries(reader)
    return {"steps": [{"step": s, "loss": loss, "spike": spike is not None, "captured": reason is not None}
                      for s, loss, spike, reason in summaries],
            "spikes": [s for s, _l, spike, _r in summaries if spike is not None]}


def batches_route(runs: Runs, query: Query) -> dict[str, Any]:
    return {"run": query.get("run"), **summary_json(batches_reader(runs.reader(query.get("run"))))}


def batch_route(runs: Runs, query: Query) -> dict[str, Any]:
    reader = batches_reader(runs.reader(query.get("run")))
    step = query.get("step")
    if step is None or step == "":
        summaries = step_summaries(reader)
        if not summaries:
            raise NotFound(f"run {query.get('run')!r} has no training batches (capture_train was off?)")
        number = summaries[-1][0]
    else:
        number = parse_step(step)
    return {"run": query.get("run"), **batch_json(reader, number)}


#: route name -> function(runs, query), merged into serve.api.ROUTES.
BATCH_ROUTES = {"batches": batches_route, "batch": batch_route}
