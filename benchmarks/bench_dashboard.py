"""How fast the dashboard draws long data in headless Chromium.

4 sequences x 2,048 tokens (top-20 each) are exported to a page; the page is opened
from disk and we time, inside the page, (a) the first render and (b) switching to
another step (entry already in the page), each up to the next painted frame.
Targets: first render <= 200 ms, step switch <= 100 ms. It also times a step switch
under ``seqviz serve`` where the step is fetched over the websocket and parsed first:
as the dashboard asks for it (its step view, ``step?view=1``, no candidates; target
<= 300 ms cold) and, for comparison in the same run, the whole logged entry (the
dashboard made to drop ``view``), and asking for one prediction's candidates (a click).
``--sizes`` adds the bytes of a step at 4 x 512 tokens: the logged entry, its view, an
exported page of 2 steps and a W&B panel (built as ``WandbMirror`` builds it, after
``--panel-steps`` steps so its series are full), each before (logged entries inlined) and now.

    .venv/bin/python benchmarks/bench_dashboard.py [--seqs 4] [--tokens 2048] [--repeat 5] [--sizes]
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

FULL_ENTRIES = """() => {
  // the dashboard as before step views: every step fetched as the whole logged entry
  const source = window.seqvizDashboard.source;
  const get = source.get.bind(source);
  source.get = (route, params = {}) => { const { view, ...rest } = params; return get(route, route === "step" ? rest : params); };
}"""

MEASURE_CANDIDATES = """async (args) => {
  const app = window.seqvizDashboard;
  const t0 = performance.now();
  const answer = await app.source.get("candidates", { run: app.state.run, step: args.step, seq: args.seq, pos: args.pos });
  return { total: performance.now() - t0, n: answer.top_k.length };
}"""

MEASURE_GET = """async (step) => {
  // the fetch alone: request over the websocket, answer, JSON.parse (no rendering)
  const app = window.seqvizDashboard;
  const t0 = performance.now();
  await app.source.get("step", { run: app.state.run, step, view: 1 });
  return { total: performance.now() - t0 };
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
    parser.add_argument("--sizes", action="store_true", help="also the bytes of a step, an export and a W&B panel at 4 x 512")
    parser.add_argument("--panel-steps", type=int, default=25)
    args = parser.parse_args()
    if args.sizes:
        sizes(args.panel_steps)

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
        server_side(run, entries)
        handle = start_in_thread(file=run, port=0)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(handle.url)  # (its CSP forbids wait_for_function's eval: wait on selectors)
            page.wait_for_selector(".status.live", timeout=60000)
            page.wait_for_selector(".tok", timeout=60000)
            fetched, ready, whole, clicks = [], [], [], []
            page.evaluate("window.seqvizDashboard.options.prefetch = false")
            for i in range(args.repeat * 2):
                page.evaluate("window.seqvizDashboard.cache.clear()")
                fetched.append(page.evaluate(MEASURE_SWITCH, i % 2))
            gets = [page.evaluate(MEASURE_GET, entries[i % 2]["step"]) for i in range(args.repeat * 2)]
            for i in range(args.repeat * 2):
                clicks.append(page.evaluate(MEASURE_CANDIDATES, {"step": entries[i % 2]["step"], "seq": i % args.seqs, "pos": 7 * i}))
            # as a reader uses it: the neighbours are fetched while the current step is looked at
            page.evaluate("window.seqvizDashboard.options.prefetch = true")
            for i in range(args.repeat * 2):
                page.wait_for_timeout(2000)
                ready.append(page.evaluate(MEASURE_SWITCH, i % 2))
            page.evaluate("window.seqvizDashboard.options.prefetch = false")
            page.evaluate(FULL_ENTRIES)
            for i in range(args.repeat * 2):
                page.evaluate("window.seqvizDashboard.cache.clear()")
                whole.append(page.evaluate(MEASURE_SWITCH, i % 2))
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
    from seqviz_trackers.format.view import step_view

    full_mb, view_mb = len(json_for_html(entries[0])) / 1e6, len(json_for_html(step_view(entries[0]))) / 1e6
    show("served view", fetched, 300)
    print(f"served live: step switch fetching the {view_mb:.2f} MB step view over the websocket: median "
          f"{statistics.median(r['total'] for r in fetched):.0f} ms (DOM+layout {statistics.median(r['render'] for r in fetched):.0f} ms); "
          f"the whole {full_mb:.1f} MB logged entry instead (as before step views): median "
          f"{statistics.median(r['total'] for r in whole):.0f} ms (DOM+layout {statistics.median(r['render'] for r in whole):.0f} ms); "
          f"with the neighbours prefetched while the page is read (2 s): median {statistics.median(r['total'] for r in ready):.0f} ms")
    print(f"served live: of a cold step switch, the step view's request + answer + JSON.parse alone: median "
          f"{statistics.median(r['total'] for r in gets):.0f} ms")
    print(f"served live: one prediction's candidates (a click): median {statistics.median(r['total'] for r in clicks):.0f} ms, "
          f"max {max(r['total'] for r in clicks):.0f} ms")


def server_side(run: Path, entries: list[dict]) -> None:
    """Where a cold step view's time goes on the server: reading and parsing the line,
    building the view, encoding it (medians of 3)."""
    import os

    from seqviz_trackers import TrainingDataReader
    from seqviz_trackers.format.view import step_view
    from seqviz_trackers.storage.jsonl import client_json

    reader = TrainingDataReader(run)
    read, build, encode = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        entry = reader.get_step(entries[0]["step"])
        t1 = time.perf_counter()
        view = step_view(entry)
        t2 = time.perf_counter()
        client_json(view)
        read.append(t1 - t0); build.append(t2 - t1); encode.append(time.perf_counter() - t2)
    print(f"server side of a cold step view: read + parse the line {1000 * statistics.median(read):.0f} ms, "
          f"build the view {1000 * statistics.median(build):.0f} ms, encode it {1000 * statistics.median(encode):.0f} ms")
    # what the step route does now: the view as the line's columns record holds it (encoded
    # already), the line only checksummed
    info = reader.step_info(entries[0]["step"])
    read = []
    for _ in range(3):
        t0 = time.perf_counter()
        client_json(TrainingDataReader(run).read_view(info, encoded=True))
        read.append(time.perf_counter() - t0)
    from seqviz_trackers.storage.columns import encode_record

    without = encode_record(entries[0], info.offset, info.length)  # a record as before the views
    print(f"  now, from the columns file (the step route): read the view, check the line and send the view as stored "
          f"{1000 * statistics.median(read):.0f} ms; columns file {os.path.getsize(str(run) + '.cols') / 2e6:.2f} MB "
          f"per step ({len(without) / 1e6:.2f} MB without the view), JSONL {os.path.getsize(run) / 2e6:.2f} MB per step")


def sizes(panel_steps: int) -> None:
    """Bytes of a step at 4 x 512 tokens, an exported page of 2 steps and a W&B panel, before
    (the logged entries inlined as JSON, as pages were made before step views) and now."""
    import base64
    import gzip

    from web_data import long_entry

    from seqviz_trackers.dynamics import Dynamics, compare
    from seqviz_trackers.format.view import step_view
    from seqviz_trackers.serve.export import _PAGE_DATA, dynamics_extra, export_html, json_for_html, page_data

    def mb(n: int) -> str:
        return f"{n / 1e6:.2f} MB"

    def packed(obj) -> int:  # as the page holds it
        return len(base64.b64encode(gzip.compress(json_for_html(obj).encode(), 6)))

    def before_and_now(page: str, entries: list[dict]) -> tuple[int, int, int]:
        """(bytes before, bytes now, bytes of the page besides its data)."""
        data = page_data(page)
        old = {**data, "entries": entries}
        rest = len(page.encode()) - len(_PAGE_DATA.search(page).group(1))
        return rest + len(json_for_html(old).encode()), len(page.encode()), rest

    entries = [long_entry(step, 4, 512, seed=1) for step in range(max(2, panel_steps))]
    last = entries[-1]
    full = len(json_for_html(last).encode())
    view = len(json_for_html(step_view(last)).encode())
    form = step_view(last, with_candidates=True)
    print(f"4 x 512 step: logged entry {mb(full)}; step view (what the served dashboard is sent) {mb(view)} "
          f"({view / full:.2f}); with every candidate, as a page holds it: {mb(len(json_for_html(form).encode()))}, "
          f"compressed {mb(packed(form))}")
    old, now, _ = before_and_now(export_html(entries[-2:], title="bench"), entries[-2:])
    print(f"export of 2 steps at 4 x 512: {mb(now)} (before: {mb(old)})")
    dyn, previous = Dynamics(), None
    for entry in entries:
        dyn.add_entry(entry)
        diffs = {entry["step"]: compare(previous, entry, per_token=True, number=dyn.number_of)} if previous else {}
        previous = entry
    extra = dynamics_extra(dyn, [last], diffs, points=24)
    history = [{"step": e["step"], "loss": e["loss"], "perplexity": e["perplexity"]} for e in entries]
    old, now, rest = before_and_now(export_html([last], steps=history, title="bench", extra=extra), [last])
    cand = [s["candidates"] for s in form["sequences"]]
    print(f"W&B panel at 4 x 512 after {len(entries)} steps: {mb(now)} (before: {mb(old)}); goal <= 0.5 MB. "
          f"Compressed parts: the step view {mb(packed(step_view(last)))}, candidate ids {mb(packed([c['id'] for c in cand]))}, "
          f"candidate p {mb(packed([c['p'] for c in cand]))}, dynamics {mb(packed(extra))}; "
          f"the dashboard's code, style and markup {mb(rest)}")


if __name__ == "__main__":
    main()
