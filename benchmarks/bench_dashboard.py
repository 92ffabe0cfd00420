"""How fast the dashboard is at real scale, in headless Chromium, on each of its back ends.

For each case (``--cases``: 4x512, 8x2048, 16x4096 = sequences x tokens, top-20 each) a run
of ``--steps`` steps is written in-process (the real converter, ``SeqVizLogger`` to JSONL
and the TensorBoard mirror) and opened three ways: ``seqviz serve`` (websocket), the
TensorBoard tab (a real ``tensorboard --logdir`` process, the plugin's iframe) and a page
made by ``seqviz export --all``. On each, inside the page:

- open: from navigation to the first painted frame with token boxes (goal <= 1.5 s; a large
  step's first sequences are drawn before the rest), and until the whole step is drawn
  (``--opens N``: N more opens, medians and ranges of both);
- step change cold (the step not fetched yet; goal <= 300 ms) and warm (its neighbours
  prefetched, as after reading a step for a moment; goal <= 100 ms), to the next frame; the
  cold figure once the tracks the page asks for at open are built, and beside it the first
  step change, made at once while the back end builds them;
- Compare switched on (goal <= 300 ms) and colour by change the first time (the diff asked
  for and coloured; goal <= 300 ms), each to the next frame;
- a token clicked: until its top candidates are drawn, the first time on the step (the
  back end reads them from the line) and then another token's;
- scrolling the page programmatically by ``--scroll-px`` per frame through the grids (and
  back up from the bottom of a shorter page): the frame intervals (requestAnimationFrame;
  goal: none > 50 ms, median <= 17 ms), the long animation frames Chromium reports, and the
  most token boxes in the DOM meanwhile.

``--screenshots DIR`` saves the served page and the TensorBoard tab of each case there.
``--sizes`` adds the bytes of a step at 4 x 512 tokens: the logged entry, its view, an
exported page of 2 steps and a W&B panel (built as ``WandbMirror`` builds it, after
``--panel-steps`` steps so its series are full), each before (logged entries inlined) and now.

    .venv/bin/python benchmarks/bench_dashboard.py [--cases 4x512,8x2048,16x4096] [--steps 3]
        [--backends serve,tb,export] [--screenshots DIR] [--sizes]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}

# in every frame before its scripts: when the first token box is painted (epoch ms)
FIRST_PAINT = """(() => {
  const seen = () => {
    if (window.__seqvizFirstTok || !document.querySelector(".tok")) return false;
    requestAnimationFrame(() => setTimeout(() => { window.__seqvizFirstTok = performance.timeOrigin + performance.now(); }, 0));
    return true;
  };
  const watch = () => {
    if (seen()) return;
    const mo = new MutationObserver(() => { if (seen()) mo.disconnect(); });
    mo.observe(document.documentElement, { childList: true, subtree: true });
  };
  if (document.documentElement) watch(); else document.addEventListener("DOMContentLoaded", watch);
})();"""

NEXT_FRAME = "await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));"

MEASURE_SWITCH = """async (index) => {
  const app = window.seqvizDashboard;
  const before = app.timings.length;
  const t0 = performance.now();
  app.goIndex(index);
  while (app.timings.length === before) await new Promise((r) => setTimeout(r, 0));
  %s
  const t = app.timings[app.timings.length - 1];
  return { total: performance.now() - t0, render: t.renderMs };
}""" % NEXT_FRAME

WAIT_CACHED = """async (steps) => {
  const app = window.seqvizDashboard;
  const t0 = performance.now();
  while (!steps.every((s) => app.cache.has(s)) && performance.now() - t0 < 60000) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 50));
  return steps.every((s) => app.cache.has(s)) ? performance.now() - t0 : -1;
}"""

MEASURE_GET = """async (step) => {
  // the fetch alone: request over the websocket, answer, JSON.parse (no rendering)
  const app = window.seqvizDashboard;
  const t0 = performance.now();
  await app.source.get("step", { run: app.state.run, step, view: 1 });
  return { total: performance.now() - t0 };
}"""

MEASURE_COMPARE = """async (on) => {
  const app = window.seqvizDashboard;
  const before = app.timings.length;
  const t0 = performance.now();
  app.setCompare(on);
  while (app.timings.length === before) await new Promise((r) => setTimeout(r, 0));
  %s
  const t = app.timings[app.timings.length - 1];
  return { total: performance.now() - t0, render: t.renderMs, cells: document.querySelectorAll(".tok").length };
}""" % NEXT_FRAME

MEASURE_METRIC = """async (metric) => {
  const app = window.seqvizDashboard;
  const before = app.timings.length;
  const t0 = performance.now();
  app.metricSelect.value = metric;
  app.metricSelect.dispatchEvent(new Event("change"));
  while (app.timings.length === before) await new Promise((r) => setTimeout(r, 0));
  %s
  const t = app.timings[app.timings.length - 1];
  const coloured = document.querySelectorAll(".tok.d0, .tok.d1, .tok.d2, .tok.d3, .tok.d4, .tok.d5, .tok.d6, .tok.d7, .tok.d8").length;
  return { total: performance.now() - t0, render: t.renderMs, coloured, error: app.state.diffError };
}""" % NEXT_FRAME

MEASURE_CLICK = """async ([seq, index]) => {
  // a token selected: until its top candidates (fetched for a step view) are drawn
  const app = window.seqvizDashboard;
  const t0 = performance.now();
  app.selectToken(0, seq, index);
  while (document.querySelector(".detail .candidates-wait") || !document.querySelector(".detail .bar-row")) {
    if (performance.now() - t0 > 60000) return -1;
    await new Promise((r) => setTimeout(r, 2));
  }
  %s
  return performance.now() - t0;
}""" % NEXT_FRAME

MEASURE_SCROLL = """async (args) => {
  const frames = [], longFrames = [];
  let boxes = 0;
  let observer = null;
  try {
    observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) longFrames.push(e.duration); });
    observer.observe({ type: "long-animation-frame", buffered: false });
  } catch (err) { observer = null; }
  const scroller = document.scrollingElement;
  scroller.scrollTop = 0;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const end = scroller.scrollHeight - innerHeight;
  let last = performance.now();
  let step = args.px;  // down, and back up from the bottom (a page shorter than the scroll)
  for (let k = 0; k < args.frames; k++) {
    await new Promise((r) => requestAnimationFrame(r));
    const now = performance.now();
    frames.push(now - last);
    last = now;
    boxes = Math.max(boxes, document.querySelectorAll(".tok").length);
    if (scroller.scrollTop + step > end || scroller.scrollTop + step < 0) step = -step;
    scroller.scrollTop = Math.max(0, Math.min(end, scroller.scrollTop + step));
  }
  await new Promise((r) => setTimeout(r, 100));
  if (observer) observer.disconnect();
  return { frames, longFrames: observer ? longFrames : null, boxes, height: scroller.scrollHeight };
}"""


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "blink", "cc", "viz"]


def cpu_per_frame(trace: Path) -> dict:
    """CPU time (thread time, so hardly moved by other load on the machine) per frame of the
    scroll, from a Chromium trace: the main thread's frame (script, style, layout, paint,
    layerize), raster (worker threads) and drawing the frame."""
    import json

    data = json.loads(trace.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    sums = {"main": 0.0, "raster": 0.0, "draw": 0.0}
    frames = 0
    names = {"ProxyMain::BeginMainFrame": "main", "RasterTask": "raster", "Display::DrawAndSwap": "draw"}
    for e in events:
        key = names.get(e.get("name"))
        if key and e.get("ph") == "X" and "tdur" in e:
            sums[key] += e["tdur"] / 1000
            frames += key == "main"
    return {k: v / max(1, frames) for k, v in sums.items()}


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def write_run(root: Path, seqs: int, tokens: int, steps: int) -> tuple[Path, Path]:
    """``steps`` steps of ``seqs`` x ``tokens`` tokens: (the JSONL file, the TensorBoard log dir)."""
    from web_data import long_entry

    from seqviz_trackers import SeqVizLogger

    jsonl, logdir = root / "bench.jsonl", root / "tb"
    with SeqVizLogger(jsonl, tensorboard=logdir / "bench", validate=False) as logger:
        for k in range(steps):
            logger.log_step(long_entry(100 * (k + 1), seqs, tokens))
    return jsonl, logdir


def export_page(jsonl: Path, out: Path) -> None:
    from seqviz_trackers.cli.main import main as seqviz

    if seqviz(["export", str(jsonl), "--all", "-o", str(out)]) != 0:
        raise SystemExit("seqviz export failed")


def find_frame(page, kind: str):
    """The frame the dashboard lives in: the page itself, or TensorBoard's plugin iframe."""
    for _ in range(600):
        if kind != "tb":
            return page
        for frame in page.frames:
            if "plugin_entry.html" in frame.url and "name=seqviz" in frame.url:
                return frame
        page.wait_for_timeout(100)
    raise RuntimeError("no seqviz iframe in TensorBoard")


def poll(frame, expr: str, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            value = frame.evaluate(expr)
        except Exception:  # the frame is still loading
            value = None
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(expr)


def open_times(browser, kind: str, url: str) -> tuple[float, float]:
    """One more open of ``url``: (first token box painted, whole step drawn), ms from navigation."""
    page = browser.new_page(viewport=VIEWPORT)
    page.add_init_script(FIRST_PAINT)
    try:
        page.goto(url)
        origin = page.evaluate("performance.timeOrigin")
        frame = find_frame(page, kind)
        first = poll(frame, "window.__seqvizFirstTok || 0")
        whole = poll(frame, "window.seqvizDashboard && window.seqvizDashboard.timings.length > 0 && "
                            "window.seqvizDashboard.timings[0].drawnAt")
        return first - origin, whole - origin
    finally:
        page.close()


def measure(browser, kind: str, url: str, steps: list[int], repeat: int, scroll_frames: int, scroll_px: int,
            shot: Path | None, opens: int = 0) -> dict:
    started = time.perf_counter()
    uncached = 0
    page = browser.new_page(viewport=VIEWPORT)
    page.add_init_script(FIRST_PAINT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        origin = page.evaluate("performance.timeOrigin")
        frame = find_frame(page, kind)
        first = poll(frame, "window.__seqvizFirstTok || 0")
        out = {"open": first - origin}
        poll(frame, "window.seqvizDashboard && window.seqvizDashboard.timings.length > 0 && window.seqvizDashboard.ready")
        out["boxes_open"] = frame.evaluate("document.querySelectorAll('.tok').length")
        out["open_whole"] = frame.evaluate("window.seqvizDashboard.timings[0].drawnAt") - origin
        n = len(steps)
        last = n - 1
        # cold: the step asked for and drawn, nothing cached
        frame.evaluate("window.seqvizDashboard.options.prefetch = false")
        # the first one at once, while the back end builds the tracks the page asked for at open
        # (TensorBoard's plugin and seqviz serve answer it beside the step, on the same 2 cores)
        frame.evaluate("window.seqvizDashboard.cache.clear()")
        out["cold_at_open"] = frame.evaluate(MEASURE_SWITCH, 0)
        frame.evaluate("window.seqvizDashboard.tracksAsked")  # then once they are built
        cold = []
        for i in range(repeat):
            frame.evaluate("window.seqvizDashboard.cache.clear()")
            cold.append(frame.evaluate(MEASURE_SWITCH, last - 1 - (i % 2) if n > 2 else (i + 1) % n))
        out["cold"] = cold
        out["get"] = [frame.evaluate(MEASURE_GET, steps[i % n]) for i in range(repeat)]
        # warm: the neighbours prefetched while the step is read
        frame.evaluate("(() => { const app = window.seqvizDashboard; app.options.prefetch = true; app.prefetchAround(app.state.index); })()")
        warm = []
        at = frame.evaluate("window.seqvizDashboard.state.index")
        for i in range(repeat):
            to = at + 1 if at + 1 < n else at - 1
            uncached += frame.evaluate(WAIT_CACHED, [steps[k] for k in (at - 1, at + 1) if 0 <= k < n]) < 0
            warm.append(frame.evaluate(MEASURE_SWITCH, to))
            at = to
        out["warm"] = warm
        frame.evaluate(MEASURE_SWITCH, last)
        uncached += frame.evaluate(WAIT_CACHED, [steps[last - 1]]) < 0
        # Compare: the step shown beside another (the first step: not a neighbour, fetched)
        cmp = []
        for i in range(repeat):
            cmp.append(frame.evaluate(MEASURE_COMPARE, True))
            frame.evaluate(MEASURE_COMPARE, False)
        out["compare"] = cmp
        # colour by change, the first time (the diff asked for), then again (cached)
        out["change_first"] = frame.evaluate(MEASURE_METRIC, "change")
        frame.evaluate(MEASURE_METRIC, "prob")
        out["change_again"] = frame.evaluate(MEASURE_METRIC, "change")
        frame.evaluate(MEASURE_METRIC, "prob")
        # a token clicked: its top candidates, the first time on this step, then another's
        out["click"] = [frame.evaluate(MEASURE_CLICK, [0, 7]), frame.evaluate(MEASURE_CLICK, [1, 9])]
        frame.evaluate("window.seqvizDashboard.options.prefetch = false")
        trace = Path(tempfile.mkstemp(suffix=".json")[1])
        browser.start_tracing(page=page, path=str(trace), categories=TRACE_CATEGORIES)
        try:
            out["scroll"] = frame.evaluate(MEASURE_SCROLL, {"frames": scroll_frames, "px": scroll_px})
        finally:
            browser.stop_tracing()
        out["scroll"]["cpu"] = cpu_per_frame(trace)
        trace.unlink()
        if shot is not None:
            frame.evaluate("document.scrollingElement.scrollTop = 0")
            frame.evaluate("(async () => { %s })()" % NEXT_FRAME)
            page.screenshot(path=str(shot))
            frame.evaluate("document.scrollingElement.scrollTop = document.scrollingElement.scrollHeight / 2")
            frame.evaluate("(async () => { %s })()" % NEXT_FRAME)
            page.screenshot(path=str(shot.with_name(shot.stem + "_middle.png")))
        out["errors"] = errors
        out["uncached"] = uncached
        out["opens"] = [open_times(browser, kind, url) for _ in range(opens)]
        out["wall"] = time.perf_counter() - started
        return out
    finally:
        page.close()


def report(case: str, kind: str, r: dict) -> None:
    print(f"  {kind:<6} measured in {r['wall']:.0f} s" + (f"; neighbours not prefetched within 60 s: {r['uncached']} time(s)" if r["uncached"] else ""))
    def med(runs: list[dict]) -> str:
        total = [x["total"] for x in runs]
        return f"median {statistics.median(total):6.0f} ms (render {statistics.median(x['render'] for x in runs):4.0f}), max {max(total):5.0f}"

    def goal(value: float, limit: float) -> str:
        return "OK" if value <= limit else "MISSED"

    s = r["scroll"]
    frames = s["frames"][2:]  # the first two: the jump to the top
    long = s["longFrames"]
    over = sum(f > 50 for f in frames)
    print(f"  {kind:<6} open {r['open']:6.0f} ms ({goal(r['open'], 1500)}; {r['boxes_open']} boxes), "
          f"every sequence drawn at {r['open_whole']:.0f} ms")
    if r["opens"]:
        first, whole = zip(*r["opens"])
        print(f"  {kind:<6} opened {len(first)} times more: first token box painted median {statistics.median(first):.0f} ms "
              f"({min(first):.0f}-{max(first):.0f}), every sequence drawn median {statistics.median(whole):.0f} ms "
              f"({min(whole):.0f}-{max(whole):.0f})")
    print(f"  {kind:<6} step change cold {med(r['cold'])} ({goal(statistics.median(x['total'] for x in r['cold']), 300)}); "
          f"the first, while the tracks asked for at open are built: {r['cold_at_open']['total']:.0f} ms")
    print(f"  {kind:<6} of a cold step change, the step view's request + answer + JSON.parse alone: median "
          f"{statistics.median(x['total'] for x in r['get']):.0f} ms")
    print(f"  {kind:<6} step change warm {med(r['warm'])} ({goal(statistics.median(x['total'] for x in r['warm']), 100)})")
    print(f"  {kind:<6} Compare          {med(r['compare'])} ({goal(statistics.median(x['total'] for x in r['compare']), 300)}; {r['compare'][0]['cells']} boxes)")
    c1, c2 = r["change_first"], r["change_again"]
    print(f"  {kind:<6} colour by change first {c1['total']:6.0f} ms (render {c1['render']:4.0f}; {goal(c1['total'], 300)}), "
          f"again {c2['total']:4.0f} ms; {c1['coloured']} boxes coloured{'; ' + c1['error'] if c1['error'] else ''}")
    print(f"  {kind:<6} a token clicked, its top candidates drawn: {r['click'][0]:.0f} ms the first time on a step, "
          f"then {r['click'][1]:.0f} ms")
    print(f"  {kind:<6} scroll {len(frames)} frames: {over} > 50 ms ({goal(over, 0)}), median {statistics.median(frames):4.1f} ms "
          f"({goal(statistics.median(frames), 17)}), p95 {pct(frames, 0.95):5.1f} ms, max {max(frames):5.1f} ms; "
          f"long animation frames {'n/a' if long is None else f'{len(long)} (max {max(long, default=0):.0f} ms)'}; "
          f"at most {s['boxes']} boxes in the DOM, page {s['height']} px")
    c = s["cpu"]
    print(f"  {kind:<6} scroll CPU per frame (thread time): main thread {c['main']:.1f} ms, raster {c['raster']:.1f} ms, "
          f"drawing {c['draw']:.1f} ms")
    if r["errors"]:
        print(f"  {kind:<6} page errors: {r['errors'][:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="8x2048", help="comma-separated SEQSxTOKENS (default 8x2048)")
    parser.add_argument("--seqs", type=int, help="with --tokens: one case, SEQS x TOKENS (instead of --cases)")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--backends", default="serve,tb,export")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--opens", type=int, default=0, help="open each page this many times more (open figures only)")
    parser.add_argument("--scroll-frames", type=int, default=240)
    parser.add_argument("--scroll-px", type=int, default=60, help="px scrolled per frame (60: 3,600 px/s)")
    parser.add_argument("--screenshots", type=Path, help="save the served page and the TensorBoard tab here")
    parser.add_argument("--no-server-side", action="store_true", help="skip timing the server's part of a cold step view")
    parser.add_argument("--sizes", action="store_true", help="also the bytes of a step, an export and a W&B panel at 4 x 512")
    parser.add_argument("--panel-steps", type=int, default=25)
    args = parser.parse_args()
    if args.seqs or args.tokens:
        args.cases = f"{args.seqs or 8}x{args.tokens or 2048}"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    if args.sizes:
        sizes(args.panel_steps)
    from playwright.sync_api import sync_playwright
    from tb_helpers import TensorBoardProcess

    from seqviz_trackers.serve.server import start_in_thread

    backends = args.backends.split(",")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for case in args.cases.split(","):
            seqs, tokens = (int(x) for x in case.lower().split("x"))
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                t = time.perf_counter()
                jsonl, logdir = write_run(root, seqs, tokens, args.steps)
                steps = [100 * (k + 1) for k in range(args.steps)]
                print(f"\n{seqs} x {tokens} tokens, {args.steps} steps: written in {time.perf_counter() - t:.0f} s "
                      f"({jsonl.stat().st_size / 1e6:.0f} MB); load average {os.getloadavg()[0]:.1f}")
                if "serve" in backends and not args.no_server_side:
                    from seqviz_trackers import TrainingDataReader

                    server_side(jsonl, TrainingDataReader(jsonl).get_step(steps[0]))
                shot = (lambda kind: args.screenshots / f"{kind}_{case}.png") if args.screenshots else (lambda kind: None)
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                if "serve" in backends:
                    handle = start_in_thread(file=jsonl, port=0)
                    try:
                        report(case, "serve", measure(browser, "serve", handle.url, steps, args.repeat,
                                                      args.scroll_frames, args.scroll_px, shot("serve"), args.opens))
                    finally:
                        handle.stop()
                if "tb" in backends:
                    proc = TensorBoardProcess(logdir, load_fast=True, log_path=root / "tb.log")
                    try:
                        report(case, "tb", measure(browser, "tb", proc.url + "/#seqviz", steps, args.repeat,
                                                   args.scroll_frames, args.scroll_px, shot("tb"), args.opens))
                    finally:
                        proc.stop()
                if "export" in backends:
                    page_path = root / "bench.html"
                    t = time.perf_counter()
                    export_page(jsonl, page_path)
                    print(f"  export: {page_path.stat().st_size / 1e6:.1f} MB page made in {time.perf_counter() - t:.0f} s")
                    report(case, "export", measure(browser, "export", page_path.as_uri(), steps, args.repeat,
                                                   args.scroll_frames, args.scroll_px, None, args.opens))
                print(f"  load average after: {os.getloadavg()[0]:.1f}")
        browser.close()


def server_side(run: Path, entry: dict) -> None:
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
        entry = reader.get_step(entry["step"])
        t1 = time.perf_counter()
        view = step_view(entry)
        t2 = time.perf_counter()
        client_json(view)
        read.append(t1 - t0); build.append(t2 - t1); encode.append(time.perf_counter() - t2)
    print(f"server side of a cold step view: read + parse the line {1000 * statistics.median(read):.0f} ms, "
          f"build the view {1000 * statistics.median(build):.0f} ms, encode it {1000 * statistics.median(encode):.0f} ms")
    # what the step route does now: the view as the line's columns record holds it (encoded
    # already), the line only checksummed
    info = reader.step_info(entry["step"])
    read = []
    for _ in range(3):
        t0 = time.perf_counter()
        client_json(TrainingDataReader(run).read_view(info, encoded=True))
        read.append(time.perf_counter() - t0)
    from seqviz_trackers.storage.columns import encode_record

    without = encode_record(entry, info.offset, info.length)  # a record as before the views
    print(f"  now, from the columns file (the step route): read the view, check the line and send the view as stored "
          f"{1000 * statistics.median(read):.0f} ms; columns file {os.path.getsize(str(run) + '.cols') / (1e6 * len(reader.steps)):.2f} MB "
          f"per step ({len(without) / 1e6:.2f} MB without the view), JSONL {os.path.getsize(run) / (1e6 * len(reader.steps)):.2f} MB per step")


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
