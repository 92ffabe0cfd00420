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
    "index": ("seqviz_trackers.cli.index", "build the columns file of existing JSONL files, so the dashboard opens their steps fast"),
    "export": ("seqviz_trackers.cli.export", "write one self-contained HTML page of a JSONL file's steps"),
    "demo": ("seqviz_trackers.cli.demo", "train a tiny GPT-2 on Hamlet on the CPU and log its predictions (about a minute)"),
}


EPILOG = """\
conventions of every command:
  messages go to stderr and start with "seqviz <command>:"; results go to stdout
  exit status 0  success
              1  the data has problems (lines that are not valid steps, a step that
                 cannot be read, no valid step at all); what could be done is done
              2  the command was used wrongly (missing file or folder, bad option,
                 unknown step or sequence, port in use, output that cannot be written)
            130  interrupted (Ctrl-C)
"""


class CommandError(Exception):
    """A problem the user can fix (a missing file, an unknown step): one line, exit status 2."""


class DataError(Exception):
    """The data has problems (an unreadable step, no valid step): one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line in the convention: ``seqviz <command>: ...``, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def say(args: argparse.Namespace | str, message: str) -> None:
    """Print one message of command ``args`` (its parsed arguments, or its name) to stderr."""
    command = args if isinstance(args, str) else args.command
    print(f"seqviz {command}: {message}", file=sys.stderr)


def existing_file(name: str | Path) -> Path:
    """``name`` as a Path, or :class:`CommandError` when it is not a file."""
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    return path


def report_problems(args: argparse.Namespace, path: str | Path, problems: list) -> int:
    """Say which lines of ``path`` were skipped (count, line numbers, then one line each);
    the exit status for them: 1 when there are some, else 0."""
    if not problems:
        return 0
    lines = [p.line for p in problems]
    shown = ", ".join(map(str, lines[:20])) + (f", ... ({len(lines)} in all)" if len(lines) > 20 else "")
    say(args, f"{path}: skipped {len(lines)} line{'s' if len(lines) > 1 else ''} that {'are' if len(lines) > 1 else 'is'} "
              f"not a valid step: line{'s' if len(lines) > 1 else ''} {shown}")
    for problem in problems[:20]:
        say(args, f"{path}:{problem.line}: {problem.message}")
    return 1


def main(argv: list[str] | None = None) -> int:
    from .._version import __version__

    parser = _Parser(prog="seqviz", description="See what your language model predicts, token by token.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"seqviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter).set_defaults(_module=module)
    argv = sys.argv[1:] if argv is None else argv
    # Parse once to find the command, then let its module declare its own arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    module.add_arguments(sub.choices[known.command])
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        say(args, str(exc))
        return 2
    except DataError as exc:
        say(args, str(exc))
        return 1
    except KeyboardInterrupt:
        say(args, "interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (``seqviz learned FILE | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())
