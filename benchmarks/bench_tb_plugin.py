"""How fast the seqviz TensorBoard plugin answers on a long run.

Writes a run of N logged steps (default 10,000) through the TensorBoard mirror, then
measures, inside TensorBoard's own WSGI app (Python loader) and against a real
``tensorboard --load_fast=true`` process:

- the step list (``steps?run=``), cold (first request indexes the file) and warm;
- one step (``step?run=&step=``) at random steps;
- the cost of steps appended while TensorBoard is open;
- reading through TensorBoard's file layer (``GFileFiles``) vs plain local files.

Targets (issue 4): step list <= 300 ms, one step <= 100 ms at 10,000 steps.

    .venv/bin/python benchmarks/bench_tb_plugin.py [--steps 10000] [--no-process]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from factories import make_entry  # noqa: E402
from tb_helpers import TensorBoardProcess, wsgi_app  # noqa: E402

from seqviz_trackers.storage.jsonl import TrainingDataReader, encode_entry  # noqa: E402
from tb_plugin import TensorBoardMirror, asset_path  # noqa: E402
from tb_plugin.plugin import GFileFiles  # noqa: E402

P = "/data/plugin/seqviz"
GZIP = {"Accept-Encoding": "gzip, deflate"}  # what a browser sends


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def summary(label: str, times: list[float], target: float | None = None) -> None:
    med = statistics.median(times)
    worst = max(times)
    verdict = "" if target is None else f"  (target {target * 1000:.0f} ms: {'ok' if worst <= target else 'MISSED'})"
    print(f"  {label:<44} median {ms(med)}  max {ms(worst)}  n={len(times)}{verdict}")


def write_run(run_dir: Path, steps: int) -> float:
    base = make_entry(0)
    t = time.perf_counter()
    with TensorBoardMirror(run_dir) as mirror:
        for step in range(steps):
            e = copy.copy(base)
            e["step"] = step
            e["loss"] = 5.0 * (1 - step / (steps + 1))
            mirror.log_step(e, encode_entry(e, validate=False))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--no-process", action="store_true", help="skip the real tensorboard process")
    args = ap.parse_args()
    n = args.steps
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        run_dir = logdir / "run"
        took = write_run(run_dir, n)
        size = asset_path(run_dir).stat().st_size
        print(f"wrote {n} steps through the mirror in {took:.2f} s ({took / n * 1000:.2f} ms/step); "
              f"asset file {size / 2**20:.1f} MiB ({size // n} bytes/step)")

        print("\nin-process TensorBoardWSGI (Python loader), werkzeug test client, gzip accepted:")
        t = time.perf_counter()
        client, _, _ = wsgi_app(logdir)
        print(f"  {'TensorBoard multiplexer load':<44} {ms(time.perf_counter() - t)}")
        t = time.perf_counter()
        r = client.get(f"{P}/steps?run=run", headers=GZIP)
        cold = time.perf_counter() - t
        assert r.status_code == 200
        summary("steps, cold (indexes the whole file)", [cold])
        steps_url = f"{P}/steps?run=run"
        summary("steps, warm", timed(lambda: client.get(steps_url, headers=GZIP), 20), 0.300)
        summary("steps, warm, no gzip", timed(lambda: client.get(steps_url), 20), 0.300)
        summary("runs", timed(lambda: client.get(f"{P}/runs", headers=GZIP), 20))
        step_times = timed(lambda: client.get(f"{P}/step?run=run&step={rng.randrange(n)}", headers=GZIP), 100)
        summary("step (random)", step_times, 0.100)

        # training goes on: 100 more steps appended while "TensorBoard" is open
        with TensorBoardMirror(run_dir) as mirror:
            base = client.get(f"{P}/step?run=run&step=0").json
            for step in range(n, n + 100):
                base["step"] = step
                mirror.log_step(base, encode_entry(base, validate=False))
        t = time.perf_counter()
        r = client.get(f"{P}/steps?run=run", headers=GZIP)
        summary("steps after 100 appended steps", [time.perf_counter() - t], 0.300)
        assert r.status_code == 200 and len(client.get(f"{P}/steps?run=run").json["steps"]) == n + 100

        print("\nfile layer: plain local files vs TensorBoard's gfile (same local file):")
        path = str(asset_path(run_dir))
        for label, files in (("local", None), ("gfile", GFileFiles())):
            reader = TrainingDataReader(path, files=files)
            t = time.perf_counter()
            count = len(reader.steps)
            index = time.perf_counter() - t
            reads = timed(lambda: reader.get_step(rng.randrange(n)), 200)
            noop = timed(lambda: reader.refresh(), 200)
            print(f"  {label:<6} index {count} steps {ms(index)}   get_step median {ms(statistics.median(reads))}"
                  f"   refresh (no change) median {ms(statistics.median(noop))}")
            if label == "local":
                base_index, base_read = index, statistics.median(reads)
        print(f"  gfile / local: index x{index / base_index:.2f}, get_step x{statistics.median(reads) / base_read:.2f}")

        if args.no_process:
            return
        print("\nreal `tensorboard --load_fast=true` process over HTTP (urllib, gzip accepted):")
        proc = TensorBoardProcess(logdir, load_fast=True, log_path=logdir / "tb.log")
        try:
            def get(url: str) -> bytes:
                req = urllib.request.Request(proc.url + url, headers=GZIP)
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.read()

            t = time.perf_counter()
            get(f"{P}/steps?run=run")
            summary("steps, cold", [time.perf_counter() - t])
            summary("steps, warm", timed(lambda: get(f"{P}/steps?run=run"), 20), 0.300)
            summary("step (random)", timed(lambda: get(f"{P}/step?run=run&step={rng.randrange(n)}"), 100), 0.100)
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
