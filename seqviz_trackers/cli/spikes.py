"""``seqviz spikes FILE``: the loss spikes of a run and the training rows behind them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .diff import _fmt as fmt, show
from .main import CommandError
from ..dynamics.spikes import spikes_json
from ..storage.batches import SUFFIX, batches_path
from ..storage.jsonl import TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the run's JSONL file (its batches file <FILE>.batches is found from it)")
    parser.add_argument("--rows", type=int, default=3, help="top rows per spike (default 3)")
    parser.add_argument("--tokens", type=int, default=5, help="highest-loss tokens per row (default 5)")
    parser.add_argument("--threshold", type=float, help="detect again with this robust z threshold "
                        "(default: the verdicts made during training)")
    parser.add_argument("--window", type=int, help="detect again over this many steps")
    parser.add_argument("--min-history", type=int, help="detect again after this many steps")
    parser.add_argument("--json", action="store_true", help="print the spikes as JSON")


def _fmt(x: float | None) -> str:
    return fmt(x, ".4g")


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    batches = Path(args.file if str(args.file).endswith(SUFFIX) else batches_path(path))
    if not batches.is_file():
        raise CommandError(f"{batches}: no such file (the training batches of {path}; was capture_train on?)")
    reader = TrainingDataReader(batches)
    result = spikes_json(reader, rows=args.rows, tokens=args.tokens, threshold=args.threshold,
                         window=args.window, min_history=args.min_history)
    for problem in reader.problems:
        print(f"{batches}:{problem.line}: {problem.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    spikes = result["spikes"]
    print(f"{batches}: {result['num_steps']} steps, {len(spikes)} spike{'' if len(spikes) == 1 else 's'}")
    for s in spikes:
        z = "non-finite loss" if s["z"] is None else f"z {s['z']:.1f} over median {_fmt(s['median'])}"
        print()
        print(f"step {s['step']}: loss {_fmt(s['before'])} -> {_fmt(s['loss'])} -> {_fmt(s['after'])}  ({z})"
              + ("" if s["captured"] else "  [rows not captured]"))
        for r in s["rows"]:
            where = f"rank {r['rank']}" + (f", example {r['index']}" if r["index"] is not None else "")
            text = show(r["text"], 80) if r["text"] is not None else f"(not captured; hash {r['hash']})"
            print(f"  row {r['row']:>4} ({where})  loss {_fmt(r['loss'])}  {text}")
            for t in r["worst_tokens"]:
                print(f"        {_fmt(t['loss']):>7}  ...{show(t['context'], 32, left=True)}[{show(t['token'])}]"
                      f"  (predicted {show(t['predicted'])})")
    return 0
