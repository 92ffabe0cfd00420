"""How long building the per-token series of a long run takes.

A synthetic run shaped like the converter's output (top-20 candidates per position):
STEPS steps x SEQS sequences x POSITIONS positions, where the targets of some positions
become top-1 as training goes on and some are lost again. It is written with
``TrainingDataWriter`` (not timed, apart from the columns file's share of it) to a
temporary folder: about 1.5 GB of JSONL for 1,000 x 4 x 512, plus its columns file.

Timed, all in this one run:

- index: ``TrainingDataReader.refresh()`` over the whole file (what any viewer does first);
- build: ``dynamics_for(reader)``, the path of ``seqviz serve``, the TensorBoard tab and
  ``seqviz learned``: series from the columns file (goal <= 1 s for 1,000 x 4 x 512);
- the same from the JSONL alone (columns file removed): parse each line with
  ``json.loads``, then ``Dynamics.add_entry``; both parts are shown;
- one learned-at / series / diff query on the built state.

    python benchmarks/bench_dynamics.py [--steps 1000] [--seqs 4] [--positions 512] [--no-jsonl-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from seqviz_trackers import TrainingDataReader, TrainingDataWriter, encode_entry
from seqviz_trackers.storage.columns import SUFFIX, encode_record
from seqviz_trackers.dynamics import Dynamics, compare, dynamics_for
from seqviz_trackers.format.entry import KnownIds

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
    ap.add_argument("--no-jsonl-only", action="store_true", help="skip the (slow) build without the columns file")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    pool = [[[int(k), f"t{k}", round(float(p), 5)]
             for k, p in zip(rng.integers(0, VOCAB, 19), np.sort(rng.uniform(0.001, 0.05, 19))[::-1])]
            for _ in range(64)]
    base_ids = rng.integers(0, VOCAB, (args.seqs, args.positions + 1))
    learn_at = rng.integers(0, args.steps * 2, (args.seqs, args.positions))  # about half learned by the end
    cells = args.steps * args.seqs * args.positions
    scale = 1000 * 4 * 512 / cells

    with tempfile.TemporaryDirectory(prefix="seqviz-bench-") as tmp:
        path = os.path.join(tmp, "steps.jsonl")
        encode = record = 0.0
        known = KnownIds()
        started = time.perf_counter()
        with TrainingDataWriter(path, validate=False) as writer:
            for step in range(args.steps):
                entry = make_entry(step, args.steps, args.seqs, args.positions, rng, pool, base_ids, learn_at)
                t0 = time.perf_counter()
                line = encode_entry(entry, validate=False)
                t1 = time.perf_counter()
                encode_record(entry, 0, len(line) - 1, known)
                record += time.perf_counter() - t1
                encode += t1 - t0
                writer.write_line(line, entry)
                if step == args.steps - 2:
                    before = entry
                if step % 100 == 99:
                    print(f"  writing the run: {step + 1}/{args.steps} steps, {time.perf_counter() - started:.0f} s",
                          file=sys.stderr)
        size, cols_size = os.path.getsize(path), os.path.getsize(path + SUFFIX)
        print(f"run: {args.steps} steps x {args.seqs} sequences x {args.positions} positions = {cells:,} predictions; "
              f"JSONL {size / 1e9:.2f} GB, columns file {cols_size / 1e6:.1f} MB ({cols_size / size:.1%})")
        print(f"write: columns record {record / args.steps * 1e3:.2f} ms/step = {record / encode:.2f} x the JSON "
              f"encoding of the line ({encode / args.steps * 1e3:.1f} ms/step)")

        reader = TrainingDataReader(path)
        t0 = time.perf_counter()
        reader.refresh()
        index = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        dyn = dynamics_for(reader)
        build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert dyn.num_steps == args.steps
        print(f"index (reader.refresh)      {index:7.3f} s")
        print(f"build, columns file         {build:7.3f} s   ({build / args.steps * 1e3:.2f} ms/step; "
              f"{build * scale:.2f} s scaled to 1000x4x512, goal <= 1 s; CPU {build_cpu * scale:.2f} s, "
              f"load average {os.getloadavg()[0]:.1f})")

        if not args.no_jsonl_only:
            other = Dynamics()
            parse = add = 0.0
            for info in reader.steps:
                with open(path, "rb") as f:
                    f.seek(info.offset)
                    raw = f.read(info.length)
                t0 = time.perf_counter()
                entry = json.loads(raw)
                t1 = time.perf_counter()
                other.add_entry(entry)
                add += time.perf_counter() - t1
                parse += t1 - t0
            assert all((other.learned_at(s) == dyn.learned_at(s)).all() for s in range(args.seqs))
            assert (other.events() == dyn.events()).all()
            print(f"build, JSONL only           {parse + add:7.3f} s   = json.loads {parse:.3f} s + add_entry {add:.3f} s "
                  f"({add / args.steps * 1e3:.2f} ms/step); {(parse + add) / build:.0f} x the columns-file build, "
                  f"same learned-at steps and events")

        ev = dyn.events()
        per = dyn.per_step()
        print(f"forgetting events {len(ev):,}; learned at the end (top-1) "
              f"{sum(int((dyn.learned_at(s) >= 0).sum()) for s in range(args.seqs)):,} of {args.seqs * args.positions:,}; "
              f"peak gained/step {int(per['gained'].max())}")
        last = reader.latest()
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
