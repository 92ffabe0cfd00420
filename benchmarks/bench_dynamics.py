"""How long building the per-token series takes, apart from reading the JSON.

A synthetic run shaped like the converter's output (top-20 candidates per position):
STEPS steps x SEQS sequences x POSITIONS positions, where the targets of some positions
become top-1 as training goes on and some are lost again. Each step's entry is
serialised to one JSON line (not timed), parsed with ``json.loads`` (timed: "parse"),
and added to :class:`seqviz_trackers.dynamics.Dynamics` (timed: "build", goal <= 1 s for
1,000 x 4 x 512). Entries are streamed one at a time: the whole run would not fit in
memory as Python objects (about 1.5 GB of JSON). Then one learned-at / series / diff
query is timed on the built state.

    python benchmarks/bench_dynamics.py [--steps 1000] [--seqs 4] [--positions 512]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from seqviz_trackers.dynamics import Dynamics, compare

VOCAB = 50257


def make_entry(step: int, steps: int, seqs: int, positions: int, rng: np.random.Generator,
               pool: list[list[list]], base_ids: np.ndarray, learn_at: np.ndarray) -> dict:
    """One step: position (s, i) has its target at rank 1 from ``learn_at[s, i]`` on (with noise)."""
    sequences = []
    for s in range(seqs):
        ids = base_ids[s]
        learned = (step >= learn_at[s]) ^ (rng.random(positions) < 0.02)  # 2% flips: forgetting events
        prob = np.where(learned, rng.uniform(0.4, 0.95, positions), rng.uniform(1e-4, 0.1, positions))
        rank = np.where(learned, 1, rng.integers(2, 200, positions))
        loss = -np.log(prob)
        entropy = rng.uniform(0.1, 6.0, positions)
        top1 = np.where(learned, ids[1:positions + 1], rng.integers(0, VOCAB, positions))
        preds = [{
            "position": i, "target_token_id": t, "target_token_str": f"t{t}", "target_prob": p,
            "target_rank": r, "loss": l, "correct": r == 1, "entropy": e,
            "top_k": [[k, f"t{k}", p if r == 1 else 0.5]] + pool[(step + i) % len(pool)],
        } for i, (t, p, r, l, e, k) in enumerate(zip(
            ids[1:positions + 1].tolist(), np.round(prob, 5).tolist(), rank.tolist(), np.round(loss, 5).tolist(),
            np.round(entropy, 5).tolist(), top1.tolist()))]
        sequences.append({"name": f"probe-{s}", "tokens": [f"t{t}" for t in ids.tolist()],
                          "token_ids": ids.tolist(), "predictions": preds})
    return {"step": step, "timestamp": 0.0, "loss": 2.0, "perplexity": 7.39, "schema_version": 1,
            "sequences": sequences, "metadata": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--positions", type=int, default=512)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    pool = [[[int(k), f"t{k}", round(float(p), 5)]
             for k, p in zip(rng.integers(0, VOCAB, 19), np.sort(rng.uniform(0.001, 0.05, 19))[::-1])]
            for _ in range(64)]
    base_ids = rng.integers(0, VOCAB, (args.seqs, args.positions + 1))
    learn_at = rng.integers(0, args.steps * 2, (args.seqs, args.positions))  # about half learned by the end

    dyn = Dynamics()
    parse = build = build_cpu = 0.0
    total_bytes = 0
    for step in range(args.steps):
        line = json.dumps(make_entry(step, args.steps, args.seqs, args.positions, rng, pool, base_ids, learn_at))
        total_bytes += len(line)
        t0 = time.perf_counter()
        entry = json.loads(line)
        t1, c1 = time.perf_counter(), time.process_time()
        dyn.add_entry(entry)
        t2, c2 = time.perf_counter(), time.process_time()
        parse += t1 - t0
        build += t2 - t1
        build_cpu += c2 - c1
        if step == args.steps - 2:
            before = entry
        last = entry

    cells = args.steps * args.seqs * args.positions
    print(f"run: {args.steps} steps x {args.seqs} sequences x {args.positions} positions = {cells:,} predictions, "
          f"{total_bytes / 1e9:.2f} GB of JSON")
    print(f"parse (json.loads)  {parse:7.3f} s   ({parse / args.steps * 1e3:.1f} ms/step)")
    scale = 1000 * 4 * 512 / cells
    print(f"build (series)      {build:7.3f} s   ({build / args.steps * 1e3:.2f} ms/step; "
          f"{build * scale:.2f} s scaled to 1000x4x512, goal <= 1 s)")
    print(f"build, CPU time     {build_cpu:7.3f} s   ({build_cpu * scale:.2f} s scaled; this process only, "
          f"the machine may be shared: load average {os.getloadavg()[0]:.1f})")
    ev = dyn.events()
    per = dyn.per_step()
    print(f"forgetting events {len(ev):,}; learned at the end (top-1) "
          f"{sum(int((dyn.learned_at(s) >= 0).sum()) for s in range(args.seqs)):,} of {args.seqs * args.positions:,}; "
          f"peak gained/step {int(per['gained'].max())}")
    t0 = time.perf_counter()
    for s in range(args.seqs):
        dyn.learned_at(s)
    dyn.per_step()
    t1 = time.perf_counter()
    cmp = compare(before, last, limit=20, per_token=True)
    t2 = time.perf_counter()
    print(f"query: learned-at + per-step counts {(t1 - t0) * 1e3:.1f} ms; diff of two steps (with per-token) "
          f"{(t2 - t1) * 1e3:.1f} ms, {len(json.dumps(cmp)) / 1e3:.0f} kB JSON "
          f"({len(json.dumps({k: v for k, v in cmp.items() if k != 'per_token'})) / 1e3:.0f} kB without per_token)")


if __name__ == "__main__":
    main()
