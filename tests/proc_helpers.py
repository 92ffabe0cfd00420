"""Child processes of the CLI that stop on Ctrl-C as they do at a terminal."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

# A process started with SIGINT ignored (nohup, a background job of a script) passes that
# on to its children, and Python then never raises KeyboardInterrupt. A test that sends
# SIGINT means Ctrl-C, so the child gets Python's usual handler back first.
_INTERRUPTIBLE = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "runpy.run_module('seqviz_trackers.cli', run_name='__main__', alter_sys=True)")


def cli_process(*args: str, **popen_kwargs: Any) -> subprocess.Popen:
    """``python -m seqviz_trackers.cli ARGS`` that SIGINT stops with KeyboardInterrupt,
    whatever this process does with SIGINT."""
    return subprocess.Popen([sys.executable, "-c", _INTERRUPTIBLE, *args], **popen_kwargs)
