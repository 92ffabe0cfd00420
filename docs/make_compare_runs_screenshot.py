"""Make ``docs/compare_runs.png``: two demo runs compared token by token in the live dashboard
(``seqviz serve --logdir``), in headless Chromium.

Run A (``seqviz demo --seed 1``) is shown coloured by Δ log p(target) to run B (``--seed 2
--lr 2e-3``) at the last step, with the list of tokens learned earlier in B and its first
row selected: the token's p(target) and rank in both runs over the sparkline.

    .venv/bin/python docs/make_compare_runs_screenshot.py [--logdir runs/compare] [--steps 240] [--out docs/compare_runs.png]

Without ``<logdir>/a/seqviz.jsonl`` and ``<logdir>/b/seqviz.jsonl`` it first trains both
(``--steps`` each, a few minutes on a CPU). Needs playwright and Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from screenshot_helpers import save, served

RUNS = {"a": ["--seed", "1"], "b": ["--seed", "2", "--lr", "2e-3"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/compare")
    parser.add_argument("--steps", type=int, default=240, help="training steps of each demo run it trains")
    parser.add_argument("--out", default="docs/compare_runs.png")
    parser.add_argument("--list", default="earlier_in_b", help="the list shown (earlier_in_a, earlier_in_b, only_in_a, ...)")
    args = parser.parse_args()
    logdir = Path(args.logdir)
    for name, extra in RUNS.items():
        if not (logdir / name / "seqviz.jsonl").exists():
            subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "demo", "--out", str(logdir / name),
                            "--steps", str(args.steps), "--no-wandb", *extra], check=True)
    with served(logdir=logdir) as open_page:
        page = open_page(f"#run=a%2Fseqviz&vs=b%2Fseqviz&rc={args.list}", height=1060)
        page.wait_for_selector(".runcmp .change-row")
        page.locator(".runcmp .change-row").first.click()
        page.wait_for_selector(".detail .spark-learned-b")
        save(page, args.out)

if __name__ == "__main__":
    main()
