"""``seqviz diff FILE --from A --to B``: what changed in the predictions between two steps."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from .main import CommandError, DataError, existing_file, report_problems
from ..dynamics import compare, previous_step
from ..storage.jsonl import TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file")
    parser.add_argument("--from", dest="a", type=int, metavar="A", help="the earlier step (default: the step logged before B)")
    parser.add_argument("--to", dest="b", type=int, metavar="B", help="the later step (default: the last step)")
    parser.add_argument("--limit", type=int, default=10, help="rows per table (default 10)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON (the 'diff' route's shape)")


def show(text: Any, width: int | None = None, *, left: bool = False) -> str:
    """Token text made safe and visible for a terminal: control characters escaped,
    newlines and tabs as symbols; cut to ``width`` (from the left with ``left``)."""
    if text is None:
        return "?"
    out = []
    for c in str(text):
        if c == "\n":
            out.append("↵")
        elif c == "\t":
            out.append("⇥")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
    s = "".join(out)
    if width is not None and len(s) > width:
        s = "…" + s[len(s) - width + 1:] if left else s[:width - 1] + "…"
    return s


def steps_hint(steps: list[int]) -> str:
    """A short description of the logged steps, for error messages."""
    if not steps:
        return "the file has no steps"
    shown = ", ".join(map(str, steps)) if len(steps) <= 8 else ", ".join(map(str, steps[:3])) + ", …, " + ", ".join(map(str, steps[-3:]))
    return f"logged steps: {shown} ({len(steps)} in all)"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _prob(x: float | None, below: float | None = None) -> str:
    """A probability in 8 characters; tiny ones in scientific notation; ``<p`` when only a
    bound is known (the target is not among the logged candidates)."""
    if x is None:
        return "       -" if below is None else f"<{below:.4f}".rjust(8) if below >= 1e-3 else f"<{below:.1e}".rjust(8)
    return f"{x:8.4f}" if x == 0 or x >= 1e-3 else f"{x:8.1e}"


def _rank(r: dict[str, Any], side: str) -> str:
    """A row's rank at one side: ``3``, ``>20`` when the target is not among the 20 logged, else ``?``."""
    rank, bound = r[f"rank_{side}"], r.get(f"rank_gt_{side}")
    return str(rank) if rank else f">{bound}" if bound else "?"


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [title]
    if not rows:
        return lines + ["  (none)", ""]
    lines.append(f"  {'seq':<12} {'pos':>5}  {'context':<26} {'→ target':<14} {'p A':>8} {'p B':>8} {'rank A→B':>13} "
                 f"{'Δ log p':>8} {'JS':>7}")
    for r in rows:
        seq = show(r["name"], 12) if r["name"] is not None else f"#{r['index']}"
        ranks = f"{_rank(r, 'a')} → {_rank(r, 'b')}"
        lines.append(f"  {seq:<12} {r['pos']:>5}  {show(r['context'], 26, left=True):<26} "
                     f"{'→ ' + repr_token(r['target']):<14} {_prob(r['p_a'], r.get('p_lt_a'))} {_prob(r['p_b'], r.get('p_lt_b'))} "
                     f"{ranks:>13} {_fmt(r['delta_logp'], '+8.3f')} {_fmt(r['divergence'], '7.4f')}")
    return lines + [""]


def repr_token(token: Any) -> str:
    """A token in quotes so leading spaces show: ``" to"``."""
    return f'"{show(token, 10)}"'


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.file)
    reader = TrainingDataReader(path)
    steps = [s.step for s in reader.steps]
    if len(steps) < 2 and (args.a is None or args.b is None):
        raise CommandError(f"{path}: need two logged steps to compare; {steps_hint(steps)}")
    b = steps[-1] if args.b is None else args.b
    a = previous_step(reader, b) if args.a is None else args.a
    if a is None:
        raise CommandError(f"{path}: step {b} has no earlier step to compare with; {steps_hint(steps)}")
    entries = []
    for step in (a, b):
        entry = reader.get_step(step)
        if entry is None:
            broken = reader.problem_of(step)
            if broken is not None:
                raise DataError(f"{path}:{broken.line}: step {step} cannot be read: {broken.message}")
            raise CommandError(f"{path}: no step {step}; {steps_hint(steps)}")
        entries.append(entry)
    result = compare(entries[0], entries[1], limit=max(args.limit, 0))
    status = report_problems(args, path, reader.problems)
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return status
    s = result["summary"]
    losses = f" (loss {result['loss_a']} → {result['loss_b']})" if result["loss_a"] is not None and result["loss_b"] is not None else ""
    print(f"{path}: step {a} → step {b}{losses}")
    if not s["compared"]:
        print("no predictions in common (no sequence logged at both steps)")
        return status
    print(f"{s['compared']} predictions compared · mean Δ log p {_fmt(s['mean_delta_logp'], '+.4f')} · "
          f"{s['improved']} improved, {s['worsened']} worsened · "
          f"{s['wrong_to_right']} wrong→right, {s['right_to_wrong']} right→wrong")
    print(textwrap.fill(f"JS = {result['divergence']['description']}", width=100))
    print("Δ log p = log p(target) at B minus at A (natural log; = loss at A minus loss at B)")
    print()
    lines = (_table("Most worsened (loss went up most)", result["worsened"])
             + _table("Learned (wrong → right)", result["learned"])
             + _table("Forgotten (right → wrong)", result["forgotten"])
             + _table("Most improved", result["improved"]))
    print("\n".join(lines).rstrip())
    return status
