"""Model logits to one logged step (an *entry*).

The prediction at position ``i`` of a sequence is the model's guess for token ``i + 1``
(what the dashboard draws under the token it predicts). Work is done on the logits'
own device in chunks of rows, so the extra memory stays a small fraction of the logits
however large the vocabulary, and the results cross to the host in one transfer.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from .format.schema import SCHEMA_VERSION
from .format.tokens import token_strings

__all__ = ["tensor_to_training_entry", "extract_batch_sample", "perplexity", "CHUNK_BYTES"]

#: Size of one working buffer (rows x vocabulary, float32). Peak extra memory is a
#: few of these, whatever the size of the logits.
CHUNK_BYTES = 8 * 2**20
SIGNIFICANT_DIGITS = 5


def _round_sig(x: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Round to ``digits`` significant digits (short JSON, same meaning)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.floor(np.log10(np.abs(x)))
    decimals = np.clip(np.where(np.isfinite(mag), digits - 1 - mag, 0), 0, 300)
    scale = np.power(10.0, decimals)
    return np.round(x * scale) / scale


def perplexity(loss: float) -> float:
    """exp(loss), capped so that it stays a finite JSON number for any finite loss."""
    return math.exp(min(float(loss), 700.0))


def _as_2d(name: str, t: Any, shape: tuple[int, int]):
    import torch

    if t is None:
        return None
    t = torch.as_tensor(t)
    if t.dim() == 1 and shape[0] == 1:
        t = t.unsqueeze(0)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} (batch, sequence length) to match the logits")
    return t


def tensor_to_training_entry(
    logits: Any,
    input_ids: Any,
    tokenizer: Any,
    step: int,
    loss: float | None = None,
    model_name: str | None = None,
    *,
    top_k: int = 20,
    attention_mask: Any = None,
    labels: Any = None,
    names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    timestamp: float | None = None,
) -> dict[str, Any]:
    """Turn logits into one entry of the seqviz format.

    Args:
        logits: ``(T, V)`` or ``(B, T, V)`` floating-point tensor (fp32, fp16, bf16; any device).
        input_ids: ``(T,)`` or ``(B, T)`` token ids of the same sequences.
        tokenizer: turns ids into display strings (Hugging Face tokenizer, a bare
            ``tokenizers.Tokenizer``, or None to show ids).
        step: the training step.
        loss: the step's loss; when None, the mean token loss of the logged positions.
        model_name: stored in ``metadata``.
        top_k: how many candidates to keep per position (the dashboard shows 20).
        attention_mask: ``(B, T)``; positions with 0 (left or right padding) are left out.
        labels: ``(B, T)`` as given to a Hugging Face causal LM (unshifted); targets
            with ``-100`` are not predicted, and other labels replace ``input_ids`` as targets.
        names: a stable name per sequence, so the same text can be followed across steps.
        metadata: extra fields merged into ``metadata``.
        timestamp: seconds since the epoch; default now.

    Raises:
        ValueError: wrong shapes, non-float logits, ids outside the vocabulary,
            or NaN/infinite logits at a logged position.
    """
    import torch

    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point (fp32, fp16 or bf16), got {logits.dtype}")
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (T, V) or (B, T, V), got {tuple(logits.shape)}")
    batch, length, vocab = logits.shape
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    k = min(top_k, vocab)

    ids = _as_2d("input_ids", input_ids, (batch, length))
    if ids.is_floating_point():
        raise ValueError(f"input_ids must be integers, got {ids.dtype}")
    ids = ids.to("cpu", torch.long)
    mask = _as_2d("attention_mask", attention_mask, (batch, length))
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.to("cpu").bool()
    targets = ids
    if labels is not None:
        targets = _as_2d("labels", labels, (batch, length)).to("cpu", torch.long)
    if names is not None and len(names) != batch:
        raise ValueError(f"names has {len(names)} items for a batch of {batch} sequences")
    kept_ids = ids[mask]
    bad = (kept_ids < 0) | (kept_ids >= vocab)
    if bool(bad.any()):
        raise ValueError(f"input_ids holds {int(kept_ids[bad][0])}, outside the vocabulary of size {vocab} given by the logits")

    # Which rows of the logits to use: position i predicts token i+1, both real tokens.
    valid = torch.zeros_like(mask)
    valid[:, :-1] = mask[:, :-1] & mask[:, 1:] & (targets[:, 1:] != -100)
    next_target = torch.zeros_like(targets)
    next_target[:, :-1] = targets[:, 1:]
    rows = valid.flatten().nonzero().squeeze(1)
    row_targets = next_target.flatten()[rows]
    if bool(((row_targets < 0) | (row_targets >= vocab)).any()):
        raise ValueError(f"labels hold ids outside the vocabulary of size {vocab} (only -100 marks ignored positions)")

    stats = _row_stats(logits.reshape(batch * length, vocab), rows, row_targets, k)
    n = rows.numel()
    top_ids = stats[:, :k].astype(np.int64)
    top_probs = _round_sig(stats[:, k:2 * k])
    target_prob, entropy, token_loss, rank = (stats[:, 2 * k + j] for j in range(4))
    if n and not (np.isfinite(entropy).all() and np.isfinite(token_loss).all()):
        r = int(rows[int(np.flatnonzero(~(np.isfinite(entropy) & np.isfinite(token_loss)))[0])])
        raise ValueError(f"logits hold NaN or infinite values (sequence {r // length}, position {r % length})")

    if loss is None:
        loss = float(token_loss.mean()) if n else None
    elif not math.isfinite(float(loss)):
        raise ValueError(f"loss is {loss}; pass a finite number or None")

    vocab_ids = np.unique(np.concatenate([kept_ids.numpy(), top_ids.ravel(), row_targets.numpy()]))
    strings = dict(zip(vocab_ids.tolist(), token_strings(tokenizer, vocab_ids.tolist())))

    top_ids_l, top_probs_l = top_ids.tolist(), top_probs.tolist()
    tprob_l, ent_l, loss_l = (_round_sig(a).tolist() for a in (target_prob, entropy, token_loss))
    rank_l = rank.astype(np.int64).tolist()
    rows_l, tgt_l = rows.tolist(), row_targets.tolist()

    sequences = []
    j = 0
    for b in range(batch):
        kept = mask[b].nonzero().squeeze(1).tolist()
        where = {t: p for p, t in enumerate(kept)}
        seq_ids = ids[b, kept].tolist()
        predictions = []
        while j < n and rows_l[j] // length == b:
            tgt = tgt_l[j]
            predictions.append({
                "position": where[rows_l[j] % length],
                "target_token_id": tgt,
                "target_token_str": strings[tgt],
                "target_prob": tprob_l[j],
                "target_rank": rank_l[j],
                "loss": max(loss_l[j], 0.0),
                "correct": rank_l[j] == 1,
                "entropy": max(ent_l[j], 0.0),
                "top_k": [[i, strings[i], p] for i, p in zip(top_ids_l[j], top_probs_l[j])],
            })
            j += 1
        seq: dict[str, Any] = {}
        if names is not None:
            seq["name"] = str(names[b])
        seq.update(tokens=[strings[i] for i in seq_ids], token_ids=seq_ids, predictions=predictions)
        sequences.append(seq)

    meta: dict[str, Any] = {"vocab_size": vocab, "batch_size": batch, "sequence_length": length, "top_k": k}
    if model_name is not None:
        meta["model_name"] = model_name
    meta.update(metadata or {})
    # Header fields first: readers index a file from the start of each line.
    return {
        "step": int(step),
        "timestamp": time.time() if timestamp is None else float(timestamp),
        "loss": None if loss is None else float(loss),
        "perplexity": None if loss is None else perplexity(loss),
        "schema_version": SCHEMA_VERSION,
        "sequences": sequences,
        "metadata": meta,
    }


def extract_batch_sample(
    logits: Any,
    input_ids: Any,
    tokenizer: Any,
    step: int,
    loss: float | None,
    model_name: str | None,
    num_sequences: int = 1,
    **kwargs: Any,
) -> dict[str, Any]:
    """One entry of the first ``num_sequences`` sequences of a batch (the original seq-viz
    API). The same sequences at every step keep steps comparable.

    Args:
        logits: ``(B, T, V)``; input_ids: ``(B, T)``; the rest as :func:`tensor_to_training_entry`.
        num_sequences: how many sequences of the batch to keep (at most ``B``).
        kwargs: passed on to :func:`tensor_to_training_entry` (``top_k``, ``names``, ...);
            ``attention_mask`` and ``labels`` are cut to the same sequences.

    ``metadata.batch_size`` is the batch's size, as before the sample was taken.
    """
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be at least 1, got {num_sequences}")
    if getattr(logits, "dim", lambda: 0)() != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {tuple(getattr(logits, 'shape', ()))}")
    batch = logits.shape[0]
    keep = min(num_sequences, batch)
    for name in ("attention_mask", "labels"):
        if kwargs.get(name) is not None:
            kwargs[name] = kwargs[name][:keep]
    metadata = {"batch_size": batch, **(kwargs.pop("metadata", None) or {})}
    return tensor_to_training_entry(logits[:keep], input_ids[:keep], tokenizer, step, loss, model_name,
                                    metadata=metadata, **kwargs)


def _row_stats(flat, rows, targets, k: int) -> np.ndarray:
    """Per selected row: top-k ids and probs, p(target), entropy (nats), -log p(target), rank.

    Returns a float64 array of shape ``(len(rows), 2k + 4)`` on the host.
    """
    import torch

    n, vocab = rows.numel(), flat.shape[1]
    if n == 0:
        return np.zeros((0, 2 * k + 4))
    device = flat.device
    targets_d = targets.to(device)
    chunk = max(1, CHUNK_BYTES // (4 * vocab))
    buf = torch.empty(min(chunk, n), vocab, dtype=torch.float32, device=device)  # reused scratch
    # Chunks never straddle a gap between selected rows, so each is a view, not a copy.
    breaks = (torch.diff(rows) != 1).nonzero().squeeze(1) + 1
    edges = [0, *breaks.tolist(), n]
    spans = [(a, min(a + chunk, b)) for lo, b in zip(edges, edges[1:]) for a in range(lo, b, chunk)]
    out = []
    with torch.no_grad():
        for start, stop in spans:
            first = int(rows[start])
            x = flat[first:first + stop - start].float()  # a copy only for half precision
            scratch = buf[:x.shape[0]]
            top_v, top_i = torch.topk(x, k, dim=-1)
            e = torch.sub(x, top_v[:, :1], out=scratch).exp_()
            z = e.sum(-1)
            lse = top_v[:, 0] + z.log()
            entropy = lse - torch.linalg.vecdot(e, x) / z  # H = lse - E_p[logit]
            bad = ~torch.isfinite(entropy)
            if bool(bad.any()):  # -inf logits (masked tokens) give 0 * -inf above
                idx = bad.nonzero().squeeze(1)
                logp = torch.log_softmax(x[idx], -1)
                entropy[idx] = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
            t = targets_d[start:stop]
            t_logit = x.gather(1, t.unsqueeze(1)).squeeze(1)
            # Rank = 1 + number of strictly larger logits: read off the top-k when the
            # target is in it, else count over the row (a float 0/1 buffer sums fastest).
            rank = (top_v > t_logit.unsqueeze(1)).sum(1).to(torch.float32) + 1
            if not bool((top_i == t.unsqueeze(1)).any(1).all()):
                rank = torch.gt(x, t_logit.unsqueeze(1), out=scratch).sum(1) + 1
            out.append(torch.cat([
                top_i.double(), (top_v - lse.unsqueeze(1)).exp().double(),
                torch.stack([(t_logit - lse).exp(), entropy, lse - t_logit, rank], 1).double(),
            ], 1))
    return torch.cat(out).cpu().numpy()
