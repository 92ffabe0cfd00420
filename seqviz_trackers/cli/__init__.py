"""The ``seqviz`` command: :mod:`.main` parses and dispatches, one module per subcommand."""

from .main import CommandError, existing_file, main

__all__ = ["main", "CommandError", "existing_file"]
