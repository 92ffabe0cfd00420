"""``seqviz validate FILE``: check every line of a JSONL file strictly.

Prints one ``file:line: message`` per problem and exits 1, or a short summary and
exits 0 when the file is clean; a file with no entries at all exits 1 too. ``python -m seqviz_trackers.validate FILE`` does the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .main import existing_file, say
from ..format.schema import SchemaValidationError, validate_entry
from ..storage.jsonl import parse_line


def validate_file(path: str | Path) -> tuple[int, list[str]]:
    """(number of good entries, problem lines ``file:line: message``) for ``path``."""
    good, problems, seen = 0, [], {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            if not raw.endswith(b"\n"):
                problems.append(f"{where}: incomplete last line (no newline at end of file)")
                break
            if raw.isspace():
                continue
            try:
                entry = parse_line(raw)
                validate_entry(entry)
            except (ValueError, SchemaValidationError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            if entry["step"] in seen:
                problems.append(f"{where}: step {entry['step']} was already logged on line {seen[entry['step']]}")
            seen[entry["step"]] = number
            good += 1
    return good, problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a seqviz JSONL file (our [id, token, p] candidates or the original tool's objects)")


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.file)
    good, problems = validate_file(path)
    for line in problems:
        print(line)
    if problems:
        say(args, f"{path}: {len(problems)} problem(s), {good} valid entries")
        return 1
    if not good:
        say(args, f"{path}: no entries (the file is empty)")
        return 1
    print(f"seqviz validate: {path}: OK, {good} valid entries")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m seqviz_trackers.validate FILE``: ``seqviz validate FILE``."""
    from .main import main as seqviz

    return seqviz(["validate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
