"""Make ``docs/dashboard.png`` and ``docs/dynamics.png``: the live dashboard (``seqviz serve``)
on a tiny GPT-2 that learnt Hamlet's soliloquy (``seqviz demo``), in headless Chromium.

``dashboard.png``: the latest step, one token selected (its predictions, and its p(target)
and rank over the run with its learned-at step). ``dynamics.png``: the tokens coloured by
their change since the previous logged step at ``--change-step``, the list of tokens
learned there, and one of them (of the first sequence) selected.

    .venv/bin/python docs/make_dashboard_screenshot.py [--file runs/demo/seqviz.jsonl] [--out docs/dashboard.png]

Without ``--file`` it first runs ``seqviz demo --out runs/demo --no-wandb`` (a minute or
two on a CPU). Needs playwright and Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from screenshot_helpers import save, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a seqviz JSONL file (default: train the demo first)")
    parser.add_argument("--out", default="docs/dashboard.png")
    parser.add_argument("--dynamics-out", default="docs/dynamics.png")
    parser.add_argument("--token", type=int, default=5, help="which token of the first sequence to select")
    parser.add_argument("--change-step", type=int, default=120, help="the step of dynamics.png")
    args = parser.parse_args()
    path = Path(args.file) if args.file else None
    if path is None:
        subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "demo", "--out", "runs/demo", "--no-wandb"], check=True)
        path = Path("runs/demo/seqviz.jsonl")
    with served(file=path) as open_page:
        page = open_page()
        page.locator(".seq").first.locator(".tok").nth(args.token).click()
        page.wait_for_selector(".detail .spark-learned")
        save(page, args.out, top=False)

        page = open_page(f"#step={args.change_step}&metric=change&changes=learned", height=1060)
        page.wait_for_selector(".change-row")
        first_seq = page.locator(".seq-name").first.inner_text()
        rows = page.locator(".change-row", has=page.locator(".c-seq", has_text=first_seq))
        (rows if rows.count() else page.locator(".change-row")).first.click()
        page.wait_for_selector(".detail .spark-learned")
        save(page, args.dynamics_out)

if __name__ == "__main__":
    main()
