"""The ``seqviz`` command. Each subcommand lives in its own module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# name: (module, one-line help). Each module has add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "validate": ("seqviz_trackers.cli.validate", "check every line of a JSONL file against the schema"),
    "summary": ("seqviz_trackers.cli.summary", "print step count and loss figures of a JSONL file"),
    "diff": ("seqviz_trackers.cli.diff", "print what changed in the predictions between two steps"),
    "learned": ("seqviz_trackers.cli.learned", "print when each probe token was learned, and forgetting events"),
    "spikes": ("seqviz_trackers.cli.spikes", "list the loss spikes of a run and the training rows behind them"),
    "compare-runs": ("seqviz_trackers.cli.compare_runs", "print which probe tokens one run learned earlier, later or never than another"),
    "serve": ("seqviz_trackers.cli.serve", "serve the live token dashboard for a JSONL file or a folder of them"),
    "export": ("seqviz_trackers.cli.export", "write one self-contained HTML page of a JSONL file's steps"),
    "demo": ("seqviz_trackers.cli.demo", "train a tiny GPT-2 on Hamlet on the CPU and log its predictions (about a minute)"),
}


class CommandError(Exception):
    """A problem the user can fix (a missing file, an unknown step): one line, exit status 2."""


def existing_file(name: str | Path) -> Path:
    """``name`` as a Path, or :class:`CommandError` when it is not a file."""
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    return path


def main(argv: list[str] | None = None) -> int:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="seqviz", description="See what your language model predicts, token by token.")
    parser.add_argument("--version", action="version", version=f"seqviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text).set_defaults(_module=module)
    argv = sys.argv[1:] if argv is None else argv
    # Parse once to find the command, then let its module declare its own arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    module.add_arguments(sub.choices[known.command])
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        print(f"seqviz {known.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``seqviz learned FILE | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())
