"""How fast the dashboard draws long data in headless Chromium.

4 sequences x 2,048 tokens (top-20 each) are exported to a page; the page is opened
from disk and we time, inside the page, (a) the first render and (b) switching to
another step (entry already in the page), each up to the next painted frame.
Targets: first render <= 200 ms, step switch <= 100 ms. For reference it also
times a step switch under ``seqviz serve`` where the entry is fetched over the
websocket and parsed first (no target).

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

MEASURE_FIRST = """async (index) => {
  // a first render: the step's entry is at hand (parsed), no token box exists yet
  const app = window.seqvizDashboard;
  for (const v of app.views) { v.grid.destroy(); v.root.remove(); }
  app.views = [];
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const before = app.timings.length;
  const t0 = performance.now();
  app.goIndex(index);
  while (app.timings.length === before) await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return { total: performance.now() - t0, render: app.timings[app.timings.length - 1].renderMs,
           cells: document.querySelectorAll(".tok").length };
}"""


def main() -> None:
    import os

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from web_data import long_entry

    from seqviz_trackers.serve.export import export_html, json_for_html

    t = time.perf_counter()
    entries = [long_entry(step, args.seqs, args.tokens) for step in (100, 200)]
    print(f"made 2 entries of {args.seqs} x {args.tokens} tokens in {time.perf_counter() - t:.1f} s")
    page_html = export_html(entries, title="bench")
    print(f"exported page: {len(page_html) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        path = Path(tmp) / "bench.html"
        path.write_text(page_html)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_function("window.seqvizDashboard && window.seqvizDashboard.timings.length > 0", timeout=60000)
        print(f"page open (parse {len(page_html) / 1e6:.1f} MB + first render): {1000 * (time.perf_counter() - t):.0f} ms wall")
        firsts, switches = [], []
        for _ in range(args.repeat):
            firsts.append(page.evaluate(MEASURE_FIRST, _ % 2))
        cells = firsts[0]["cells"]
        for i in range(args.repeat * 2):
            switches.append(page.evaluate(MEASURE_SWITCH, i % 2))
        # the live server: the entry comes over the websocket and is parsed each time (no cache)
        from seqviz_trackers import TrainingDataWriter
        from seqviz_trackers.serve.server import start_in_thread

        run = Path(tmp) / "run.jsonl"
        with TrainingDataWriter(run, validate=False) as writer:
            for entry in entries:
                writer.write_step(entry)
        handle = start_in_thread(file=run, port=0)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(handle.url)  # (its CSP forbids wait_for_function's eval: wait on selectors)
            page.wait_for_selector(".status.live", timeout=60000)
            page.wait_for_selector(".tok", timeout=60000)
            fetched, ready = [], []
            page.evaluate("window.seqvizDashboard.options.prefetch = false")
            for i in range(args.repeat * 2):
                page.evaluate("window.seqvizDashboard.cache.clear()")
                fetched.append(page.evaluate(MEASURE_SWITCH, i % 2))
            # as a reader uses it: the neighbours are fetched while the current step is looked at
            page.evaluate("window.seqvizDashboard.options.prefetch = true")
            for i in range(args.repeat * 2):
                page.wait_for_timeout(2000)
                ready.append(page.evaluate(MEASURE_SWITCH, i % 2))
        finally:
            handle.stop()
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
    print(f"served live: step switch incl. fetching the {len(json_for_html(entries[0])) / 1e6:.1f} MB entry over the "
          f"websocket: median {statistics.median(r['total'] for r in fetched):.0f} ms "
          f"(of which DOM+layout {statistics.median(r['render'] for r in fetched):.0f} ms); with the neighbours "
          f"prefetched while the page is read (2 s): median {statistics.median(r['total'] for r in ready):.0f} ms")


if __name__ == "__main__":
    main()
