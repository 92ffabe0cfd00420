"""The dashboard in headless Chromium against a real ``seqviz serve`` (websocket mode),
the same files in fetch mode (as TensorBoard loads them), and an exported page opened
from file:// (inline mode)."""

from __future__ import annotations

import json
import re

import pytest

from playwright.sync_api import expect

from factories import HOSTILE, make_entry
from seqviz_trackers import TrainingDataWriter, encode_entry
from seqviz_trackers.serve.export import export_html
from seqviz_trackers.serve.server import start_in_thread
from web_data import learning_entry

pytestmark = pytest.mark.browser

STEPS = [0, 100, 200, 300]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "run.jsonl"
    with TrainingDataWriter(path) as w:
        for step in STEPS:
            w.write_step(learning_entry(step, 300, long_tokens=3 if step == 300 else 0))
    return path


@pytest.fixture
def server(run_file, tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(run_file.read_bytes())
    h = start_in_thread(file=path, port=0, interval=0.1)
    h.path = path
    yield h
    h.stop()


def hash_of(page, contains, timeout=5.0):
    """The page's location.hash once it contains ``contains`` (it is written after a short pause)."""
    import time

    end = time.monotonic() + timeout
    while contains not in (value := page.evaluate("location.hash")) and time.monotonic() < end:
        time.sleep(0.05)
    return value


def open_dashboard(page, url):
    page.goto(url)
    page.wait_for_selector(".tok", timeout=15000)
    return page


def step_label(page):
    return page.locator(".step-label").inner_text()


def wait_step(page, step):
    expect(page.locator(".step-label")).to_have_text(f"step {step}", timeout=10000)


def test_connects_and_shows_the_latest_step(page, server):
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    open_dashboard(page, server.url)
    expect(page.locator(".status")).to_have_text("Live", timeout=10000)
    assert step_label(page) == "step 300"
    first_seq = page.locator(".seq").first
    assert first_seq.locator(".seq-name").inner_text() == "probe 0"
    # the first token of the first probe, whitespace made visible in later tokens
    assert first_seq.locator(".tok .tt").first.inner_text() == "supercal\u21b5"
    assert first_seq.locator(".tok .tt").nth(2).inner_text() == "supercalifragilisticexpialidocious\u21b5"
    texts = first_seq.locator(".tok .tt").all_inner_texts()
    assert "\u00b7be" in texts  # " be" with its space shown
    assert page.locator(".seq").count() == 3
    assert not page.js_errors
    assert console_errors == []  # e.g. nothing the page's CSP (same as TensorBoard's) refused


def test_click_shows_top_k_with_target_in_green(page, server):
    open_dashboard(page, server.url)
    page.locator(".seq").first.locator(".tok").nth(4).click()
    detail = page.locator(".detail")
    assert detail.locator(".sel-head .chip").inner_text() != ""
    expect(detail.locator(".bar-row")).to_have_count(5, timeout=15000)  # candidates are fetched on click
    expect(detail.locator(".mini-col")).to_have_count(20)
    assert detail.locator(".stat-l").all_inner_texts() == ["p(target)", "rank", "entropy", "loss", "top-1"]
    # the target is highlighted when it is among the candidates
    entry = json.loads(server.path.read_text().splitlines()[-1])
    pred = entry["sequences"][0]["predictions"][3]
    ids = [c[0] for c in pred["top_k"]]
    in_top = ids.index(pred["target_token_id"]) if pred["target_token_id"] in ids else None
    if in_top is not None:
        assert detail.locator(".mini-col").nth(in_top).get_attribute("class") == "mini-col hit"
    else:
        assert "not in the top" in detail.inner_text()
    assert "rank" in detail.inner_text().lower()
    assert not page.js_errors


def test_slider_buttons_and_arrow_keys_change_step(page, server):
    open_dashboard(page, server.url)
    page.locator(".slider").fill("0")
    wait_step(page, 0)
    page.keyboard.press("ArrowRight")
    wait_step(page, 100)
    page.locator("button[aria-label='next step']").click()
    wait_step(page, 200)
    page.keyboard.press("ArrowLeft")
    wait_step(page, 100)
    assert "step=100" in hash_of(page, "step=100")


def test_deep_link_restores_the_view(page, server):
    open_dashboard(page, server.url + "#step=100&seq=2&tok=3&metric=entropy")
    wait_step(page, 100)
    assert page.locator(".metric-select").input_value() == "entropy"
    assert page.locator(".detail").inner_text().count("probe 2 \u00b7 position 3 \u00b7 step 100") == 1
    assert page.locator(".seq").nth(2).locator(".tok.sel").count() == 1


def test_chart_click_jumps_to_step(page, server):
    open_dashboard(page, server.url)
    box = page.locator(".chart-canvas").first.bounding_box()
    page.mouse.click(box["x"] + 50, box["y"] + box["height"] / 2)  # the far left: first step
    wait_step(page, 0)


def test_colour_metric_and_legend(page, server):
    open_dashboard(page, server.url)
    assert "p(target)" in page.locator(".legend-title").text_content()
    before = page.locator(".seq").first.locator(".tok").nth(5).get_attribute("class")
    page.locator(".metric-select").select_option("rank")
    assert "rank" in page.locator(".legend-title").text_content()
    assert page.locator(".swatches .sw").count() == 10
    classes = page.locator(".seq").first.locator(".tok").evaluate_all("els => els.map(e => e.className)")
    assert all(re.search(r"\b(m\d|mna|first)\b", c) for c in classes)
    assert before is not None


def test_compare_one_sequence_at_two_steps(page, server):
    open_dashboard(page, server.url)
    page.locator(".compare-btn, .btn.toggle").click()
    page.wait_for_selector(".cmp-cols .seq .tok")
    names = page.locator(".cmp-cols .seq-name").all_inner_texts()
    assert names == ["step 300", "step 0"]
    page.locator(".cmp-step").select_option("200")
    expect(page.locator(".cmp-cols .seq-name")).to_have_text(["step 300", "step 200"])
    assert "\u0394" in page.locator(".cmp-summary").inner_text()
    assert "cmp=200" in hash_of(page, "cmp=200")


def test_long_tokens_scale_down_within_140px(page, server):
    open_dashboard(page, server.url)
    box = page.locator(".seq").first.locator(".tok").nth(1)  # 22 letters and a newline
    width = box.evaluate("e => e.getBoundingClientRect().width")
    font = box.locator(".tt").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert width <= 140
    assert 13 * 0.6 - 0.01 <= font < 13
    longest = page.locator(".seq").first.locator(".tok").nth(2)  # 34 letters: 60 % and an ellipsis
    assert longest.evaluate("e => e.getBoundingClientRect().width") == 140
    assert longest.locator(".tt").evaluate("e => parseFloat(getComputedStyle(e).fontSize)") == pytest.approx(7.8, abs=0.1)


def test_live_step_appears_and_disconnect_is_shown(page, server):
    open_dashboard(page, server.url)
    expect(page.locator(".status")).to_have_text("Live", timeout=10000)
    with TrainingDataWriter(server.path) as w:
        w.write_step(learning_entry(400, 400))
    wait_step(page, 400)
    assert page.locator(".step-count").inner_text().startswith("5 / 5")
    with open(server.path, "ab") as f:
        f.write(b"{broken\n")
    page.wait_for_selector(".btn.warn:not([hidden])", timeout=10000)
    assert "1 skipped line" in page.locator(".btn.warn").inner_text()
    server.stop()
    expect(page.locator(".status")).to_have_text(re.compile("^Disconnected \u2014 retrying in \\d+ s$"), timeout=10000)


def test_keyboard_token_selection(page, server):
    open_dashboard(page, server.url)
    page.locator(".grid").first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert "position 2" in page.locator(".detail").inner_text()
    assert step_label(page) == "step 300"  # arrows inside a sequence move the token, not the step


def test_hostile_token_is_literal_text(page, tmp_path):
    path = tmp_path / "evil.jsonl"
    entry = make_entry(1)
    entry["sequences"][0]["tokens"][1] = HOSTILE
    entry["sequences"][0]["name"] = HOSTILE
    entry["sequences"][0]["predictions"][0]["top_k"][0][1] = HOSTILE
    path.write_bytes(encode_entry(entry, validate=False))
    h = start_in_thread(file=path, port=0)
    try:
        open_dashboard(page, h.url)
        page.locator(".seq").first.locator(".tok").nth(1).click()
        texts = page.locator(".tok .tt").all_inner_texts()
        assert "</script><img\u00b7src=x\u00b7onerror=alert(1)>" in texts
        assert page.locator(".seq-name").first.inner_text() == HOSTILE
        assert HOSTILE.replace(" ", "\u00b7") in page.locator(".detail").inner_text()
        assert page.locator("img").count() == 0
        page.wait_for_timeout(300)
        assert page.dialogs == [] and not page.js_errors
    finally:
        h.stop()


def test_fetch_mode_as_tensorboard_loads_it(page, server):
    """index.js's render() with no arguments: the fetch adapter on relative URLs."""
    page.goto(server.url + "runs")
    page.evaluate("""async () => {
        document.documentElement.replaceChildren(document.createElement('head'), document.createElement('body'));
        const m = await import('./index.js');
        m.render({ pollMs: 300 });
    }""")
    page.wait_for_selector(".tok", timeout=10000)
    assert step_label(page) == "step 300"
    assert page.locator(".status").inner_text().startswith("Polling")
    expect(page.locator("html")).to_have_css("background-color", "rgb(7, 10, 18)")  # the stylesheet loaded
    with TrainingDataWriter(server.path) as w:
        w.write_step(learning_entry(500, 500))
    wait_step(page, 500)
    assert not page.js_errors


def test_export_opens_from_disk(page, tmp_path):
    entries = [learning_entry(s, 300) for s in (100, 300)]
    entries[1]["sequences"][0]["tokens"][2] = HOSTILE
    history = [{"step": s, "loss": 3 - s / 200, "perplexity": 20 - s / 20} for s in range(0, 301, 20)]
    out = tmp_path / "report.html"
    out.write_text(export_html(entries, steps=history, title="my <run>"))
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=15000)
    assert step_label(page) == "step 300"
    assert page.locator(".status").inner_text() == "Snapshot"
    assert page.locator(".run-title").inner_text() == "my <run>"
    assert "</script><img\u00b7src=x\u00b7onerror=alert(1)>" in page.locator(".tok .tt").all_inner_texts()
    page.keyboard.press("ArrowLeft")
    wait_step(page, 100)
    assert page.locator(".step-count").inner_text().startswith("1 / 2")
    page.locator(".seq").first.locator(".tok").nth(3).click()
    expect(page.locator(".detail .bar-row")).to_have_count(5, timeout=15000)
    assert page.locator("img").count() == 0 and page.dialogs == [] and not page.js_errors


def test_long_sequences_draw_only_what_is_visible_and_scroll(page, tmp_path):
    from web_data import long_entry

    entry = long_entry(7, n_seqs=2, n_tokens=2048, top_k=5)
    out = tmp_path / "long.html"
    out.write_text(export_html([entry]))
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=20000)
    drawn = page.locator(".tok").count()
    assert 0 < drawn < 1500  # of 4,096 tokens
    assert page.locator(".seq-figures").first.inner_text().startswith("2048 tokens")
    # scroll to the end: the last token of the last sequence is drawn, in place
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    last = entry["sequences"][1]["tokens"][-1]
    page.wait_for_function("n => [...document.querySelectorAll('.seq:last-child .tok')].some(e => e._index === n)",
                           arg=2047, timeout=5000)
    cell = page.locator(".seq").last.locator(".tok").last
    assert cell.get_attribute("title").startswith(last)
    box = cell.bounding_box()
    assert 0 <= box["y"] < 900
    # step switch and keyboard navigation still reach far tokens
    page.locator(".grid").last.focus()
    page.keyboard.press("End")
    assert "position 2047" in page.locator(".detail").inner_text()
    assert not page.js_errors


def test_logdir_run_selector_and_a_file_that_appears_later(page, tmp_path):
    h = start_in_thread(logdir=tmp_path, port=0, interval=0.1)
    try:
        page.goto(h.url)
        expect(page.locator(".banner")).to_have_text(re.compile("waiting", re.I), timeout=10000)
        with TrainingDataWriter(tmp_path / "alpha.jsonl") as w:
            w.write_step(learning_entry(10, 100))
        wait_step(page, 10)
        with TrainingDataWriter(tmp_path / "beta" / "run.jsonl") as w:
            w.write_step(learning_entry(70, 100))
        expect(page.locator(".run-select option")).to_have_count(2, timeout=10000)
        page.locator(".run-select").select_option("beta/run")
        wait_step(page, 70)
        assert "run=beta%2Frun" in hash_of(page, "run=beta%2Frun")
        assert not page.js_errors
    finally:
        h.stop()


def test_only_drawn_boxes_are_in_the_page_after_a_shorter_step(page, tmp_path):
    """Boxes not needed any more leave the DOM (one .tok per drawn token)."""
    long = learning_entry(1, 2, texts=["To be, or not to be, that is the question: " * 6])
    short = learning_entry(2, 2, texts=["To be, or not to be"])
    out = tmp_path / "two.html"
    out.write_text(export_html([long, short]))
    page.goto(out.as_uri())
    wait_step(page, 2)
    expect(page.locator(".tok")).to_have_count(len(short["sequences"][0]["tokens"]))
    page.keyboard.press("ArrowLeft")
    wait_step(page, 1)
    expect(page.locator(".tok")).to_have_count(len(long["sequences"][0]["tokens"]))
    page.keyboard.press("ArrowRight")
    wait_step(page, 2)
    expect(page.locator(".tok")).to_have_count(len(short["sequences"][0]["tokens"]))


def test_neighbour_steps_are_prefetched(page, server):
    import time

    open_dashboard(page, server.url + "#step=100")
    wait_step(page, 100)
    end = time.monotonic() + 60
    while time.monotonic() < end and page.evaluate("[0, 200].every((s) => window.seqvizDashboard.cache.has(s))") is False:
        time.sleep(0.05)
    # the shown step and its neighbours (the page asks for its own: the latest is not pushed)
    assert page.evaluate("[...window.seqvizDashboard.cache.keys()].sort((a, b) => a - b)") == [0, 100, 200]


def test_rewritten_file_keeps_the_shown_step_and_its_position(page, server):
    """A replaced file with a step inserted before the shown one: the label and the
    'i / n' counter still name the step whose tokens are on screen."""
    import os

    open_dashboard(page, server.url + "#step=200")
    wait_step(page, 200)
    expect(page.locator(".step-count")).to_have_text("3 / 4")
    replacement = server.path.with_name("replacement.jsonl")
    with TrainingDataWriter(replacement) as w:
        for step in (0, 50, 100, 200, 300):
            w.write_step(learning_entry(step, 300))
    os.replace(replacement, server.path)
    expect(page.locator(".step-count")).to_have_text(re.compile(r"^4 / 5"), timeout=10000)
    wait_step(page, 200)
    assert not page.js_errors
