"""``python -m seqviz_trackers.validate FILE``: the same as ``seqviz validate FILE``."""

import sys

from .cli.validate import main

if __name__ == "__main__":
    sys.exit(main())
