"""Bytes the training dynamics add to each W&B panel (``seqviz/dashboard``), and that they
stay bounded as the run grows.

Each step goes through what :class:`wandb_panel.WandbMirror` does: the entry is added to
a :class:`seqviz_trackers.dynamics.Dynamics`, compared with the previous entry, and
:func:`seqviz_trackers.serve.export.dynamics_extra` inlines the probe tokens' series (thinned to
``--points`` steps) and that diff. Printed: the inlined dynamics in bytes (as they appear
in the page), the entry itself for scale, and the time per step.

    .venv/bin/python benchmarks/bench_panel_dynamics.py [--file runs/demo/seqviz.jsonl]
        [--seqs 4] [--tokens 512] [--steps 40] [--points 24]

Without ``--file``: ``--steps`` synthetic steps of ``--seqs`` x ``--tokens`` tokens (top-20).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from seqviz_trackers import TrainingDataReader  # noqa: E402
from seqviz_trackers.dynamics import Dynamics, compare  # noqa: E402
from seqviz_trackers.serve.export import dynamics_extra, json_for_html  # noqa: E402


def measure(entries, points: int) -> list[tuple[int, int, int, float]]:
    """Per step: (step, dynamics bytes, entry bytes, seconds for the dynamics)."""
    dyn, previous, out = Dynamics(), None, []
    for entry in entries:
        t0 = time.perf_counter()
        dyn.add_entry(entry)
        diffs = {entry["step"]: compare(previous, entry, per_token=True, number=dyn.number_of)} if previous else {}
        extra = dynamics_extra(dyn, [entry], diffs, points=points)
        seconds = time.perf_counter() - t0
        out.append((entry["step"], len(json_for_html(extra).encode()), len(json_for_html(entry).encode()), seconds))
        previous = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a seqviz JSONL file (e.g. from seqviz demo)")
    parser.add_argument("--seqs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--points", type=int, default=24, help="WandbMirror(series_points=...)")
    args = parser.parse_args()
    if args.file:
        entries = list(TrainingDataReader(args.file))
        what = args.file
    else:
        from web_data import long_entry

        entries = (long_entry(step, n_seqs=args.seqs, n_tokens=args.tokens, seed=1) for step in range(args.steps))
        what = f"{args.seqs} sequences x {args.tokens} tokens, top-20, {args.steps} steps"
    rows = measure(entries, args.points)
    print(f"{what}; series thinned to {args.points} steps")
    print(f"{'step':>6} {'dynamics bytes':>15} {'entry bytes':>12} {'ms':>7}")
    show = sorted({0, 1, 2, len(rows) // 4, len(rows) // 2, len(rows) - 2, len(rows) - 1} & set(range(len(rows))))
    for i in show:
        step, extra, entry, seconds = rows[i]
        print(f"{step:>6} {extra:>15,} {entry:>12,} {seconds * 1000:>7.1f}")
    tail = [r[1] for r in rows[args.points:]]
    if tail:
        print(f"from the {args.points + 1}th step on: {min(tail):,} to {max(tail):,} bytes per panel "
              "(the series stop growing)")
    else:
        print(f"the run has no more than {args.points} steps: every step is in the series")


if __name__ == "__main__":
    main()
