"""``seqviz export FILE``: one self-contained HTML page of a JSONL file's steps (see
:mod:`seqviz_trackers.serve.export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import dynamics
from ..serve.export import dynamics_extra, export_html, runs_compare_extra
from ..storage.jsonl import TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, action="append", metavar="N",
                       help="include step N (repeatable; default: the latest step)")
    which.add_argument("--all", action="store_true", help="include every step (the page grows with the run)")
    parser.add_argument("--format", choices=("html", "parquet"), default="html",
                        help="html: one dashboard page (default); parquet: every prediction as a table, "
                             "one row per step, sequence and position (needs pyarrow; default: every step)")
    parser.add_argument("--no-top-k", action="store_true", help="parquet: leave out the top-k candidate lists")
    parser.add_argument("-o", "--output", help="the file to write (default: FILE with .html or .parquet)")
    parser.add_argument("--title", help="title shown on the page (default: the file name)")
    parser.add_argument("--vs", metavar="B.jsonl",
                        help="compare with another run: the page colours tokens by the change from FILE to B, lists "
                             "tokens learned earlier in either, and draws B's history of a token over FILE's")
    parser.add_argument("--no-dynamics", action="store_true",
                        help="leave out the training dynamics (they need every line of FILE read once)")


def _file_dynamics(reader: Any, entries: list[dict]) -> dict | None:
    """The dynamics of the whole file for an exported page (series over the run, and each
    exported step's change since the step before it); None when they cannot be made."""
    try:
        dyn = dynamics.dynamics_for(reader)
        diffs = {}
        for entry in entries:
            before = dynamics.previous_step(reader, entry["step"])
            if before is not None:
                diffs[entry["step"]] = dynamics.diff_json(reader, before, entry["step"], per_token=True)
        return dynamics_extra(dyn, entries, diffs, points=64)
    except (KeyError, ValueError, IndexError) as exc:
        print(f"seqviz export: the page has no training dynamics ({exc})", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        from ..storage.arrow import export_parquet

        return export_parquet(args)
    path = Path(args.file)
    if not path.is_file():
        print(f"seqviz export: {path}: no such file", file=sys.stderr)
        return 2
    reader = TrainingDataReader(path)
    infos = reader.steps
    for problem in reader.problems:
        print(f"seqviz export: {path}:{problem.line}: skipped: {problem.message}", file=sys.stderr)
    if not infos:
        print(f"seqviz export: {path}: no steps to export", file=sys.stderr)
        return 1
    by_step = {info.step: info for info in infos}
    if args.all:
        chosen = infos
    elif args.step:
        missing = [n for n in args.step if n not in by_step]
        if missing:
            near = ", ".join(str(s.step) for s in sorted(infos, key=lambda s: abs(s.step - missing[0]))[:5])
            print(f"seqviz export: {path} has no step {missing[0]} (nearest: {near})", file=sys.stderr)
            return 1
        chosen = [by_step[n] for n in sorted(set(args.step))]
    else:
        chosen = [infos[-1]]
    entries = []
    for info in chosen:
        try:
            entries.append(reader.read(info))
        except ValueError as exc:
            print(f"seqviz export: {exc}", file=sys.stderr)
            return 1
    out = Path(args.output) if args.output else path.with_suffix(".html")
    title = args.title or path.name
    extra = None if args.no_dynamics else _file_dynamics(reader, entries)
    if args.vs:
        vs = Path(args.vs)
        if not vs.is_file():
            print(f"seqviz export: {vs}: no such file", file=sys.stderr)
            return 2
        vs_name = vs.name if vs.name != title else f"{vs.parent.name}/{vs.name}"
        extra = {**(extra or {}), **runs_compare_extra(reader, TrainingDataReader(vs), entries, (title, vs_name))}
    page = export_html(entries, steps=[s.to_json() for s in infos], title=title, extra=extra)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"seqviz export: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    shown = ", ".join(str(e["step"]) for e in entries[:8]) + (" ..." if len(entries) > 8 else "")
    print(f"wrote {out} ({len(page) / 1e6:.2f} MB; step{'s' if len(entries) > 1 else ''} {shown})")
    return 0
