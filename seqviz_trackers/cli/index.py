"""``seqviz index PATH...``: build the columns file (``<file>.cols``) of existing JSONL files.

Our writers keep that file as they log. Files from elsewhere (the original seq-viz tool,
``columns=False``, a copy without it) have none, so every step change and every dynamics
view parses whole lines. This command writes it for each file named and each ``*.jsonl``
below each folder named; afterwards the step views and the dynamics come from it (see
:mod:`seqviz_trackers.storage.columns`). The JSONL files are only read. A file a writer is
appending to is left alone: that writer keeps its columns file itself.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .main import CommandError, say
from ..storage.columns import SUFFIX, WriterActive, build


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a seqviz JSONL file, or a folder: every *.jsonl below it")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def jsonl_files(paths: list[str]) -> list[Path]:
    """The files to index: files as named, and every ``*.jsonl`` below each folder (sorted)."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(Path(folder, f) for folder, _dirs, files in os.walk(path) for f in files if f.endswith(".jsonl"))
            if not found:
                raise CommandError(f"{path}: no *.jsonl file below this folder")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise CommandError(f"{path}: no such file or folder")
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in jsonl_files(args.paths):
        started = last = time.monotonic()

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if not args.quiet and now - last >= 2:
                last = now
                say(args, f"{path}: {100 * done / max(total, 1):.0f}% ({_mb(done)} of {_mb(total)})")

        try:
            built = build(path, progress)
        except WriterActive as exc:
            say(args, f"{exc}; left alone")
            continue
        except OSError as exc:
            raise CommandError(f"{path}: cannot build {path}{SUFFIX} ({exc.strerror or exc})") from None
        for line, message in built.skipped[:20]:
            say(args, f"{path}:{line}: {message}")
        if len(built.skipped) > 20:
            say(args, f"{path}: ... {len(built.skipped)} lines in all without a record")
        if built.incomplete_tail:
            say(args, f"{path}: the incomplete last line (no newline yet) was left out")
        if any(not m.startswith("no record") for _l, m in built.skipped):
            status = 1
        print(f"{path}: {built.records:,} step{'s' if built.records != 1 else ''} in {_mb(built.read_bytes)} read in "
                      f"{time.monotonic() - started:.1f} s; wrote {path}{SUFFIX} ({_mb(built.written_bytes)})", flush=True)
    return status
