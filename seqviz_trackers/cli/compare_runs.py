"""``seqviz compare-runs A.jsonl B.jsonl``: which tokens one run learned earlier, later or never.

Exit status: 0 when the runs were compared, 1 when no probe of A matches one of B
(nothing to compare), 2 for a missing file or a step neither run can be read at.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .diff import repr_token, show
from .main import CommandError, existing_file
from ..dynamics import compare_runs_json
from ..storage.jsonl import TrainingDataReader

#: (list, title) in the order they are printed.
TABLES = (("earlier_in_a", "Learned earlier in A"), ("earlier_in_b", "Learned earlier in B"),
          ("only_in_a", "Learned only in A"), ("only_in_b", "Learned only in B"),
          ("biggest_gap", "Biggest gap at this step (Δ log p = log p in B − log p in A)"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A.jsonl", help="a seqviz JSONL file (run A)")
    parser.add_argument("b", metavar="B.jsonl", help="the run to compare it with (run B)")
    parser.add_argument("--step", type=int, metavar="N",
                        help="compare at step N: each run at its nearest logged step at or before N (default: A's last step)")
    parser.add_argument("--limit", type=int, default=10, help="rows per table (default 10)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON (the 'compare_runs' route's shape)")


def _step(x: Any) -> str:
    return "-" if x is None else str(x)


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [title]
    if not rows:
        return lines + ["  (none)", ""]
    lines.append(f"  {'probe':<12} {'pos':>5}  {'context':<24} {'→ target':<14} {'learned A':>9} {'learned B':>9} "
                 f"{'lead A':>7} {'p A':>7} {'p B':>7} {'Δ log p':>8}")
    for r in rows:
        probe = show(r["name"], 12) if r["name"] is not None else f"#{r['seq_a']}"
        lines.append(f"  {probe:<12} {r['pos']:>5}  {show(r['context'], 24, left=True):<24} "
                     f"{'→ ' + repr_token(r['target']):<14} {_step(r['learned_a']):>9} {_step(r['learned_b']):>9} "
                     f"{_step(r['lead']):>7} {_prob(r['p_a'])} {_prob(r['p_b'])} "
                     f"{'-' if r['delta_logp'] is None else format(r['delta_logp'], '+8.3f'):>8}")
    return lines + [""]


def _prob(x: float | None) -> str:
    return f"{'-':>7}" if x is None else f"{x:7.3f}"


def _probe_line(p: dict[str, Any]) -> str:
    label = show(p["name"] if p["name"] is not None else p["label"], 40)
    if p["status"] == "matched":
        return f"  {label}: {p['verdict']}"
    if p["status"] == "different_text":
        return f"  {label}: not compared: {p['reason']}"
    return f"  {label}: only in {'A' if p['status'] == 'only_a' else 'B'}"


def run(args: argparse.Namespace) -> int:
    paths = existing_file(args.a), existing_file(args.b)
    readers = [TrainingDataReader(p) for p in paths]
    try:
        result = compare_runs_json(*readers, args.step, limit=max(args.limit, 0))
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    for path, reader in zip(paths, readers):
        for problem in reader.problems:
            print(f"{path}:{problem.line}: skipped: {problem.message}", file=sys.stderr)
    s = result["summary"]
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        a, b = result["a"], result["b"]
        for letter, path, side in (("A", paths[0], a), ("B", paths[1], b)):
            print(f"{letter} = {path} ({side['num_steps']} steps, {side['first_step']}..{side['last_step']})")
        where = [f"{letter} at step {side['step']}" + ("" if side["exact"] else
                                                       f" (its nearest logged step at or before {result['step']})")
                 for letter, side in (("A", a), ("B", b))]
        print(f"step {result['step']}: {', '.join(where)}")
        print("learned at = first step from which the target stays top-1 (up to the step compared); "
              "ahead = learned earlier, or learned and the other run did not")
        print(f"probes: {s['matched']} matched, {s['different_text']} with different text, "
              f"{s['only_a']} only in A, {s['only_b']} only in B")
        for p in result["probes"]:
            print(_probe_line(p))
        if s["verdict"] is not None:
            print(f"all matched probes: {s['verdict']}")
        print()
        lines = [line for name, title in TABLES for line in _table(title, result[name])]
        print("\n".join(lines).rstrip())
    if not s["matched"]:
        print("seqviz compare-runs: no probe of A matches one of B (by name, else by token ids): nothing compared",
              file=sys.stderr)
        return 1
    return 0
