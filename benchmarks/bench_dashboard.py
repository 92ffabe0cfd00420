"""How fast the dashboard draws long data in headless Chromium.

4 sequences x 2,048 tokens (top-20 each) are exported to a page; the page is opened
from disk and we time, inside the page, (a) the first render and (b) switching to
another step (entry already in the page), each up to the next painted frame.
Targets: first render <= 200 ms, step switch <= 100 ms.

    .venv/bin/python benchmarks/bench_dashboard.py [--seqs 4] [--tokens 2048] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CHROMIUM = "/usr/bin/chromium"

MEASURE_SWITCH = """async (index) => {
  const app = window.seqvizDashboard;
  const before = app.timings.length;
  const t0 = performance.now();
  app.goIndex(index);
  while (app.timings.length === before) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const t = app.timings[app.timings.length - 1];
  return { total: performance.now() - t0, render: t.renderMs };
}"""

MEASURE_FIRST = """async () => {
  const t0 = performance.now();
  document.querySelectorAll(".seqviz").forEach((n) => n.remove());
  const app = window.seqvizRender({ source: "inline" });
  while (!app.timings.length) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return { total: performance.now() - t0, render: app.timings[0].renderMs,
           cells: document.querySelectorAll(".tok").length };
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from web_data import long_entry

    from seqviz_trackers.export import export_html

    t = time.perf_counter()
    entries = [long_entry(step, args.seqs, args.tokens) for step in (100, 200)]
    print(f"made 2 entries of {args.seqs} x {args.tokens} tokens in {time.perf_counter() - t:.1f} s")
    page_html = export_html(entries, title="bench")
    print(f"exported page: {len(page_html) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        path = Path(tmp) / "bench.html"
        # expose render() so the first render can be timed again and again
        path.write_text(page_html.replace('render({ source: "inline" });', 'window.seqvizRender = render; render({ source: "inline" });'))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_function("window.seqvizDashboard && window.seqvizDashboard.timings.length > 0", timeout=60000)
        print(f"page open (parse {len(page_html) / 1e6:.1f} MB + first render): {1000 * (time.perf_counter() - t):.0f} ms wall")
        firsts, switches = [], []
        for _ in range(args.repeat):
            firsts.append(page.evaluate(MEASURE_FIRST))
        cells = firsts[0]["cells"]
        for i in range(args.repeat * 2):
            switches.append(page.evaluate(MEASURE_SWITCH, i % 2))
        browser.close()

    def show(name: str, runs: list[dict], target: float) -> None:
        total = [r["total"] for r in runs]
        render = [r["render"] for r in runs]
        med = statistics.median(total)
        print(f"{name:<12} median {med:6.1f} ms to next frame (DOM+layout {statistics.median(render):6.1f} ms), "
              f"max {max(total):6.1f} ms; target <= {target:.0f} ms: {'OK' if med <= target else 'MISSED'} "
              f"({med / target:.2f} of budget)")

    print(f"{cells} token boxes ({args.seqs} x {args.tokens})")
    show("first render", firsts, 200)
    show("step switch", switches, 100)


if __name__ == "__main__":
    main()
