"""``seqviz export FILE``: one self-contained HTML page of a JSONL file's steps (see
:mod:`seqviz_trackers.serve.export`).

Lines that are not valid steps (not JSON, or not matching the schema) are left out and
listed (count, line numbers) on stderr; the exit status is 0 when the page holds every
valid step asked for, 1 when a step asked for by number is not valid or no line is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

from .main import CommandError, DataError, existing_file, report_problems, say
from .. import dynamics
from ..format.schema import SchemaValidationError, validate_entry
from ..serve.export import batches_extra, dynamics_extra, export_html, runs_compare_extra
from ..storage.jsonl import StepInfo, TrainingDataReader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, action="append", metavar="N",
                       help="include step N (repeatable; default: the latest step)")
    which.add_argument("--all", action="store_true", help="include every step (the page grows with the run)")
    parser.add_argument("--format", choices=("html", "parquet"), default="html",
                        help="html: one dashboard page (default); parquet: every prediction as a table, "
                             "one row per step, sequence and position, and the candidates' strings beside it in "
                             "NAME.vocab.parquet (needs pyarrow; default: every step)")
    parser.add_argument("--no-top-k", action="store_true", help="parquet: leave out the top-k candidate lists (and the vocabulary)")
    parser.add_argument("-o", "--output", help="the file to write (default: FILE with .html or .parquet)")
    parser.add_argument("--title", help="title shown on the page (default: the file name)")
    parser.add_argument("--vs", metavar="B.jsonl",
                        help="compare with another run: the page colours tokens by the change from FILE to B, lists "
                             "tokens learned earlier in either, and draws B's history of a token over FILE's")
    parser.add_argument("--no-dynamics", action="store_true",
                        help="leave out the training dynamics (they need every line of FILE read once)")


def _file_dynamics(args: argparse.Namespace, reader: Any, entries: list[dict]) -> dict | None:
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
        say(args, f"the page has no training dynamics ({exc})")
        return None


def run(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        return _parquet(args)
    path = existing_file(args.file)
    reader = TrainingDataReader(path)
    reader.verify()  # every line read once: a broken one is never exported, listed or charted
    infos = reader.steps
    by_step = {info.step: info for info in infos}
    if args.all:
        chosen = infos
    elif args.step:
        missing = [n for n in args.step if n not in by_step]
        if missing:
            near = ", ".join(str(s.step) for s in sorted(infos, key=lambda s: abs(s.step - missing[0]))[:5])
            raise CommandError(f"{path} has no step {missing[0]}" + (f" (nearest: {near})" if near else ""))
        chosen = [by_step[n] for n in sorted(set(args.step))]
    else:
        chosen = infos[-1:]
    entries, broken = _valid_entries(reader, chosen)
    if not args.all and not args.step and not entries:  # the latest line is broken: the latest valid step
        entries, _ = _valid_entries(reader, reversed(reader.steps), first_only=True)
    report_problems(args, path, reader.problems)  # said in any case; the exit status says what was exported
    if not entries:
        raise DataError(f"{path}: no valid steps to export")
    status = 0
    if broken and args.step:  # asked for by number and not exportable: the page holds the others
        say(args, f"{path}: step{'s' if len(broken) > 1 else ''} {', '.join(map(str, broken))} left out: "
                  f"{'their lines are' if len(broken) > 1 else 'its line is'} not a valid step")
        status = 1
    extra = None if args.no_dynamics else _file_dynamics(args, reader, entries)
    batches = batches_extra(reader)
    if batches is not None:
        extra = {**(extra or {}), **batches}
    out = Path(args.output) if args.output else path.with_suffix(".html")
    title = args.title or path.name
    if args.vs:
        vs = existing_file(args.vs)
        vs_name = vs.name if vs.name != title else f"{vs.parent.name}/{vs.name}"
        extra = {**(extra or {}), **runs_compare_extra(reader, TrainingDataReader(vs), entries, (title, vs_name))}
    page = export_html(entries, steps=[s.to_json() for s in reader.steps], title=title, extra=extra)
    try:
        write_whole(out, page.encode("utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
    shown = ", ".join(str(e["step"]) for e in entries[:8]) + (" ..." if len(entries) > 8 else "")
    print(f"wrote {out} ({len(page) / 1e6:.2f} MB; step{'s' if len(entries) > 1 else ''} {shown})")
    return status


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either what it was or all of ``data``:
    into a new file beside it, renamed over it once complete (an earlier page survives
    any failure, interruption included)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _valid_entries(reader: TrainingDataReader, infos: Iterable[StepInfo], first_only: bool = False) -> tuple[list[dict], list[int]]:
    """The entries of ``infos`` that can be read and match the schema, and the steps of
    those that cannot (their lines are demoted: they join ``reader.problems``)."""
    entries, broken = [], []
    for info in infos:
        try:
            entry = reader.read(info)
            validate_entry(entry)
        except SchemaValidationError as exc:
            reader.demote(info, str(exc))
            broken.append(info.step)
            continue
        except ValueError:
            broken.append(info.step)
            continue
        entries.append(entry)
        if first_only:
            break
    return entries, broken


def _parquet(args: argparse.Namespace) -> int:
    """``--format parquet``: the token table (:func:`seqviz_trackers.storage.arrow.write_parquet`)."""
    from ..storage.arrow import require_pyarrow, write_parquet

    source = existing_file(args.file)
    try:
        require_pyarrow()
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    reader = TrainingDataReader(source)
    out = Path(args.output) if args.output else source.with_suffix(".parquet")
    if args.step:
        have = {info.step for info in reader.steps}
        missing = [n for n in args.step if n not in have]
        if missing:
            raise DataError(f"{source} has no step {missing[0]}")
    try:
        result = write_parquet(reader, out, top_k=not args.no_top_k, steps=args.step or None)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    for problem in reader.problems:
        say(args, f"{source}:{problem.line}: skipped: {problem.message}")
    if not result.rows:
        raise DataError(f"{source}: no predictions to export (wrote an empty table to {out})")
    print(f"wrote {out} ({result.bytes / 1e6:.2f} MB; {result.rows:,} rows, {result.steps} steps, "
          f"{result.row_groups} row group{'s' if result.row_groups != 1 else ''})")
    if result.vocab_path is not None:
        print(f"wrote {result.vocab_path} ({result.vocab_bytes / 1e6:.2f} MB; the display strings of "
              f"{result.vocab_rows:,} candidate ids: join top_k[].id on id)")
    return 0
