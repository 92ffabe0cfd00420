"""Training dynamics in the dashboard, in headless Chromium against a real ``seqviz serve``
on the known-event run of test_dynamics.py (probe position 0 learned at step 20, position 1
top-1 at 10 and 20 and forgotten at 30, position 2 rank 2 from step 30, position 3 top-1
throughout); the W&B panel opened from file://; graceful fallbacks."""

from __future__ import annotations

import json

import pytest

from playwright.sync_api import expect

from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.serve.export import export_html
from seqviz_trackers.serve.server import start_in_thread
from test_dynamics import STEPS, old_format_entry, synthetic_entry, write_synthetic

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = write_synthetic(tmp_path_factory.mktemp("dyn-dash") / "run.jsonl")
    h = start_in_thread(file=path, port=0, interval=0.1)
    yield h
    h.stop()


def open_at(page, url, hash_=""):
    page.goto(url + hash_)
    page.wait_for_selector(".tok", timeout=15000)


def wait_step(page, step):
    expect(page.locator(".step-label")).to_have_text(f"step {step}", timeout=10000)


def probe_box(page, token):
    """The box of token ``token`` of the probe (predicted at position token - 1)."""
    return page.locator(".seq").first.locator(".tok").nth(token)


def spark_pixel(page, step):
    """RGB of the sparkline near the bottom of its rank band at the x of ``step`` (there only
    the step marks are drawn, and the rank line of a bad rank)."""
    return page.evaluate("""(step) => {
        const spark = window.seqvizDashboard.detail.spark;
        const f = spark.frame();
        const dpr = window.devicePixelRatio || 1;
        const x = Math.round(f.x(step)), y = Math.round(f.rBot - 3);
        const d = spark.canvas.getContext('2d').getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data;
        return [d[0], d[1], d[2]];
    }""", step)


def is_green(rgb):
    r, g, b = rgb
    return g > 180 and r < 140


def test_click_a_token_shows_its_sparkline_with_the_learned_at_step(page, server):
    open_at(page, server.url)
    wait_step(page, 50)
    probe_box(page, 1).click()  # position 0: top-1 from step 20 on
    spark = page.locator(".detail .spark")
    expect(spark.locator(".spark-learned")).to_have_text("learned at step 20 \u00b7 top-1 from then on", timeout=10000)
    assert spark.get_attribute("data-learned-at") == "20"
    assert "6 steps" in spark.inner_text()
    assert is_green(spark_pixel(page, 20)), "the learned-at mark is drawn at step 20"
    assert not is_green(spark_pixel(page, 10)) and not is_green(spark_pixel(page, 30))

    probe_box(page, 2).click()  # position 1: learned at 10, forgotten at 30, never again
    expect(spark.locator(".spark-learned")).to_have_text("not learned (not top-1 through the last step)", timeout=10000)
    assert "forgotten 1\u00d7: step 30 (top-1 since 10)" in spark.inner_text()

    # a click on the sparkline goes to that step
    box = page.locator(".spark-canvas").bounding_box()
    x = page.evaluate("() => window.seqvizDashboard.detail.spark.frame().x(10)")
    page.mouse.click(box["x"] + x, box["y"] + box["height"] / 2)
    wait_step(page, 10)
    assert not page.js_errors


def test_change_colours_and_legend(page, server):
    open_at(page, server.url, "#step=30")
    wait_step(page, 30)
    page.locator(".metric-select").select_option("change")
    legend = page.locator(".legend")
    expect(legend.locator(".legend-title")).to_have_text("colour: change in log p(target)")
    assert legend.locator(".swatches .sw").count() == 9
    expect(legend.locator(".legend-note")).to_contain_text("at step 30 \u2212 at step 20")
    assert page.locator(".from-select").input_value() == ""  # A: the previous logged step
    assert "previous (20)" in page.locator(".from-select option").first.inner_text()
    assert page.locator(".to-select").input_value() == "30"
    # position 1 lost top-1 at 30 (much worse: Δ log p = -3.9), position 2 rose to rank 2
    # (better: +1.9), position 3 stayed top-1 (no change)
    expect(probe_box(page, 2)).to_have_class("tok d0")
    expect(probe_box(page, 3)).to_have_class("tok d7")
    expect(probe_box(page, 4)).to_have_class("tok d4")
    assert "first" in probe_box(page, 0).get_attribute("class")  # nothing predicts the first token

    # pick A = step 0: position 0 (learned at 20) is now much better too
    page.locator(".from-select").select_option("0")
    expect(legend.locator(".legend-note")).to_contain_text("at step 30 \u2212 at step 0")
    expect(probe_box(page, 1)).to_have_class("tok d8")
    page.wait_for_function("() => location.hash.includes('from=0') && location.hash.includes('metric=change')")
    assert not page.js_errors


def test_colours_ask_for_no_divergences_and_the_list_does(page, server):
    """Colouring by change needs only each token's change: its diff is asked for without
    divergences and rows (the server then reads only the steps' columns records); the
    Changes list asks for both."""
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))

    def diffs():
        return [m["params"] for m in sent if m.get("type") == "get" and m.get("route") == "diff"]

    open_at(page, server.url, "#step=30&metric=change")
    wait_step(page, 30)
    expect(probe_box(page, 2)).to_have_class("tok d0")
    assert diffs() and all(p.get("divergence") == 0 and p.get("limit") == 0 for p in diffs())
    page.locator(".changes-btn").click()
    rows = page.locator(".changes .change-row")
    expect(rows.first).to_be_visible(timeout=10000)
    assert [p for p in diffs() if "divergence" not in p and p.get("limit") == 50]
    js = rows.first.locator("td").evaluate_all("tds => tds.map((t) => t.textContent)")
    assert any(t.replace(".", "", 1).isdigit() for t in js)  # the JS column holds numbers again
    expect(probe_box(page, 2)).to_have_class("tok d0")
    assert not page.js_errors


def test_the_tracks_are_built_once_the_first_step_is_drawn(page, tmp_path):
    """Opening the page, with no click, asks for the shown step's tracked sequences, so the
    server builds the run's tracks then and the first colour by change does not wait for it."""
    from seqviz_trackers.dynamics.cache import _registry

    path = write_synthetic(tmp_path / "run.jsonl")
    h = start_in_thread(file=path, port=0)
    try:
        sent = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
        open_at(page, h.url)
        wait_step(page, STEPS[-1])
        page.wait_for_function("() => window.seqvizDashboard.dynCache.size > 0", timeout=15000)
        asked = [m["params"] for m in sent if m.get("type") == "get" and m.get("route") == "sequences"]
        assert asked == [{"run": asked[0]["run"], "step": STEPS[-1]}]
        page.evaluate("() => Promise.all([...window.seqvizDashboard.dynCache.values()])")  # answered
        built = [s for r, s in list(_registry.items()) if str(r.path) == str(path)]
        assert built and built[0].dyn.steps.n == len(STEPS)
        assert not [m for m in sent if m.get("route") == "diff"]
    finally:
        h.stop()
    assert not page.js_errors


def test_list_view_shows_a_learned_token_and_jumps_to_it(page, server):
    open_at(page, server.url, "#step=20")
    wait_step(page, 20)
    page.locator(".changes-btn").click()
    changes = page.locator(".changes")
    expect(changes.locator(".changes-title")).to_have_text("What changed from step 10 to step 20", timeout=10000)
    assert "JS divergence (top-k + other)" in changes.inner_text()
    assert "approximation" in changes.inner_text()
    changes.locator(".btn.tab[data-tab='learned']").click()
    rows = changes.locator(".change-row")
    expect(rows).to_have_count(1)  # probe position 0 (the other sequence is absent at 20)
    assert "probe" in rows.first.inner_text() and "#1" in rows.first.inner_text()
    # sortable: the columns re-order the rows of the most-improved list
    changes.locator(".btn.tab[data-tab='improved']").click()
    header = changes.locator("th[data-sort='where']")
    header.click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    where = changes.locator(".change-row .c-where").all_inner_texts()
    header.click()
    expect(header).to_have_attribute("aria-sort", "descending")
    assert changes.locator(".change-row .c-where").all_inner_texts() == where[::-1]

    changes.locator(".btn.tab[data-tab='learned']").click()
    rows.first.click()
    sel = page.locator(".seq").first.locator(".tok.sel")
    expect(sel).to_have_count(1)
    assert sel.evaluate("e => e._index") == 1
    expect(page.locator(".detail")).to_contain_text("probe \u00b7 position 1 \u00b7 step 20")
    expect(page.locator(".detail .spark-learned")).to_have_text("learned at step 20 \u00b7 top-1 from then on")
    assert not page.js_errors


def test_loss_chart_click_lists_the_tokens_by_loss_change(page, server):
    open_at(page, server.url)
    wait_step(page, 50)
    chart = page.locator(".chart-canvas").first
    box = chart.bounding_box()
    x = page.evaluate("() => window.seqvizDashboard.lossChart.frame().x(30)")
    page.mouse.click(box["x"] + x, box["y"] + box["height"] / 2)
    wait_step(page, 30)
    changes = page.locator(".changes")
    expect(changes.locator(".changes-title")).to_have_text("What changed from step 20 to step 30", timeout=10000)
    expect(changes.locator(".btn.tab.on")).to_have_attribute("data-tab", "worsened")
    rows = changes.locator(".change-row")
    first = rows.first.inner_text()
    assert "probe" in first and "#2" in first  # position 1: lost top-1 at 30, the biggest loss increase
    deltas = [float(t.replace("\u2212", "-")) for t in changes.locator(".change-row td.worse").all_inner_texts()]
    assert deltas and deltas == sorted(deltas) and deltas[0] < -1
    # at the first step there is nothing to compare with: said, not an error
    x0 = page.evaluate("() => window.seqvizDashboard.lossChart.frame().x(0)")
    page.mouse.click(box["x"] + x0, box["y"] + box["height"] / 2)
    wait_step(page, 0)
    expect(changes).to_contain_text("first logged step")
    assert not page.js_errors


def test_wandb_panel_from_disk_shows_the_sparkline(page, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb_helpers import html_files, log_steps_offline, offline_env

    offline_env(monkeypatch, tmp_path)
    files = html_files(log_steps_offline(tmp_path, [synthetic_entry(step) for step in STEPS]))
    assert len(files) == len(STEPS)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    url = files[3].resolve().as_uri()  # the panel of step 30: the run up to step 30
    page.goto(url)
    page.wait_for_selector(".tok", timeout=15000)
    probe_box(page, 1).click()
    spark = page.locator(".detail .spark")
    expect(spark.locator(".spark-learned")).to_have_text("learned at step 20 \u00b7 top-1 from then on", timeout=10000)
    assert "4 steps" in spark.inner_text()  # 0, 10, 20, 30
    assert is_green(spark_pixel(page, 20))
    # the change since the previous logged step is inlined too
    page.locator(".metric-select").select_option("change")
    expect(probe_box(page, 2)).to_have_class("tok d0")
    expect(page.locator(".legend-note")).to_contain_text("at step 30 \u2212 at step 20")
    page.locator(".changes-btn").click()
    expect(page.locator(".changes-title")).to_have_text("What changed from step 20 to step 30")
    assert "probe" in page.locator(".change-row").first.inner_text()
    assert requests == [url] and not page.js_errors


def test_export_from_the_command_line_carries_the_dynamics(page, tmp_path):
    from seqviz_trackers.cli import main as cli_main

    path = write_synthetic(tmp_path / "run.jsonl")
    out = tmp_path / "report.html"
    assert cli_main(["export", str(path), "--step", "20", "--step", "30", "-o", str(out)]) == 0
    page.goto(out.as_uri() + "#metric=change")
    page.wait_for_selector(".tok", timeout=15000)
    probe_box(page, 2).click()
    expect(page.locator(".detail .spark")).to_contain_text("forgotten 1\u00d7: step 30 (top-1 since 10)", timeout=10000)
    assert "6 steps" in page.locator(".detail .spark").inner_text()  # the whole run
    expect(probe_box(page, 2)).to_have_class("tok d0 sel")
    # the page holds each of its steps' change since the step before; another A is said to be missing
    page.keyboard.press("ArrowLeft")
    wait_step(page, 20)
    expect(page.locator(".legend-note")).to_contain_text("at step 20 \u2212 at step 10")
    page.locator(".from-select").select_option("30")
    expect(page.locator(".legend-error")).to_contain_text("only the change from the previous logged step (10)")
    assert not page.js_errors


def test_single_step_and_old_pages_degrade_gracefully(page, tmp_path):
    # one logged step: a one-point sparkline, and "nothing to compare with"
    path = tmp_path / "one.jsonl"
    with TrainingDataWriter(path) as w:
        w.write_step(synthetic_entry(0))
    h = start_in_thread(file=path, port=0)
    try:
        open_at(page, h.url, "#metric=change")
        expect(page.locator(".legend-error")).to_contain_text("first logged step")
        probe_box(page, 4).click()
        expect(page.locator(".detail .spark-learned")).to_have_text("learned at step 0 \u00b7 top-1 from then on")
        assert "1 step" in page.locator(".detail .spark").inner_text()
        assert probe_box(page, 4).get_attribute("class") == "tok mna sel"
    finally:
        h.stop()
    # an old-format file (no ranks, probabilities or ids): p and rank from the candidates, else unknown
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(old_format_entry(s, s > 0)) + "\n" for s in (0, 1, 2)))
    h = start_in_thread(file=path, port=0)
    try:
        open_at(page, h.url, "#metric=change&changes=worsened")
        probe_box(page, 1).click()  # position 0: target outside the candidates at step 0, rank 2 later
        expect(page.locator(".detail .spark-learned")).to_have_text("not learned (not top-1 through the last step)")
        assert "in the top 5 from step 1" in page.locator(".detail .spark").inner_text()
        expect(page.locator(".changes-title")).to_have_text("What changed from step 1 to step 2")
        expect(probe_box(page, 2)).to_have_class("tok d4")  # position 1: the same at steps 1 and 2
    finally:
        h.stop()
    # a page without dynamics data (as an older back end or export): said in place
    out = tmp_path / "old.html"
    out.write_text(export_html([synthetic_entry(10)]))
    page.goto(out.as_uri() + "#metric=change")
    page.wait_for_selector(".tok", timeout=15000)
    expect(page.locator(".legend-error")).to_contain_text("No training-dynamics data here")
    probe_box(page, 1).click()
    expect(page.locator(".detail .history")).to_contain_text("not available")
    assert page.locator(".detail .bar-row").count() > 0  # the rest of the panel is there
    assert not page.js_errors
