"""What ``seqviz index`` costs and gives: a file written without a columns file (as the
original tool's are), then indexed. Prints the JSONL size, the time to index it (per step,
MB/s), the columns file's size, and a cold step view read (what the ``step`` route does on
a step change) before / after, each the best of three fresh readers in the same run.

    python benchmarks/bench_index.py [--seqs 8] [--tokens 2048] [--steps 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests")]

from web_data import long_entry  # noqa: E402

from seqviz_trackers import TrainingDataWriter  # noqa: E402
from seqviz_trackers.storage.columns import build  # noqa: E402
from seqviz_trackers.storage.jsonl import TrainingDataReader  # noqa: E402


def cold_view(path: Path) -> float:
    reader = TrainingDataReader(path)
    last = reader.steps[-1]
    start = time.perf_counter()
    reader.read_view(last, encoded=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plain.jsonl"
        with TrainingDataWriter(path, validate=False, columns=False) as writer:
            for k in range(args.steps):
                writer.write_step(long_entry(100 * (k + 1), args.seqs, args.tokens))
        size = path.stat().st_size
        before = min(cold_view(path) for _ in range(3))
        start = time.perf_counter()
        built = build(path)
        took = time.perf_counter() - start
        after = min(cold_view(path) for _ in range(3))
    print(f"{args.steps} steps of {args.seqs} x {args.tokens} tokens: JSONL {size / 1e6:.1f} MB")
    print(f"index: {took:.2f} s ({took / args.steps:.2f} s a step, {size / 1e6 / took:.1f} MB/s); "
          f"columns file {built.written_bytes / 1e6:.2f} MB ({100 * built.written_bytes / size:.1f} % of the JSONL)")
    print(f"cold step view: {before * 1e3:.0f} ms before, {after * 1e3:.0f} ms after (ratio {before / after:.0f})")


if __name__ == "__main__":
    main()
