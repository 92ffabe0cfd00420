"""Make ``docs/dashboard.png``: the live dashboard (``seqviz serve``) on a tiny GPT-2 that
learnt Hamlet's soliloquy (``seqviz demo``), one token selected, in headless Chromium.

    .venv/bin/python docs/make_dashboard_screenshot.py [--file runs/demo/training_viz.jsonl] [--out docs/dashboard.png]

Without ``--file`` it first runs ``seqviz demo --out runs/demo --no-wandb`` (a few
minutes on a CPU). Needs playwright and Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from seqviz_trackers.server import start_in_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a seqviz JSONL file (default: train the demo first)")
    parser.add_argument("--out", default="docs/dashboard.png")
    parser.add_argument("--token", type=int, default=5, help="which token of the first sequence to select")
    args = parser.parse_args()
    path = Path(args.file) if args.file else None
    if path is None:
        subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "demo", "--out", "runs/demo", "--no-wandb"], check=True)
        path = Path("runs/demo/training_viz.jsonl")
    handle = start_in_thread(file=path, port=0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 880})
            page.goto(handle.url)
            page.wait_for_selector(".status.live")
            page.locator(".seq").first.locator(".tok").nth(args.token).click()
            page.wait_for_timeout(400)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        handle.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
