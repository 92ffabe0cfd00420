"""Latency from ``write_step`` returning to a connected websocket client having the step.

Starts ``seqviz serve`` at its default settings (interval 0.25 s) as its own process,
connects clients (1, then 50), appends steps at irregular intervals like a training
loop, and prints p50 / p99 / max latency. Targets: p50 <= 100 ms, p99 <= 300 ms.

    .venv/bin/python benchmarks/bench_stream.py [--steps 60] [--clients 1 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


STEP_MSG = re.compile(r'\{"type":"step","run":"[^"]*","entry":\{"step":(\d+),')


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def measure(url: str, path: Path, entry: dict, n_clients: int, n_steps: int, first_step: int) -> list[float]:
    from websockets.asyncio.client import connect

    from seqviz_trackers import TrainingDataWriter

    received: dict[int, list[float]] = {}
    ready = threading.Event()
    done = threading.Event()
    last = first_step + n_steps - 1

    async def client(i: int, opened: list) -> None:
        async with connect(url, max_size=None) as ws:
            opened.append(i)
            if len(opened) == n_clients:
                ready.set()
            async for raw in ws:
                t = time.perf_counter()
                m = STEP_MSG.match(raw)  # no full parse: time the server, not this client
                if m:
                    step = int(m.group(1))
                    received.setdefault(step, []).append(t)
                    if step == last:
                        return

    async def main() -> None:
        opened: list[int] = []
        await asyncio.gather(*(client(i, opened) for i in range(n_clients)))
        done.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    time.sleep(0.5)  # let the connect-time messages go by
    written: dict[int, float] = {}
    rng = random.Random(0)
    with TrainingDataWriter(path, validate=False) as writer:
        for k in range(n_steps):
            step = first_step + k
            writer.write_step({**entry, "step": step})
            written[step] = time.perf_counter()
            time.sleep(rng.uniform(0.05, 0.3))
    done.wait(30)
    latencies = []
    for step, t_write in written.items():
        for t in received.get(step, []):
            latencies.append(1000 * (t - t_write))
    missing = n_steps * n_clients - len(latencies)
    if missing:
        print(f"  ({missing} step deliveries missing: a step arriving in the same batch as the next one is sent once)")
    return latencies


def main() -> None:
    import os

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args()
    from web_data import learning_entry

    entry = learning_entry(50, 100)
    print(f"entry: {len(json.dumps(entry)) / 1e3:.0f} kB, 3 sequences")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "seqviz_trackers.cli", "serve", "--file", str(path), "--port", "0"],
                                stdout=subprocess.PIPE, text=True)
        try:
            proc.stdout.readline()
            url = proc.stdout.readline().split()[1].replace("http://", "ws://") + "ws"
            step = 0
            for n in args.clients:
                lat = measure(url, path, entry, n, args.steps, step)
                step += args.steps
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                print(f"{n:>3} client(s): {len(lat)} deliveries, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, "
                      f"max {max(lat):6.1f} ms, mean {statistics.mean(lat):6.1f} ms; targets p50 <= 100 "
                      f"({p50 / 100:.2f} of budget), p99 <= 300 ({p99 / 300:.2f} of budget)")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
