"""How long the ``compare_runs`` route takes on two long runs.

Two synthetic runs shaped like the converter's output (``bench_dynamics.make_entry``, one
candidate per position to keep the files small: the route reads the series, not the
candidates): STEPS steps x SEQS sequences x POSITIONS positions with the same probes and
different learned-at steps. Both runs log STEPS steps, run B every other step number
(0, 2, 4, ...: twice the span), so A's odd steps are aligned to B's nearest step at or
before. Written with ``TrainingDataWriter`` (not timed) to a
temporary folder, then, all in this one run:

- build: ``dynamics_for`` of both readers (what the first request pays, once per run);
- warm: ``compare_runs?a&b&step&tokens=1&limit=50`` through the route table at B's last
  step (both runs whole: every logged step of each read), A's last step, a middle and an
  early step (goal <= 300 ms at 2 x 1,000 x 4 x 512), plus the JSON encoding of the answer
  (what a back end adds).

    python benchmarks/bench_compare_runs.py [--steps 1000] [--seqs 4] [--positions 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from bench_dynamics import make_entry
from seqviz_trackers import TrainingDataReader, TrainingDataWriter
from seqviz_trackers.dynamics import dynamics_for
from seqviz_trackers.serve.api import Runs, handle

GOAL_MS = 300.0


def write_run(path: str, steps: list[int], total: int, seqs: int, positions: int, seed: int, base_ids: np.ndarray) -> None:
    rng = np.random.default_rng(seed)
    learn_at = rng.integers(0, total * 2, (seqs, positions))  # about half learned by the end
    with TrainingDataWriter(path) as w:
        for step in steps:
            w.write_step(make_entry(step, total, seqs, positions, rng, [[]], base_ids, learn_at))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--positions", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    base_ids = np.random.default_rng(0).integers(0, 50257, (args.seqs, args.positions + 1))
    steps_a = list(range(args.steps))
    steps_b = [2 * s for s in steps_a]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = {"a": os.path.join(tmp, "a.jsonl"), "b": os.path.join(tmp, "b.jsonl")}
        write_run(paths["a"], steps_a, args.steps, args.seqs, args.positions, 1, base_ids)
        write_run(paths["b"], steps_b, args.steps, args.seqs, args.positions, 2, base_ids)
        sizes = sum(os.path.getsize(p) for p in paths.values()) / 1e6
        print(f"runs: A {len(steps_a)} steps, B {len(steps_b)} steps, {args.seqs} x {args.positions} tokens, "
              f"{sizes:.0f} MB of JSONL (written in {time.perf_counter() - t0:.0f} s, not timed)")

        runs = Runs()
        for name, path in paths.items():
            runs.add(name, path)
        t0 = time.perf_counter()
        for name in paths:
            dynamics_for(runs.reader(name))
        build = time.perf_counter() - t0
        print(f"build both runs' series (dynamics_for, columns files): {build:.2f} s, once")

        for label, step in (("B's last step (both runs whole)", steps_b[-1]), ("A's last step", steps_a[-1]),
                            ("middle step", steps_a[len(steps_a) // 2] + 1),
                            ("early step", steps_a[len(steps_a) // 10] + 1)):
            query = {"a": "a", "b": "b", "step": str(step), "tokens": "1", "limit": "50"}
            status, body = handle(runs, "compare_runs", query)  # first call at this step
            assert status == 200, body
            times, encode = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                handle(runs, "compare_runs", query)
                t1 = time.perf_counter()
                text = json.dumps(body, separators=(",", ":"))
                encode.append(time.perf_counter() - t1)
                times.append(t1 - t0)
            ms = statistics.median(times) * 1000
            s = body["summary"]
            print(f"{label} {step} (A at {body['a']['step']}, B at {body['b']['step']}): route {ms:.0f} ms median of "
                  f"{args.repeat} = {ms / GOAL_MS:.2f} x the {GOAL_MS:.0f} ms goal; JSON {len(text) / 1e3:.0f} kB encoded in "
                  f"{statistics.median(encode) * 1000:.0f} ms; {s['compared']} tokens, A ahead on {s['a_ahead']}, "
                  f"B on {s['b_ahead']}, {s['same']} same step, {s['neither']} neither")
        print(f"load average while measuring: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
