"""One logged step as W&B Table rows (long format) and summary scalars.

Plain Python, no wandb import: the mirror feeds these rows to ``wandb.Table``.
One row per predicted position; the prediction at ``position`` is made at
``tokens[position]`` for the token that follows it.
"""

from __future__ import annotations

from json.encoder import encode_basestring as _quote  # a JSON string literal, fast
from typing import Any, Iterator

from seqviz_trackers.format.entry import facts
from seqviz_trackers.storage.batches import captured_sequences
from seqviz_trackers.storage.jsonl import finite_number

__all__ = ["COLUMNS", "DTYPES", "TOP_N", "entry_rows", "count_rows", "step_scalars",
           "BATCH_COLUMNS", "BATCH_DTYPES", "BATCH_TEXT_CHARS", "batch_rows"]

#: How many candidates each row carries.
TOP_N = 5

#: Column names of the token table, in row order.
COLUMNS: list[str] = [
    "step",             # int: the logged training step
    "sequence",         # int: index of the sequence within the step
    "name",             # str | None: the sequence's name, when it has one
    "position",         # int: where the prediction is made
    "input_token",      # str | None: tokens[position]
    "target_token",     # str: the token that actually follows
    "predicted_token",  # str | None: the most likely candidate
    "correct",          # bool | None: predicted_token is the target
    "target_prob",      # float | None: p(target)
    "target_rank",      # int | None: 1 = the model's first choice
    "entropy",          # float: entropy of the predicted distribution (nats)
    "loss",             # float | None: -log p(target)
    "top5",             # str: up to five candidates, most likely first: '" the" 0.412, " a" 0.120'
    "target_rank_gt",   # int | None: the target is not among the n candidates logged: rank > n
    "target_prob_lt",   # float | None: ... and p(target) < the last candidate's p (when not known itself)
]

#: Python type of each column (every column also allows None).
DTYPES: list[type] = [int, int, str, int, str, str, str, bool, float, int, float, float, str, int, float]


def entry_rows(entry: dict[str, Any]) -> Iterator[list[Any]]:
    """Yield one table row (ordered as :data:`COLUMNS`) per prediction in ``entry``; what a
    prediction does not log is derived as :func:`seqviz_trackers.format.entry.facts` says."""
    step = entry["step"]
    for s, seq in enumerate(entry.get("sequences", [])):
        tokens = seq.get("tokens", [])
        name = seq.get("name")
        for pred in seq.get("predictions", []):
            pos = pred["position"]
            f = facts(pred)
            top = f.top[:TOP_N]
            yield [
                step, s, name, pos,
                tokens[pos] if 0 <= pos < len(tokens) else None,
                pred["target_token_str"],
                top[0][1] if top else None,
                f.correct, f.prob, f.rank, pred["entropy"], f.loss,
                ", ".join(f"{_quote(token or '')} {p:.3g}" for _id, token, p in top),
                f.rank_gt, f.p_lt if f.prob is None else None,
            ]


def count_rows(entry: dict[str, Any]) -> int:
    """How many rows :func:`entry_rows` yields for ``entry``."""
    return sum(len(seq.get("predictions", [])) for seq in entry.get("sequences", []))


def step_scalars(entry: dict[str, Any], prefix: str = "seqviz/") -> dict[str, float]:
    """``loss``, ``perplexity``, ``mean_entropy`` and ``top1_accuracy`` of one step.

    A figure the entry cannot give (no loss logged, no predictions) is left out
    rather than logged as a made-up number.
    """
    out: dict[str, float] = {}
    for key in ("loss", "perplexity"):
        value = finite_number(entry.get(key))
        if value is not None:
            out[prefix + key] = value
    entropies: list[float] = []
    hits: list[bool] = []
    for seq in entry.get("sequences", []):
        for pred in seq.get("predictions", []):
            entropies.append(pred["entropy"])
            correct = pred.get("correct")
            if not isinstance(correct, bool):  # not logged: derived (reading the candidates only then)
                correct = facts(pred).correct
            if correct is not None:
                hits.append(correct)
    if entropies:
        out[prefix + "mean_entropy"] = sum(entropies) / len(entropies)
    if hits:
        out[prefix + "top1_accuracy"] = sum(hits) / len(hits)
    return out


#: Columns of the training-batch table: one row per captured row of a capture step.
BATCH_COLUMNS: list[str] = [
    "step",      # int: the optimizer step
    "row",       # int: the row's place in the step's batch (micro-batches and ranks in order)
    "row_loss",  # float: the row's mean token loss
    "text",      # str: the row's tokens, joined (at most BATCH_TEXT_CHARS characters)
    "kind",      # str: "top" (among the highest losses) or "random" (the baseline)
]
BATCH_DTYPES: list[type] = [int, int, float, str, str]

#: Longer row texts are cut to this many characters (ending in an ellipsis).
BATCH_TEXT_CHARS = 2000


def batch_rows(record: dict[str, Any]) -> Iterator[list[Any]]:
    """One row (ordered as :data:`BATCH_COLUMNS`) per captured row of a training-batch record
    (:class:`seqviz_trackers.capture.BatchCapture`), highest loss first; none when the
    step has no per-token capture."""
    capture = record.get("capture") or {}
    meta = capture.get("metadata") or {}
    rows, kinds, losses = meta.get("rows") or [], meta.get("kinds") or [], meta.get("row_loss") or []
    found = []
    for i, seq in enumerate(captured_sequences(record)):
        text = "".join(seq.get("tokens") or [])
        if len(text) > BATCH_TEXT_CHARS:
            text = text[:BATCH_TEXT_CHARS - 1] + "\u2026"
        loss = finite_number(losses[i]) if i < len(losses) else None
        found.append([record["step"], rows[i] if i < len(rows) else i, loss, text, kinds[i] if i < len(kinds) else None])
    found.sort(key=lambda r: -r[2] if r[2] is not None else float("inf"))
    yield from found
