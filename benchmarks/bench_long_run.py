"""How fast the data routes answer on long runs, through ``seqviz serve`` and a real ``tensorboard``.

Two synthetic runs shaped like the converter's output (``bench_dynamics.make_entry``: 20
candidates per position, targets that become top-1 as training goes on, some forgotten
again), written through the TensorBoard mirror (``TensorBoardMirror``: the asset file
``plugins/seqviz/steps.jsonl`` with its columns cache, written by the writer as usual, and
one tiny summary per step), not timed:

- long:  1,000 steps x 4 sequences x 512 positions (about 1.4 GB of JSONL);
- many: 10,000 steps x 4 sequences x 64 positions.

Each run is served by ``seqviz serve --file <asset>`` and by ``tensorboard --logdir``
(``--load_fast=true``) as child processes, and asked over HTTP (urllib, gzip accepted as a
browser does; a response is timed to its last byte) for what the dashboard asks:

- ``first page``: ``/`` then ``runs``, ``steps?run=R`` and ``step?run=R&step=LAST&view=1`` (what
  the page waits for before its first paint; the constant static files are left out);
- ``steps`` (the whole list), ``steps?after=`` (a poll: one new step), ``step`` (a step
  change: random steps, ``view=1``: the step view the dashboard asks for), ``series`` (one
  token's history, ``points=160`` as the dashboard asks), ``diff`` (the last step vs the one before, ``tokens=1&limit=50``), ``learned``.

Printed:

- growth: the run is written in three parts (1/4, 1/2, all of its steps) while one process
  of each back end stays up; after each part, ``new`` is the first request of each route
  after the steps were appended (the new data is read then: should grow with the new data
  only) and ``warm`` the median of ``--repeat`` more (should stay about the same per request,
  apart from answers that hold every step: ``steps``, ``series``);
- cold: at the full size, for each route a fresh process (columns cache present, files in
  the page cache) answering that route as its first request; goal <= 2 s;
- warm at the full size, goal <= 300 ms.

    python benchmarks/bench_long_run.py [--quick] [--repeat 5] [--only long|many] [--no-tensorboard]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_dynamics import VOCAB, make_entry  # noqa: E402

from seqviz_trackers.storage.jsonl import encode_entry  # noqa: E402

WARM_GOAL, COLD_GOAL = 0.300, 2.0
GZIP = {"Accept-Encoding": "gzip, deflate"}
ROUTES = ["first page", "steps", "steps?after=", "step", "series", "diff", "learned"]
RUN = "run"  # the run directory's name: TensorBoard's run name


class Synthetic:
    """Steps of one synthetic run, made on demand (same run whatever parts it is written in)."""

    def __init__(self, steps: int, seqs: int, positions: int):
        self.steps, self.seqs, self.positions = steps, seqs, positions
        self.rng = np.random.default_rng(0)
        self.pool = [[[int(k), f"t{k}", round(float(p), 5)]
                      for k, p in zip(self.rng.integers(0, VOCAB, 19), np.sort(self.rng.uniform(0.001, 0.05, 19))[::-1])]
                     for _ in range(64)]
        self.base_ids = self.rng.integers(0, VOCAB, (seqs, positions + 1))
        self.learn_at = self.rng.integers(0, steps * 2, (seqs, positions))
        self.written = 0

    def write(self, run_dir: Path, upto: int) -> float:
        from tb_plugin import TensorBoardMirror

        t0 = time.perf_counter()
        with TensorBoardMirror(run_dir) as mirror:
            for step in range(self.written, upto):
                entry = make_entry(step, self.steps, self.seqs, self.positions, self.rng, self.pool,
                                   self.base_ids, self.learn_at)
                entry["loss"] = round(5.0 * (1 - step / (self.steps + 1)), 5)
                entry["timestamp"] = 1.7e9 + step
                mirror.log_step(entry, encode_entry(entry, validate=False))
        self.written = upto
        return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, gzip: bool = True) -> bytes:
    req = urllib.request.Request(url, headers=GZIP if gzip else {})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def wait_until(fn, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if fn():
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


class Backend:
    """One server process over a log directory; ``base`` is where the data routes are."""

    def __init__(self, kind: str, logdir: Path):
        self.kind, self.logdir = kind, logdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(logdir / f"{kind}-{self.port}.log", "wb")
        asset = logdir / RUN / "plugins" / "seqviz" / "steps.jsonl"
        if kind == "serve":
            cmd = [sys.executable, "-m", "seqviz_trackers.cli", "serve", "--file", str(asset), "--port", str(self.port)]
            self.base, self.page = self.url + "/", self.url + "/"
        else:
            cmd = [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(logdir), "--host", "127.0.0.1",
                   "--port", str(self.port), "--load_fast=true", "--reload_interval", "1"]
            self.base, self.page = self.url + "/data/plugin/seqviz/", self.url + "/"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            if kind == "serve":
                wait_until(lambda: fetch(self.page), "seqviz serve did not answer")
            else:  # TensorBoard's own run list (not the plugin's: that would read the asset)
                wait_until(lambda: RUN in json.loads(fetch(self.url + "/data/runs", gzip=False)), "tensorboard did not list the run")
        except BaseException:
            self.stop()
            raise
        self.run = "steps" if kind == "serve" else RUN  # serve --file names the run after the file

    def route(self, route: str, **params) -> bytes:
        return fetch(self.base + route + "?" + urllib.parse.urlencode({"run": self.run, **params}))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def request(backend: Backend, name: str, last: int, steps: int, positions: int, rng: random.Random) -> tuple[float, int]:
    """(seconds, bytes) of one request of ``name`` (a row of :data:`ROUTES`)."""
    t0 = time.perf_counter()
    if name == "first page":
        size = len(fetch(backend.page)) + len(fetch(backend.base + "runs"))
        size += len(backend.route("steps")) + len(backend.route("step", step=last, view=1))
    elif name == "steps":
        size = len(backend.route("steps"))
    elif name == "steps?after=":
        size = len(backend.route("steps", after=last - 1))
    elif name == "step":
        size = len(backend.route("step", step=rng.randrange(steps), view=1))
    elif name == "series":
        size = len(backend.route("series", seq=rng.randrange(4), pos=rng.randrange(positions), points=160))
    elif name == "diff":
        size = len(backend.route("diff", b=last, tokens=1, limit=50))
    else:
        size = len(backend.route("learned"))
    return time.perf_counter() - t0, size


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def measure_run(label: str, run: Synthetic, kinds: list[str], repeat: int, root: Path) -> list[str]:
    logdir = root / label
    run_dir = logdir / RUN
    rng = random.Random(1)
    parts = sorted({max(1, run.steps // 4), max(1, run.steps // 2), run.steps})
    backends: dict[str, Backend] = {}
    growth: dict[tuple[str, str], list[str]] = {}
    warm_full: dict[tuple[str, str], float] = {}
    sizes: dict[tuple[str, str], int] = {}
    print(f"\n== {label}: {run.steps:,} steps x {run.seqs} x {run.positions} positions ==", flush=True)
    try:
        for upto in parts:
            took = run.write(run_dir, upto)
            size = (run_dir / "plugins" / "seqviz" / "steps.jsonl").stat().st_size
            print(f"wrote steps to {upto:,}: JSONL {size / 1e9:.3f} GB (this part {took:.0f} s, not timed)", flush=True)
            for kind in kinds:
                if kind not in backends:
                    backends[kind] = Backend(kind, logdir)
                b = backends[kind]
                for name in ROUTES:
                    first, _ = request(b, name, upto - 1, upto, run.positions, rng)
                    times, nbytes = [], 0
                    for _ in range(repeat):
                        t, nbytes = request(b, name, upto - 1, upto, run.positions, rng)
                        times.append(t)
                    warm = statistics.median(times)
                    growth.setdefault((kind, name), []).append(f"{ms(first)} / {ms(warm)}")
                    if upto == run.steps:
                        warm_full[(kind, name)], sizes[(kind, name)] = warm, nbytes
        for b in backends.values():
            b.stop()
        backends.clear()

        cold: dict[tuple[str, str], float] = {}
        for kind in kinds:
            for name in ROUTES:
                b = Backend(kind, logdir)
                try:
                    cold[(kind, name)], _ = request(b, name, run.steps - 1, run.steps, run.positions, rng)
                finally:
                    b.stop()
    finally:
        for b in backends.values():
            b.stop()

    load = os.getloadavg()[0]
    head = " / ".join(f"{p:,}" for p in parts)
    print(f"\ngrowth: first request after the steps were appended / warm median of {repeat}, ms, at {head} steps")
    for (kind, name), cells in growth.items():
        print(f"  {kind:<11} {name:<13} " + "   ".join(f"{c:>11}" for c in cells))
    print(f"\nat {run.steps:,} steps (cold: a fresh process, its first request; goals warm <= 300 ms, cold <= 2 s):")
    rows = []
    for kind in kinds:
        for name in ROUTES:
            w, c = warm_full[(kind, name)], cold[(kind, name)]
            ok = "ok" if w <= WARM_GOAL and c <= COLD_GOAL else "MISSED"
            line = (f"| {label} | {kind} | {name} | {ms(c)} | {ms(w)} | {sizes[(kind, name)] / 1e3:,.0f} | "
                    f"{' · '.join(growth[(kind, name)])} | {ok} |")
            rows.append(line)
            print(f"  {kind:<11} {name:<13} cold {ms(c):>6} ms  warm {ms(w):>6} ms  {sizes[(kind, name)] / 1e3:>9,.0f} kB  {ok}")
    print(f"load average while measuring: {load:.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small runs: 100 x 4 x 128 and 1,000 x 4 x 32")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=["long", "many"])
    ap.add_argument("--no-tensorboard", action="store_true", help="seqviz serve only")
    ap.add_argument("--dir", help="make the temporary folder of the runs here (default: the system's)")
    args = ap.parse_args()
    shapes = {"long": (100, 4, 128), "many": (1000, 4, 32)} if args.quick else {"long": (1000, 4, 512), "many": (10000, 4, 64)}
    kinds = ["serve"] + ([] if args.no_tensorboard else ["tensorboard"])
    with tempfile.TemporaryDirectory(prefix="seqviz-long-", dir=args.dir) as tmp:
        rows = []
        for label, shape in shapes.items():
            if args.only in (None, label):
                rows += measure_run(label, Synthetic(*shape), kinds, args.repeat, Path(tmp))
    print("\n| run | back end | request | cold ms | warm ms | kB | new / warm ms as the run grows | goal |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
