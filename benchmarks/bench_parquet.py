"""Size and time of the Parquet token table (``seqviz export FILE --format parquet``).

A synthetic run shaped like the converter's output: STEPS steps x SEQS probe sequences x
POSITIONS positions, top-20 candidates per position with probabilities rounded to 5
significant digits as the converter writes them, candidate ids drawn from a Zipf-like
distribution over a 50,257-token vocabulary with made-up display strings, and targets that
become top-1 as training goes on. Every candidate list is drawn anew (no pooled lists that
would compress unrealistically well). The run is written with ``TrainingDataWriter`` (so
the columns file is there too) to a temporary folder; about 1.6 GB for 1,000 x 4 x 512.

Printed, all from this one run: JSONL bytes; Parquet bytes with and without the top-k
column (with top-k: the token file plus its vocabulary file) and their ratio to the JSONL
(goal <= 0.15 with top-k); the export times (top-k:
every line parsed; without: from the columns file); the compressed bytes of each column
(summed over the row groups, from the file's metadata); a DuckDB ``GROUP BY step`` over
the file. ``--run FILE`` keeps the generated run there (and reuses it when it exists).

    python benchmarks/bench_parquet.py [--steps 1000] [--seqs 4] [--positions 512] [--run FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from seqviz_trackers import TrainingDataReader, TrainingDataWriter, encode_entry
from seqviz_trackers.storage.arrow import write_parquet

VOCAB = 50257
K = 20


def vocabulary(rng: np.random.Generator) -> list[str]:
    """Display strings of 1 to 8 letters, about half with a leading space, like BPE pieces."""
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(1, 9, VOCAB)
    spaces = rng.random(VOCAB) < 0.5
    return [(" " if sp else "") + "".join(letters[rng.integers(0, 26, n)]) for n, sp in zip(lengths, spaces)]


def sig5(x: np.ndarray) -> np.ndarray:
    """Round to 5 significant digits (as the converter does)."""
    with np.errstate(divide="ignore"):
        digits = 4 - np.floor(np.log10(np.abs(x)))
    digits = np.where(np.isfinite(digits), digits, 0)
    scale = 10.0 ** digits
    return np.round(x * scale) / scale


def make_entry(step: int, rng: np.random.Generator, vocab: list[str], base_ids: np.ndarray,
               learn_at: np.ndarray, zipf: np.ndarray) -> dict:
    seqs, positions = learn_at.shape
    n = seqs * positions
    targets = base_ids[:, 1:].reshape(n)
    learned = (step >= learn_at.reshape(n)) ^ (rng.random(n) < 0.02)
    rank = np.where(learned, 1, np.minimum(rng.geometric(0.08, n) + 1, 5000))
    logits = np.sort(rng.standard_normal((n, K)) * 2.0, axis=1)[:, ::-1]
    weights = np.exp(logits)
    probs = weights / (weights.sum(1, keepdims=True) + rng.uniform(0.05, 2.0, (n, 1)) * weights[:, :1])
    ids = rng.choice(VOCAB, size=(n, K), p=zipf)
    rows = np.flatnonzero(rank <= K)
    ids[rows, rank[rows] - 1] = targets[rows]
    target_prob = np.where(rank <= K, probs[np.arange(n), np.minimum(rank, K) - 1], probs[:, -1] * rng.random(n))
    probs, target_prob = sig5(probs), sig5(target_prob)
    loss = sig5(-np.log(target_prob))
    entropy = sig5(rng.uniform(0.1, 6.0, n))
    ids_l, probs_l = ids.tolist(), probs.tolist()
    sequences = []
    for s in range(seqs):
        preds = []
        for i in range(s * positions, (s + 1) * positions):
            t = int(targets[i])
            preds.append({
                "position": i - s * positions, "target_token_id": t, "target_token_str": vocab[t],
                "target_prob": float(target_prob[i]), "target_rank": int(rank[i]), "loss": float(loss[i]),
                "correct": bool(rank[i] == 1), "entropy": float(entropy[i]),
                "top_k": [[c, vocab[c], p] for c, p in zip(ids_l[i], probs_l[i])],
            })
        ids_s = base_ids[s].tolist()
        sequences.append({"name": f"probe-{s}", "tokens": [vocab[t] for t in ids_s[:positions]],
                          "token_ids": ids_s[:positions], "predictions": preds})
    loss_mean = float(loss.mean())
    return {"step": step, "timestamp": 1.7e9 + step, "loss": round(loss_mean, 5),
            "perplexity": round(float(np.exp(min(loss_mean, 50))), 5), "schema_version": 1,
            "sequences": sequences, "metadata": {"model_name": "bench", "vocab_size": VOCAB, "top_k": K}}


def column_sizes(path: str) -> dict[str, int]:
    """Compressed bytes of each column (leaf path) of a Parquet file, summed over its row groups."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            sizes[col.path_in_schema] = sizes.get(col.path_in_schema, 0) + col.total_compressed_size
    return sizes


def print_column_sizes(path: str, jsonl_bytes: int) -> None:
    sizes = column_sizes(path)
    total = sum(sizes.values())
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"    {name:28} {size / 1e6:9.2f} MB  {size / total:6.1%}  {size / jsonl_bytes:.4f} of the JSONL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--positions", type=int, default=512)
    ap.add_argument("--run", help="use this JSONL file (written first if it does not exist; kept afterwards)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vocab = vocabulary(rng)
    zipf = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    zipf /= zipf.sum()
    base_ids = rng.choice(VOCAB, size=(args.seqs, args.positions + 1), p=zipf)
    learn_at = rng.integers(0, args.steps * 2, (args.seqs, args.positions))
    rows = args.steps * args.seqs * args.positions

    with tempfile.TemporaryDirectory(prefix="seqviz-bench-") as tmp:
        path = args.run or os.path.join(tmp, "steps.jsonl")
        started = time.perf_counter()
        if not os.path.exists(path):
            with TrainingDataWriter(path, validate=False) as writer:
                for step in range(args.steps):
                    entry = make_entry(step, rng, vocab, base_ids, learn_at, zipf)
                    writer.write_line(encode_entry(entry, validate=False), entry)
                    if step % 100 == 99:
                        print(f"  writing the run: {step + 1}/{args.steps} steps, "
                              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        size = os.path.getsize(path)
        print(f"run: {args.steps} steps x {args.seqs} sequences x {args.positions} positions = {rows:,} rows; "
              f"JSONL {size / 1e9:.3f} GB (written in {time.perf_counter() - started:.0f} s)")

        results = {}
        for label, top_k in (("with top-k", True), ("without top-k", False)):
            out = os.path.join(tmp, f"tokens-{top_k}.parquet")
            t0, c0 = time.perf_counter(), time.process_time()
            result = write_parquet(TrainingDataReader(path), out, top_k=top_k)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert result.rows == rows, (result.rows, rows)
            results[top_k] = out
            goal = "  (goal <= 0.15)" if top_k else ""
            total = result.bytes + result.vocab_bytes
            words = f" with its vocabulary file ({result.vocab_bytes / 1e6:.2f} MB)" if result.vocab_path else ""
            print(f"parquet {label:14} {total / 1e6:8.1f} MB{words} = {total / size:.3f} of the JSONL{goal}; "
                  f"export {seconds:.1f} s (CPU {cpu:.1f} s, {seconds / args.steps * 1e3:.1f} ms/step), "
                  f"{result.row_groups} row groups")
            print_column_sizes(out, size)

        try:
            import duckdb
        except ImportError:
            return
        t0 = time.perf_counter()
        per_step = duckdb.sql(f"SELECT step, avg(loss) AS loss FROM '{results[True]}' GROUP BY step ORDER BY step").fetchall()
        print(f"duckdb: SELECT step, avg(loss) ... GROUP BY step over {len(per_step)} steps: "
              f"{(time.perf_counter() - t0) * 1e3:.0f} ms; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
