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

from ._version import __version__
from .format.schema import SCHEMA_VERSION
from .format.tokens import token_strings
from .storage.jsonl import EncodedJSON, client_json

__all__ = ["tensor_to_training_entry", "extract_batch_sample", "next_token_targets", "perplexity", "CHUNK_BYTES"]

#: Size of one working buffer (rows x vocabulary, float32) for logits up to 64 times as
#: large; a 64th of them beyond, up to ``MAX_CHUNK_BYTES`` (``_chunk_rows``). Peak extra
#: memory is two of these, whatever the dtype of the logits.
CHUNK_BYTES = 2 * 2**20
MAX_CHUNK_BYTES = 8 * 2**20
#: Chunks are not cut below this size to keep them an eighth of small logits (``_chunk_rows``).
MIN_CHUNK_BYTES = 64 * 2**10
_BLOCK = 16  # positions whose candidates are made Python objects at a time
#: Block length of the blocked top-k (see ``_top_k``).
TOPK_BLOCK = 128
SIGNIFICANT_DIGITS = 5
#: Candidates' probabilities: the dashboard prints at most 2 digits of them, and 20 of them
#: per position make up a third of the line (a digit fewer: 20 B a position less).
CANDIDATE_DIGITS = 4


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


def next_token_targets(mask: Any, targets: Any) -> tuple[Any, Any]:
    """Which positions are predicted, and what: ``(valid, next_target)``, both ``(B, T)``.

    Position ``i`` predicts token ``i + 1``; it counts when both are real tokens (``mask``)
    and the target is not ``-100``. Works on any device (the tensors stay where they are).
    """
    import torch

    valid = torch.zeros_like(mask)
    valid[:, :-1] = mask[:, :-1] & mask[:, 1:] & (targets[:, 1:] != -100)
    next_target = torch.zeros_like(targets)
    next_target[:, :-1] = targets[:, 1:]
    return valid, next_target


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
    as_json: bool = False,
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
        metadata: extra fields merged into ``metadata`` (which also records ``seqviz_version``,
            the version of this package).
        timestamp: seconds since the epoch; default now.
        as_json: give each sequence as its JSON (an
            :class:`~seqviz_trackers.storage.jsonl.EncodedJSON`, the bytes
            :func:`~seqviz_trackers.storage.jsonl.client_json` makes of the dict), encoded
            position by position: the memory of a few positions' objects at a time instead
            of the whole sequence's, several times the JSON's size.

    A target whose logit is ``-inf`` (a masked token the model cannot produce) is logged
    with ``target_prob`` 0 and ``target_rank`` = the vocabulary size (last), and no
    ``loss`` (it is infinite); the step's mean loss (when ``loss`` is None) leaves such
    positions out.

    Raises:
        ValueError: wrong shapes, non-float logits or logits with no data (the ``meta``
            device), ids outside the vocabulary, NaN or ``+inf`` logits (or a row all
            ``-inf``) at a logged position, a ``top_k`` that is not a positive integer,
            a tokenizer that fails or returns the wrong number of pieces.
    """
    import torch

    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.device.type == "meta":
        raise ValueError("logits are on the meta device: they hold no values (move the model to a real device "
                         "or run the forward pass on materialised weights)")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point (fp32, fp16 or bf16), got {logits.dtype}")
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (T, V) or (B, T, V), got {tuple(logits.shape)}")
    batch, length, vocab = logits.shape
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    top_k = int(top_k)
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

    valid, next_target = next_token_targets(mask, targets)
    rows = valid.flatten().nonzero().squeeze(1)
    row_targets = next_target.flatten()[rows]
    if bool(((row_targets < 0) | (row_targets >= vocab)).any()):
        raise ValueError(f"labels hold ids outside the vocabulary of size {vocab} (only -100 marks ignored positions)")

    stats = _row_stats(logits, rows, row_targets, k)
    n = rows.numel()
    top_ids = stats[:, :k].astype(np.int64)
    top_probs = _round_sig(stats[:, k:2 * k], CANDIDATE_DIGITS)
    target_prob, entropy, token_loss, rank = (stats[:, 2 * k + j] for j in range(4))
    masked = np.isposinf(token_loss) & np.isfinite(entropy)  # the target's logit is -inf: p = 0
    rank[masked] = vocab
    if n and not (np.isfinite(entropy).all() and (np.isfinite(token_loss) | masked).all()):
        r = int(rows[int(np.flatnonzero(~(np.isfinite(entropy) & (np.isfinite(token_loss) | masked)))[0])])
        raise ValueError(f"logits hold NaN or infinite values (sequence {r // length}, position {r % length})")

    if loss is None:
        loss = float(token_loss[~masked].mean()) if n > int(masked.sum()) else None
    elif not math.isfinite(float(loss)):
        raise ValueError(f"loss is {loss}; pass a finite number or None")

    vocab_ids = np.unique(np.concatenate([kept_ids.numpy(), top_ids.ravel(), row_targets.numpy()]))
    strings = dict(zip(vocab_ids.tolist(), token_strings(tokenizer, vocab_ids.tolist())))
    masked_l = masked.tolist()

    tprob_l, ent_l, loss_l = (_round_sig(a).tolist() for a in (target_prob, entropy, token_loss))
    rank_l = rank.astype(np.int64).tolist()
    rows_l, tgt_l = rows.tolist(), row_targets.tolist()

    sequences = []
    j = start = end = 0
    for b in range(batch):
        kept = mask[b].nonzero().squeeze(1).tolist()
        where = {t: p for p, t in enumerate(kept)}
        seq_ids = ids[b, kept].tolist()
        seq: dict[str, Any] = {}
        if names is not None:
            seq["name"] = str(names[b])
        seq.update(tokens=[strings[i] for i in seq_ids], token_ids=seq_ids)
        if as_json:  # what client_json makes of the dict: its keys in order, predictions last
            out, sep = bytearray(client_json(seq)[:-1]), b""
            out += b',"predictions":['
        predictions = []
        while j < n and rows_l[j] // length == b:
            if j == end:  # the candidates as Python objects a block at a time (a few times their JSON's memory)
                start, end = j, min(n, j + _BLOCK)
                block_ids, block_probs = top_ids[start:end].tolist(), top_probs[start:end].tolist()
            tgt = tgt_l[j]
            pred = {
                "position": where[rows_l[j] % length],
                "target_token_id": tgt,
                "target_token_str": strings[tgt],
                "target_prob": tprob_l[j],
                "target_rank": rank_l[j],
                "loss": max(loss_l[j], 0.0),
                "correct": rank_l[j] == 1,
                "entropy": max(ent_l[j], 0.0),
                "top_k": [[i, strings[i], p] for i, p in zip(block_ids[j - start], block_probs[j - start])],
            }
            if masked_l[j]:
                del pred["loss"]  # infinite: JSON has no such number
            if not as_json:
                predictions.append(pred)
            else:
                out += sep
                out += client_json(pred)
                sep = b","
            j += 1
        if as_json:
            out += b"]}"
            sequences.append(EncodedJSON(out))
        else:
            seq["predictions"] = predictions
            sequences.append(seq)

    meta: dict[str, Any] = {"vocab_size": vocab, "batch_size": batch, "sequence_length": length, "top_k": k}
    if model_name is not None:
        meta["model_name"] = model_name
    meta.update(metadata or {})
    meta["seqviz_version"] = __version__  # the version that wrote the entry, whatever ``metadata`` says
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


def _top_k(x, k: int, out: tuple | None = None):
    """``torch.topk(x, k, dim=-1)`` of a ``(rows, V)`` tensor, faster on large vocabularies.

    The k largest entries of a row all lie in the k blocks (of ``TOPK_BLOCK`` entries)
    with the largest maxima: any other entry is at most the k-th largest block maximum,
    and those k maxima are k entries at least that large. So one cheap max per block,
    then a top-k over k blocks instead of the whole row. Same values; the order of tied
    entries may differ. A NaN makes its block's maximum NaN, which top-k ranks first.
    ``out``: optional ``(values, indices)`` tensors to write into.
    """
    import torch

    rows, vocab = x.shape
    blocks = vocab // TOPK_BLOCK
    if blocks < 4 * k:
        return torch.topk(x, k, dim=-1, out=out)
    whole = blocks * TOPK_BLOCK
    grid = x[:, :whole].unflatten(1, (blocks, TOPK_BLOCK))
    best = torch.topk(grid.amax(-1), k, dim=-1).indices  # (rows, k) block numbers
    candidates = grid.gather(1, best.unsqueeze(-1).expand(rows, k, TOPK_BLOCK)).flatten(1)
    where = (best.unsqueeze(-1) * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=x.device)).flatten(1)
    if whole < vocab:  # the last, partial block is always a candidate
        candidates = torch.cat([candidates, x[:, whole:]], 1)
        where = torch.cat([where, torch.arange(whole, vocab, device=x.device).expand(rows, -1)], 1)
    values, picked = torch.topk(candidates, k, dim=-1)
    if out is None:
        return values, where.gather(1, picked)
    out[0].copy_(values)
    torch.gather(where, 1, picked, out=out[1])
    return out


def _chunk_rows(n: int, vocab: int) -> int:
    """Rows per chunk for ``n`` selected rows of ``vocab`` logits.

    A chunk is a 64th of the rows' logits (as float32), between ``CHUNK_BYTES`` and
    ``MAX_CHUNK_BYTES``: large logits take few, large chunks (each tensor operation is
    split across threads, and each split waits for its slowest thread: thousands of small
    ones cost more than their work, most of all on a busy machine) at a working memory of
    a few percent of them. On small logits (e.g. one captured row of a small vocabulary)
    a chunk is at most an eighth of the rows, unless that makes it smaller than
    ``MIN_CHUNK_BYTES``, so the working buffers stay a small part of the logits without a
    chunk per handful of rows.
    """
    row = 4 * vocab
    size = min(max(n * row // 64, CHUNK_BYTES), MAX_CHUNK_BYTES)
    return max(1, min(n, size // row, max(-(-n // 8), MIN_CHUNK_BYTES // row)))


def _row_stats(logits, rows, targets, k: int) -> np.ndarray:
    """Per selected row of ``logits`` (B, T, V), numbered ``b * T + t``: top-k ids and
    probs, p(target), entropy (nats), -log p(target), rank.

    Returns a float64 array of shape ``(len(rows), 2k + 4)`` on the host.

    Rows are read in chunks (``_chunk_rows``: a 64th of the selected rows' logits as
    float32, between ``CHUNK_BYTES`` and ``MAX_CHUNK_BYTES``; at most an eighth of the rows
    on small logits). The only large allocations are two such buffers, made
    once: a float32 copy of the chunk (for half-precision or non-contiguous logits) and a
    scratch for the probabilities, the entropy's products and the rank count. Per chunk:
    one top-k (``_top_k``), one fused softmax into the scratch, the entropy's dot product
    in place there, and a full-row count only for the rows whose target is not among the
    top k. Per-row results go straight into small preallocated tensors; what is derived
    from them is computed once at the end.
    """
    import torch

    n = rows.numel()
    batch, length, vocab = logits.shape
    if n == 0:
        return np.zeros((0, 2 * k + 4))
    device = logits.device
    f32 = dict(dtype=torch.float32, device=device)
    targets_d = targets.to(device)
    chunk = _chunk_rows(n, vocab)
    scratch = torch.empty(chunk, vocab, **f32)
    upcast = None
    if logits.dtype != torch.float32 or logits.stride(-1) != 1:
        upcast = torch.empty(chunk, vocab, **f32)
    top_v, top_i = torch.empty(n, k, **f32), torch.empty(n, k, dtype=torch.long, device=device)
    lse, entropy, t_logit, rank = torch.empty(4, n, **f32)
    # Chunks never straddle a gap between selected rows (so never two sequences):
    # each is a view of the logits.
    breaks = (torch.diff(rows) != 1).nonzero().squeeze(1) + 1
    edges = [0, *breaks.tolist(), n]
    spans = [(a, min(a + chunk, b)) for lo, b in zip(edges, edges[1:]) for a in range(lo, b, chunk)]
    rows_l = rows.tolist()
    with torch.no_grad():
        for start, stop in spans:
            m = stop - start
            b, t0 = divmod(rows_l[start], length)
            x = logits[b, t0:t0 + m]
            if upcast is not None:
                x = upcast[:m].copy_(x)
            p = scratch[:m]
            v, i = _top_k(x, k, out=(top_v[start:stop], top_i[start:stop]))
            torch.softmax(x, -1, out=p)
            # lse from the top entry: p_max = exp(max - lse).
            c_lse = torch.sub(v[:, 0], p.gather(1, i[:, :1]).squeeze(1).log_(), out=lse[start:stop])
            # H = lse - E_p[logit], the products in place (p is not needed after this)
            c_ent = torch.sub(c_lse, p.mul_(x).sum(1), out=entropy[start:stop])
            if not bool(torch.isfinite(c_ent).all()):  # -inf logits (masked tokens) give 0 * -inf above
                idx = (~torch.isfinite(c_ent)).nonzero().squeeze(1)
                logp = torch.log_softmax(x[idx], -1)
                c_ent[idx] = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
            t = targets_d[start:stop].unsqueeze(1)
            c_tl = torch.gather(x, 1, t, out=t_logit[start:stop].unsqueeze(1))
            # Rank = 1 + number of strictly larger logits: read off the top-k when the
            # target is in it (done for all rows at the end), else count over the row
            # (into the scratch: a float 0/1 buffer sums fastest).
            missed = (i != t).all(1)
            n_missed = int(missed.sum())
            if n_missed == m:
                torch.sum(torch.gt(x, c_tl, out=p), 1, out=rank[start:stop])
            elif n_missed:
                idx = missed.nonzero().squeeze(1)
                counted = torch.index_select(x, 0, idx, out=p[:n_missed]).gt_(c_tl[idx])
                rank[start + idx] = counted.sum(1)
            if n_missed < m:
                hit = (~missed).nonzero().squeeze(1)
                rank[start + hit] = (v[hit] > c_tl[hit]).sum(1).to(torch.float32)
        rank += 1
        return torch.cat([
            top_i.double(), (top_v - lse.unsqueeze(1)).exp().double(),
            torch.stack([(t_logit - lse).exp(), entropy, lse - t_logit, rank], 1).double(),
        ], 1).cpu().numpy()
