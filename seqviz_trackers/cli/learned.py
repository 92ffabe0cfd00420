"""``seqviz learned FILE``: when each probe token was learned, and what was forgotten."""

from __future__ import annotations

import argparse
import json

from .main import CommandError, existing_file, report_problems
from .diff import repr_token, show
from ..dynamics import learned_json
from ..storage.jsonl import TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file")
    parser.add_argument("--seq", type=int, help="only this sequence (numbered in order of first appearance)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (the 'learned' route's shape)")


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.file)
    reader = TrainingDataReader(path)
    try:
        result = learned_json(reader, args.seq, limit=10**9)
    except IndexError as exc:
        raise CommandError(f"{path}: {exc}") from None
    status = report_problems(args, path, reader.problems)
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return status
    if not result["num_steps"]:
        print(f"{path}: no steps")
        return status
    events: dict[tuple[int, int], list[dict]] = {}
    for e in result["forgetting"]["events"]:
        events.setdefault((e["seq"], e["pos"]), []).append(e)
    print(f"{path}: {result['num_steps']} steps ({result['first_step']}..{result['last_step']}), "
          f"{len(result['sequences'])} sequence(s)")
    print("learned at = first step from which the target stays top-1 through the last step where it was predicted;")
    print("forgotten = top-1 at one logged step, not at the next (step it was lost, top-1 since)")
    for seq in result["sequences"]:
        n = len(seq["learned_at"])
        done = sum(s is not None for s in seq["learned_at"])
        print()
        print(f"sequence {seq['seq']} {repr_token(seq['label']) if seq['name'] is None else show(seq['name'])}: "
              f"{done} of {n} tokens learned")
        print(f"  {'pos':>5}  {'context':<24} {'→ target':<14} {'learned at':<12} {'top-5 from':<11} forgotten")
        tokens = seq["tokens"]
        for pos in range(n):
            if seq["targets"][pos] is None and seq["learned_at"][pos] is None and not seq["times_forgotten"][pos]:
                continue  # never predicted
            context = "".join(tokens[max(0, pos - 5):pos + 1])
            at, at5 = seq["learned_at"][pos], seq["learned_at_top5"][pos]
            lost = ", ".join(f"{e['step']} (since {e['since']})" for e in events.get((seq["seq"], pos), [])) or "-"
            print(f"  {pos:>5}  {show(context, 24, left=True):<24} {'→ ' + repr_token(seq['targets'][pos]):<14} "
                  f"{'step ' + str(at) if at is not None else 'not learned':<12} "
                  f"{'step ' + str(at5) if at5 is not None else '-':<11} {lost}")
    per = result["per_step"]
    rows = [(s, l, f, g) for s, l, f, g in zip(per["steps"], per["learned"], per["forgotten"], per["gained"]) if l or f or g]
    print()
    print("per step: learned (stays top-1 from here), gained (became top-1), forgotten (lost top-1)")
    print(f"  {'step':>8} {'learned':>8} {'gained':>8} {'forgotten':>10}")
    for s, l, f, g in rows:
        print(f"  {s:>8} {l:>8} {g:>8} {f:>10}")
    return status
