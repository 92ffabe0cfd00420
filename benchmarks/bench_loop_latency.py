"""Latency of ``/runs`` and ``/step`` while ``seqviz serve`` builds a run's dynamics.

Writes a run without its columns file (so the dynamics are built by parsing every JSONL
line: the slow path), starts ``seqviz serve --file`` as its own process, asks for
``/sequences`` (which builds the dynamics) and, until that answer arrives, times
``GET /runs`` and ``GET /step`` one after the other. Prints p50 / p99 / max of each,
with and without the build running. Goal: p99 <= 200 ms while the build runs.

    python benchmarks/bench_loop_latency.py [--steps 200] [--seqs 2] [--positions 512]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dynamics import VOCAB, make_entry  # noqa: E402
from bench_stream import percentile  # noqa: E402
from seqviz_trackers import TrainingDataWriter  # noqa: E402


def write_run(path: str, steps: int, seqs: int, positions: int) -> None:
    rng = np.random.default_rng(0)
    pool = [[[int(k), f"t{k}", round(float(p), 5)]
             for k, p in zip(rng.integers(0, VOCAB, 19), np.sort(rng.uniform(0.001, 0.05, 19))[::-1])]
            for _ in range(64)]
    base_ids = rng.integers(0, VOCAB, (seqs, positions + 1))
    learn_at = rng.integers(0, steps * 2, (seqs, positions))
    with TrainingDataWriter(path, validate=False, columns=False) as writer:
        for step in range(steps):
            writer.write_step(make_entry(step, steps, seqs, positions, rng, pool, base_ids, learn_at))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(port: int, path: str) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, (path, resp.status)
    finally:
        conn.close()
    return time.perf_counter() - t0


def sample(port: int, last_step: int, until: threading.Event | None, count: int = 0) -> dict[str, list[float]]:
    """Alternate ``/runs`` and ``/step`` until ``until`` is set (or ``count`` pairs)."""
    out: dict[str, list[float]] = {"/runs": [], "/step": []}
    n = 0
    while (until is not None and not until.is_set()) or (until is None and n < count):
        out["/runs"].append(timed_get(port, "/runs"))
        out["/step"].append(timed_get(port, f"/step?run=run&step={n % (last_step + 1)}"))
        n += 1
    return out


def report(label: str, times: dict[str, list[float]]) -> None:
    for route, values in times.items():
        ms = [v * 1e3 for v in values]
        print(f"{label:<22} {route:<6} n={len(ms):4d}  p50 {percentile(ms, 50):7.1f} ms  "
              f"p99 {percentile(ms, 99):7.1f} ms  max {max(ms):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seqs", type=int, default=2)
    ap.add_argument("--positions", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqviz-bench-") as tmp:
        path = os.path.join(tmp, "run.jsonl")
        write_run(path, args.steps, args.seqs, args.positions)
        print(f"run: {args.steps} steps x {args.seqs} x {args.positions}, JSONL {os.path.getsize(path) / 1e6:.0f} MB, "
              f"no columns file; load average {os.getloadavg()[0]:.1f}")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "seqviz_trackers.cli", "serve", "--file", path, "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "serving" in proc.stdout.readline()
            timed_get(port, "/runs")  # index the file once
            report("idle", sample(port, args.steps - 1, None, count=50))
            done = threading.Event()
            build: dict[str, float] = {}

            def run_build() -> None:
                build["seconds"] = timed_get(port, "/sequences?run=run")
                done.set()

            t = threading.Thread(target=run_build)
            t.start()
            during = sample(port, args.steps - 1, done)
            t.join()
            print(f"dynamics build (GET /sequences, first call): {build['seconds']:.2f} s")
            report("during the build", during)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
