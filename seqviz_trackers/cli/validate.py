"""``seqviz validate FILE``: check every line of a JSONL file strictly.

Prints one ``file:line: message`` per problem and exits 1, or a short summary and
exits 0 when the file is clean. ``python -m seqviz_trackers.validate FILE`` does the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..storage.jsonl import parse_line
from ..format.schema import SchemaValidationError, validate_entry


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
    parser.add_argument("file", help="a seqviz JSONL file")


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    good, problems = validate_file(path)
    for line in problems:
        print(line)
    if problems:
        print(f"{path}: {len(problems)} problem(s), {good} valid entries", file=sys.stderr)
        return 1
    print(f"{path}: OK, {good} valid entries")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqviz_trackers.validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
