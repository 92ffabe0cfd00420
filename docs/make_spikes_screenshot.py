"""Make ``docs/spikes.png``: the training batch of a loss spike, opened from its mark on the
loss chart of the served dashboard, one token of the highest-loss row selected.

The run is the one the tests use (``tests/spike_run.py``): a tiny GPT-2 learning Hamlet,
with random-token rows injected into the batches of steps 350, 700 and 1050.

    .venv/bin/python docs/make_spikes_screenshot.py [--file run.jsonl] [--step 700] [--out docs/spikes.png]

Without ``--file`` it trains that run first (under a minute on a CPU). Needs playwright and
Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from screenshot_helpers import save, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a seqviz JSONL file with its .batches beside it (default: train the spike run)")
    parser.add_argument("--step", type=int, default=700, help="the spike to open")
    parser.add_argument("--token", type=int, default=6, help="which token of the top row to select")
    parser.add_argument("--out", default="docs/spikes.png")
    args = parser.parse_args()
    if args.file:
        path = Path(args.file)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import torch
        from spike_run import write_spike_run

        torch.set_num_threads(1)
        path = write_spike_run(Path(tempfile.mkdtemp(prefix="seqviz-spikes-")))
    with served(file=path) as open_page:
        page = open_page(height=1000)
        page.locator(f".chart-mark[data-step='{args.step}']").click()
        page.wait_for_selector(".batch-row .tok")
        page.locator(".batch-row").first.locator(".tok").nth(args.token).click()
        page.wait_for_selector(".detail .bar-row")
        save(page, args.out, top=False)

if __name__ == "__main__":
    main()
