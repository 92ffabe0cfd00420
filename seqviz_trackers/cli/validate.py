"""``seqviz validate FILE``: check every line of a JSONL file strictly.

Prints one ``file:line: message`` per problem and exits 1, or a short summary and
exits 0 when the file is clean; a file with no entries at all exits 1 too. Text that
is not Unicode (a lone surrogate escape such as ``"\\ud800"``) is read as U+FFFD by
every reader: such a line is reported as ``file:line: warning: ...`` and still counts
as valid. ``python -m seqviz_trackers.validate FILE`` does the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .main import existing_file, say
from ..format.schema import SchemaValidationError, validate_entry
from ..storage.jsonl import parse_line


def validate_file(path: str | Path, warnings: list[str] | None = None) -> tuple[int, list[str]]:
    """(number of good entries, problem lines ``file:line: message``) for ``path``;
    ``warnings`` (when given) gets a ``file:line: warning: message`` for each valid line
    whose text readers change (a lone surrogate read as U+FFFD)."""
    good, problems, seen = 0, [], {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            if not raw.endswith(b"\n"):
                problems.append(f"{where}: incomplete last line (no newline at end of file)")
                break
            if raw.isspace():
                continue
            notes: list[str] = []
            try:
                entry = parse_line(raw, notes)
                validate_entry(entry)
            except (ValueError, SchemaValidationError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            if warnings is not None:
                warnings.extend(f"{where}: warning: {note}" for note in notes)
            if entry["step"] in seen:
                problems.append(f"{where}: step {entry['step']} was already logged on line {seen[entry['step']]}")
            seen[entry["step"]] = number
            good += 1
    return good, problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file (our [id, token, p] candidates or the original tool's objects)")


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.file)
    warnings: list[str] = []
    good, problems = validate_file(path, warnings)
    for line in problems + warnings:
        print(line)
    if problems:
        say(args, f"{path}: {len(problems)} problem(s), {good} valid entries")
        return 1
    if not good:
        say(args, f"{path}: no entries (the file is empty)")
        return 1
    print(f"seqviz validate: {path}: OK, {good} valid entries"
          + (f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})" if warnings else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m seqviz_trackers.validate FILE``: ``seqviz validate FILE``."""
    from .main import main as seqviz

    return seqviz(["validate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
