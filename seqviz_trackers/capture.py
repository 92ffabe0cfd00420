"""The training batches themselves, from the logits the training forward already computed.

:class:`BatchCapture` is fed each micro-batch's logits (``add``) and closes each optimizer
step (``finish``). Everything is computed on the logits' device, under ``no_grad`` and in
chunks of rows (:data:`seqviz_trackers.convert.CHUNK_BYTES`), so only small results cross
to the host:

- every step: the mean token loss of every row of every micro-batch, its number of
  predicted tokens, a hash of its token ids (a repeated row is recognisable) and the
  example index when the data gives one; gathered from all ranks;
- at capture steps (every ``every`` steps, and the step after a loss spike): the full
  per-token view of the ``top_rows`` rows with the highest loss and ``random_rows`` random
  rows, made by the converter, as one entry of the usual format.

A step's loss is watched by a :class:`SpikeDetector` (rolling robust z-score). A spike is
known only once the step's last micro-batch is in, when the logits of the earlier ones are
gone; so each micro-batch's own loss is also watched, and a micro-batch that is already out
of line is captured on the spot. A spike therefore brings the per-token view of the
micro-batches that caused it, and a full capture of the following step.

One record per optimizer step is returned by ``finish`` (the same on every rank); see
``docs/spikes.md`` for its fields and :mod:`seqviz_trackers.storage.batches` for the file.
The captured entry's sequences are held as their JSON (:class:`~seqviz_trackers.storage.jsonl.EncodedJSON`,
about a fifth of the memory of the same rows as dicts) until written;
:func:`~seqviz_trackers.storage.batches.captured_sequences` gives them as dicts.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .convert import CHUNK_BYTES, _as_2d, _round_sig, next_token_targets, perplexity, tensor_to_training_entry
from .format.schema import SCHEMA_VERSION
from .storage.jsonl import EncodedJSON

__all__ = ["CaptureOptions", "BatchCapture", "SpikeDetector", "row_loss_sums", "row_hashes", "capture_options"]

log = logging.getLogger("seqviz_trackers")

# Two primes below 2**31: a row's hash is a pair of polynomial hashes of its token ids.
_PRIMES = (2147483629, 2147483587)
_BASE = 1000003
_NO_INDEX = -1


@dataclass
class CaptureOptions:
    """What :class:`BatchCapture` keeps (``capture_train=`` of the integrations).

    Attributes:
        every: full per-token capture every this many optimizer steps (0: only after spikes).
        top_rows: rows with the highest loss captured in full at a capture step.
        random_rows: random rows captured in full beside them (the baseline).
        top_k: candidates kept per position in captured rows.
        window: steps of loss history the spike detector looks at.
        threshold: a step is a spike when its robust z-score exceeds this.
        min_history: steps seen before any step can be a spike.
        mad_floor: the spread (MAD) is taken to be at least this fraction of the median,
            so a very steady loss does not make tiny wiggles spikes.
        index_key: the batch key holding each row's example index (popped before the
            model sees it).
        seed: seeds the choice of random rows.
    """

    every: int = 100
    top_rows: int = 4
    random_rows: int = 4
    top_k: int = 20
    window: int = 100
    threshold: float = 6.0
    min_history: int = 20
    mad_floor: float = 0.005
    index_key: str = "idx"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("every", "top_rows", "random_rows", "min_history"):
            if getattr(self, name) < 0:
                raise ValueError(f"capture_train: {name} must be >= 0, got {getattr(self, name)}")
        if self.top_k < 1 or self.window < 2 or not self.threshold > 0:
            raise ValueError("capture_train: top_k must be >= 1, window >= 2 and threshold > 0")


def capture_options(value: Any) -> CaptureOptions | None:
    """``capture_train=`` as options: False/None off, True the defaults, an int ``every``,
    a dict of fields, or :class:`CaptureOptions` as is."""
    if value is None or value is False:
        return None
    if value is True:
        return CaptureOptions()
    if isinstance(value, CaptureOptions):
        return value
    if isinstance(value, int):
        return CaptureOptions(every=value)
    if isinstance(value, dict):
        return CaptureOptions(**value)
    raise TypeError(f"capture_train takes True, an int (capture every N steps), a dict or CaptureOptions, not {type(value).__name__}")


class SpikeDetector:
    """Online spike detection: a rolling robust z-score of the loss.

    ``z = (loss - median) / (1.4826 * MAD)`` over the last ``window`` losses (MAD: median
    absolute deviation, at least ``mad_floor * median``); a loss is a spike when ``z >
    threshold`` after ``min_history`` losses, or when it is not finite. Every finite loss,
    spikes included, joins the window (a lasting change of level stops being flagged).
    """

    def __init__(self, window: int = 100, threshold: float = 6.0, min_history: int = 20, mad_floor: float = 0.005):
        self.values: deque[float] = deque(maxlen=window)
        self.threshold = threshold
        self.min_history = max(1, min_history)
        self.mad_floor = mad_floor

    def update(self, loss: float) -> dict[str, Any] | None:
        """Add one loss; ``{"z", "median", "mad"}`` when it is a spike, else None."""
        verdict = None
        finite = loss is not None and math.isfinite(loss)
        if len(self.values) >= self.min_history:
            window = np.fromiter(self.values, dtype=np.float64)
            median = float(np.median(window))
            mad = float(np.median(np.abs(window - median)))
            if not finite:
                verdict = {"z": None, "median": median, "mad": mad}
            else:
                z = (loss - median) / (1.4826 * max(mad, self.mad_floor * abs(median), 1e-12))
                if z > self.threshold:
                    verdict = {"z": round(z, 3), "median": median, "mad": mad}
        if finite:
            self.values.append(float(loss))
        return verdict


def row_loss_sums(logits: Any, valid: Any, next_target: Any) -> tuple[Any, Any]:
    """Per row: the sum of its token losses (float64) and its number of predicted tokens.

    ``logits`` is ``(B, T, V)``; ``valid`` / ``next_target`` as from
    :func:`~seqviz_trackers.convert.next_token_targets`, on the logits' device. Worked in
    chunks of at most :data:`~seqviz_trackers.convert.CHUNK_BYTES` and an eighth of the
    logits (whole rows at a time when they fit, else parts of a row), so the extra memory
    stays a small part of the logits and small logits take a few calls, not one per row.
    """
    import torch
    import torch.nn.functional as F

    batch, length, vocab = logits.shape
    budget = max(1, min(CHUNK_BYTES // (4 * vocab), batch * length // 8))  # positions per chunk
    targets = next_target.masked_fill(~valid, -100)
    losses = torch.zeros(batch, length, dtype=torch.float32, device=logits.device)
    with torch.no_grad():
        if budget >= length:
            rows = budget // length
            for b in range(0, batch, rows):
                x = logits[b:b + rows]
                losses[b:b + rows] = F.cross_entropy(x.reshape(-1, vocab).float(), targets[b:b + rows].reshape(-1),
                                                     reduction="none", ignore_index=-100).view(x.shape[0], length)
        else:
            for b in range(batch):
                for a in range(0, length, budget):
                    x = logits[b, a:a + budget]
                    losses[b, a:a + budget] = F.cross_entropy(x.float(), targets[b, a:a + budget],
                                                              reduction="none", ignore_index=-100)
    return losses.double().sum(1), valid.sum(1)


def row_hashes(input_ids: Any, mask: Any) -> tuple[Any, Any]:
    """Two 31-bit polynomial hashes of each row's real tokens (padding, left or right, left out)."""
    import torch

    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    out = []
    for p, powers in zip(_PRIMES, _powers(input_ids.shape[1], input_ids.device)):
        terms = ((input_ids.long() + 1) % p) * powers[pos] % p
        out.append((terms * mask.long()).sum(1) % p)
    return out[0], out[1]


@functools.lru_cache(maxsize=16)
def _powers(length: int, device: Any) -> tuple[Any, ...]:
    """``_BASE ** i % p`` for ``i < length``, per prime, on ``device`` (made once per length:
    building them took a third of a step's capture work on small batches)."""
    import torch

    return tuple(torch.tensor([pow(_BASE, i, p) for i in range(length)], dtype=torch.long, device=device)
                 for p in _PRIMES)


def _dist() -> Any:
    """torch.distributed when initialised with more than one process, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


class BatchCapture:
    """Row losses of every optimizer step and the per-token view at capture steps.

    >>> cap = BatchCapture(CaptureOptions(every=100), tokenizer)
    >>> cap.add(outputs.logits, batch["input_ids"], batch["labels"], step=step)   # each micro-batch
    >>> record = cap.finish(step)                                                 # each optimizer step

    Every rank calls both (``finish`` gathers across ranks); the records are the same on
    every rank and rank 0 writes them.
    """

    def __init__(self, options: CaptureOptions, tokenizer: Any = None):
        self.options = options
        self.tokenizer = tokenizer
        self.detector = SpikeDetector(options.window, options.threshold, options.min_history, options.mad_floor)
        self._micro = SpikeDetector(options.window, options.threshold, options.min_history, options.mad_floor)
        self._step: int | None = None
        self._scheduled = False
        self._after_spike = False
        self._force_next = False
        self._rows: list[Any] = []          # per micro-batch: (B, 4) int64 on the device
        self._candidates: list[dict[str, Any]] = []   # captured rows of this step (this rank)
        self._offset = 0                    # rows of this step so far on this rank
        self._capacity = 0                  # rows per rank the gather is sized for
        self._meta: dict[str, Any] = {}
        self.micro_batches = 0

    @property
    def pending(self) -> int | None:
        """The step whose micro-batches were added and not finished yet, or None."""
        return self._step if self._rows else None

    # -- each micro-batch ------------------------------------------------------------
    def add(self, logits: Any, input_ids: Any, labels: Any = None, attention_mask: Any = None, *,
            step: int, index: Any = None, token_losses: Any = None) -> None:
        """One micro-batch of optimizer step ``step`` (``labels`` unshifted, ``-100`` ignored).

        ``token_losses``: ``(B, T)`` cross-entropy of each position's prediction of the next
        label, as the model's own loss computed them (then the row losses take no second pass
        over the logits); None: computed here."""
        import torch

        if logits.dim() == 2:
            logits = logits.unsqueeze(0)
        batch, length, _vocab = logits.shape
        if step != self._step:
            self._begin(step)
        device = logits.device
        ids = _as_2d("input_ids", input_ids, (batch, length)).to(device)
        mask = _as_2d("attention_mask", attention_mask, (batch, length))
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.to(device).bool()
        targets = ids if labels is None else _as_2d("labels", labels, (batch, length)).to(device)
        with torch.no_grad():
            valid, next_target = next_token_targets(mask, targets.long())
            if token_losses is not None:
                sums = token_losses.detach().to(device).masked_fill(~valid, 0).double().sum(1)
                counts = valid.sum(1)
            else:
                sums, counts = row_loss_sums(logits.detach(), valid, next_target)
            h1, h2 = row_hashes(ids, mask)
            idx = torch.full((batch,), _NO_INDEX, dtype=torch.long, device=device)
            if index is not None:
                idx = torch.as_tensor(index).reshape(-1).to(device, torch.long)[:batch]
            self._rows.append(torch.stack([sums.view(torch.long), counts.long(), h1 * (1 << 31) + h2, idx], 1))
        first = self._offset
        self._offset += batch
        self.micro_batches += 1
        capture = self._scheduled
        if self.options.top_rows + self.options.random_rows > 0:
            total = float(counts.sum())  # the one scalar read of a micro-batch: is it out of line?
            micro_loss = float(sums.sum()) / total if total else None
            spike = self._micro.update(micro_loss) if micro_loss is not None else None
            capture = capture or spike is not None
        if capture:
            self._capture_rows(logits.detach(), ids, targets if labels is not None else None, mask, sums, counts, first)

    def _begin(self, step: int) -> None:
        if self._rows:
            log.warning("seqviz: step %s was not finished before step %d began; its rows are dropped", self._step, step)
        self._step = step
        every = self.options.every
        self._after_spike = self._force_next
        self._scheduled = (bool(every) and step % every == 0) or self._after_spike
        self._force_next = False
        self._rows, self._candidates, self._offset = [], [], 0

    def _capture_rows(self, logits: Any, ids: Any, labels: Any, mask: Any, sums: Any, counts: Any, first: int) -> None:
        """The per-token view of this micro-batch's highest-loss rows and a few random ones."""
        o = self.options
        host_counts = counts.cpu().numpy()
        loss = np.where(host_counts > 0, sums.cpu().numpy() / np.maximum(host_counts, 1), -np.inf)
        order = [int(i) for i in np.argsort(-loss, kind="stable") if host_counts[i] > 0]
        rng = random.Random(o.seed * 1_000_003 + int(self._step or 0) * 101 + first)
        top = set(order[:o.top_rows])
        drawn = set(rng.sample(order, min(o.random_rows, len(order))))  # the baseline: drawn from every row
        for i in sorted(top | drawn):
            try:
                entry = tensor_to_training_entry(
                    logits[i:i + 1], ids[i:i + 1], self.tokenizer, step=int(self._step or 0), top_k=o.top_k,
                    attention_mask=mask[i:i + 1], labels=None if labels is None else labels[i:i + 1],
                    names=[f"row {first + i}"], as_json=True,
                )
            except ValueError as exc:  # e.g. NaN logits in that row: say so, train on
                log.warning("seqviz: row %d of step %s not captured: %s", first + i, self._step, exc)
                continue
            if not self._meta:
                self._meta = {k: entry["metadata"][k] for k in ("vocab_size", "sequence_length", "top_k")}
            self._candidates.append({"row": first + i, "top": i in top, "random": i in drawn, "loss": float(loss[i]),
                                     "sequence": entry["sequences"][0]})

    # -- each optimizer step ---------------------------------------------------------------
    def finish(self, step: int) -> dict[str, Any] | None:
        """Close optimizer step ``step``: gather the rows from every rank, look for a spike,
        assemble the capture. Returns the step's record (None when no rank saw a micro-batch)."""
        import torch

        if step != self._step:
            self._begin(step)
        local = torch.cat(self._rows) if self._rows else torch.zeros(0, 4, dtype=torch.long)
        table, counts = self._gather(local)
        self._rows = []
        if not len(table):
            return None
        sums = table[:, 0].copy().view(np.float64)
        tokens = table[:, 1]
        total = int(tokens.sum())
        step_loss = float(sums.sum() / total) if total else None
        spike = self.detector.update(step_loss) if step_loss is not None else None
        captured = self._scheduled or spike is not None
        entry = self._assemble(step, step_loss, counts) if captured else None
        if spike is not None:
            self._force_next = True
        rank = np.repeat(np.arange(len(counts)), counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            row_loss = np.where(tokens > 0, sums / np.maximum(tokens, 1), np.nan)
        rows: dict[str, Any] = {
            "loss": [None if not math.isfinite(v) else v for v in _round_sig(row_loss).tolist()],
            "tokens": tokens.tolist(),
            "hash": [f"{h:016x}" for h in table[:, 2].tolist()],
            "rank": rank.tolist(),
        }
        if (table[:, 3] != _NO_INDEX).any():
            rows["index"] = [None if i == _NO_INDEX else i for i in table[:, 3].tolist()]
        finite = step_loss is not None and math.isfinite(step_loss)
        record = {
            "step": int(step), "timestamp": time.time(),
            "loss": step_loss if finite else None, "perplexity": perplexity(step_loss) if finite else None,
            # the flags first: readers of the batches file find them in a line's first bytes
            "spike": spike,
            "reason": None if not captured else "spike" if spike is not None else
            "after_spike" if self._after_spike else "scheduled",
            "rows": rows, "capture": entry,
        }
        self._candidates = []
        return record

    def _gather(self, local: Any) -> tuple[np.ndarray, list[int]]:
        """Every rank's rows, in rank order, on the host. One all_gather when the rows fit
        the size of the previous step; a second one, sized anew, when they do not."""
        import torch

        dist = _dist()
        if dist is None:
            return local.cpu().numpy(), [local.shape[0]]
        device = torch.device("cpu") if dist.get_backend() == "gloo" else local.device
        n = local.shape[0]
        while True:
            cap = self._capacity
            buf = torch.zeros(cap + 1, 4, dtype=torch.long, device=device)
            buf[0, 0] = n
            buf[1:min(n, cap) + 1] = local[:cap].to(device)
            parts = [torch.empty_like(buf) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, buf)
            host = torch.stack(parts).cpu().numpy()
            counts = host[:, 0, 0].tolist()
            if max(counts) <= cap:
                return np.concatenate([h[1:c + 1] for h, c in zip(host, counts)]), counts
            self._capacity = max(counts)

    def _assemble(self, step: int, step_loss: float | None, counts: list[int]) -> dict[str, Any] | None:
        """One entry of the captured rows: the ``top_rows`` highest losses over every rank,
        then ``random_rows`` of the rows drawn at random (not among those); None when
        nothing was captured."""
        candidates = [dict(c, rank=0) for c in self._candidates]
        dist = _dist()
        meta = dict(self._meta)
        if dist is not None:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self._candidates, self._meta))
            candidates = [dict(c, rank=r) for r, (cs, _m) in enumerate(gathered) for c in cs]
            meta = next((m for _c, m in gathered if m), {})
        if not candidates:
            return None
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        for c in candidates:
            c["row"] = offsets[c["rank"]] + c["row"]
        o = self.options
        top = sorted((c for c in candidates if c["top"]), key=lambda c: -c["loss"])[:o.top_rows]
        taken = {c["row"] for c in top}
        pool = [c for c in candidates if c["random"] and c["row"] not in taken]
        drawn = random.Random(o.seed * 7919 + step).sample(pool, min(o.random_rows, len(pool)))
        chosen = top + drawn
        # each row's JSON is named by its row on its rank: renamed (a copy) on the other ranks
        sequences = [_renamed(c["sequence"], c["row"]) if offsets[c["rank"]] else c["sequence"] for c in chosen]
        meta.update(batch_size=len(sequences), source="train_batch", rows=[c["row"] for c in chosen],
                    kinds=["top"] * len(top) + ["random"] * len(drawn), row_loss=[round(c["loss"], 5) for c in chosen])
        finite = step_loss is not None and math.isfinite(step_loss)
        return {
            "step": int(step), "timestamp": time.time(),
            "loss": step_loss if finite else None, "perplexity": perplexity(step_loss) if finite else None,
            "schema_version": SCHEMA_VERSION, "sequences": sequences, "metadata": meta,
        }


def _renamed(sequence: EncodedJSON, row: int) -> EncodedJSON:
    """A captured sequence's JSON (``{"name":"row N",...``) named ``row {row}``."""
    return EncodedJSON(b'{"name":"row %d",' % row + memoryview(sequence)[sequence.index(b",") + 1:])
