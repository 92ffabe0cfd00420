"""Make ``docs/seed_file.png``: a file in the original seq-viz format (built as
``tests/seed_files.py`` builds them: candidate objects, ``top_20`` beside ``top_k``, a
128,256-token vocabulary, no ``target_prob`` / ``target_rank``) in the served dashboard,
with a token selected whose target is not among the 20 logged candidates.

    .venv/bin/python docs/make_seed_screenshot.py [--out docs/seed_file.png]

Needs playwright and Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from screenshot_helpers import save, served

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from seed_files import HARD_EVERY, write_seed_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/seed_file.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_seed_file(Path(tmp) / "training_data.jsonl", list(range(0, 301, 25)))
        with served(file=path) as open_page:
            page = open_page(width=1280, height=760)
            page.locator(".seq").first.locator(".tok").nth(HARD_EVERY).click()  # its target is below the top 20
            page.wait_for_selector(".detail .miss")
            save(page, args.out, top=False)

if __name__ == "__main__":
    main()
