"""The dashboard against hostile addresses and names, in headless Chromium: keys of a
plain object's prototype in the URL hash, a run that does not exist, script-like and
bidi-override text in tokens, sequence names and run names, and a 10,000-character
sequence name. Nothing may throw, run script or widen the page."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from factories import HOSTILE, make_entry
from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.serve.server import start_in_thread

pytestmark = pytest.mark.browser

# sets a flag instead of opening a dialog, so a script that ran is seen even when dialogs are not
FLAG_HTML = "<img src=x onerror=window.__seqvizPwned=1>"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
BIDI_ESCAPED = "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f"
PLAIN_RUN = "0-plain"  # listed first: "0" sorts before "<"
LONG_NAME = "n" * 10_000
RUN_NAME = HOSTILE + FLAG_HTML.replace("/", "") + BIDI  # a run name is a path: no "/" past the first folder


def hostile_entry(step: int) -> dict:
    entry = make_entry(step, ["To be, or not to be, that is the question:", "The slings and arrows", "Or to take arms"],
                       names=["plain", "x", "y"], seed=step)
    seqs = entry["sequences"]
    seqs[0]["tokens"][1] = HOSTILE
    seqs[0]["tokens"][2] = FLAG_HTML + BIDI
    seqs[0]["predictions"][0]["top_k"][0][1] = FLAG_HTML
    seqs[1]["name"] = HOSTILE + FLAG_HTML + "evil\u202etxt.exe"
    seqs[2]["name"] = LONG_NAME
    return entry


@pytest.fixture
def logdir(tmp_path):
    """Two runs: "0-plain" and one named with markup and bidi characters."""
    for name in (PLAIN_RUN, RUN_NAME):
        path = tmp_path / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with TrainingDataWriter(path) as w:
            for step in (10, 20):
                w.write_step(hostile_entry(step))
    h = start_in_thread(logdir=tmp_path, port=0, interval=0.1)
    yield h
    h.stop()


def open_page(page, url):
    page.goto(url)
    page.wait_for_selector(".tok", timeout=15000)


def assert_harmless(page):
    """No uncaught error, no script run by markup, no dialog, no new image, no page wider than its window."""
    page.wait_for_function("() => document.querySelectorAll('.tok').length > 0", timeout=10000)
    assert page.js_errors == []
    assert page.dialogs == []
    assert page.evaluate("window.__seqvizPwned") is None
    assert page.locator("img").count() == 0
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert max(widths[:2]) <= widths[2], widths


@pytest.mark.parametrize("key", ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf"])
def test_prototype_keys_in_the_hash_do_not_blank_the_dashboard(page, logdir, key):
    hostile = f"metric={key}&changes={key}&rc={key}&vs={key}&seq={key}&tok={key}&step={key}&{key}={key}"
    open_page(page, logdir.url + "#run=0-plain&" + hostile)
    assert page.locator(".metric-select").input_value() == "prob"
    assert page.locator(".legend-title").text_content() == "colour: p(target)"
    assert_harmless(page)
    # the same address arriving later (a link followed in the open page)
    page.evaluate("h => { location.hash = h; }", f"#run=0-plain&metric={key}")
    page.evaluate("h => { location.hash = h; }", f"#run=0-plain&metric=entropy&{key}=1")
    expect(page.locator(".metric-select")).to_have_value("entropy", timeout=5000)
    # a value that is no metric counts as none: the default colouring, as for an address without one
    page.evaluate("h => { location.hash = h; }", f"#run=0-plain&metric={key}&tok={key}")
    expect(page.locator(".legend-title")).to_have_text("colour: p(target)", timeout=5000)
    assert_harmless(page)


def test_malformed_escapes_in_the_hash_are_ignored(page, logdir):
    open_page(page, logdir.url + "#run=0-plain&metric=%E0%A4%A&seq=%&tok=%zz")
    assert_harmless(page)


def test_unknown_run_says_so_and_shows_the_first_run(page, logdir):
    open_page(page, logdir.url + "#run=no-such-run&step=10")
    expect(page.locator(".banner")).to_contain_text("no-such-run", timeout=10000)
    expect(page.locator(".banner")).to_contain_text(re.compile("no run", re.I))
    assert page.locator(".run-select").input_value() == PLAIN_RUN
    assert page.locator(".run-select option").all_inner_texts().count("no-such-run") == 0
    assert_harmless(page)
    # and when the open page's hash changes to a run that does not exist
    page.evaluate("() => { location.hash = '#run=gone-too'; }")
    expect(page.locator(".banner")).to_contain_text("gone-too", timeout=10000)
    assert page.locator(".run-select").input_value() == PLAIN_RUN
    assert page.locator(".tok").count() > 0
    assert_harmless(page)


def test_hostile_tokens_and_names_run_no_script_and_are_escaped(page, logdir):
    open_page(page, logdir.url + "#run=0-plain")
    # tokens: literal, bidi characters as escapes
    texts = page.locator(".seq").first.locator(".tok .tt").all_inner_texts()
    assert "</script><img\u00b7src=x\u00b7onerror=alert(1)>" in texts
    assert "<img\u00b7src=x\u00b7onerror=window.__seqvizPwned=1>" + BIDI_ESCAPED in texts
    # sequence names: the same escapes (spaces stay spaces), the raw name in the tooltip
    name = page.locator(".seq").nth(1).locator(".seq-name")
    assert name.inner_text() == HOSTILE + FLAG_HTML + "evil\\u202etxt.exe"
    assert name.get_attribute("title") == HOSTILE + FLAG_HTML + "evil\u202etxt.exe"
    # a 10,000-character name is cut with an ellipsis inside the page's width
    long_name = page.locator(".seq").nth(2).locator(".seq-name")
    assert long_name.get_attribute("title") == LONG_NAME
    box = long_name.bounding_box()
    assert box["x"] + box["width"] <= page.viewport_size["width"]
    assert page.evaluate("e => e.scrollWidth > e.clientWidth", long_name.element_handle())  # it is cut, not wrapped
    page.locator(".seq").nth(1).locator(".tok").nth(2).click()
    assert "\\u202e" in page.locator(".detail").inner_text()
    assert "\u202e" not in page.locator(".detail").inner_text()
    # run names: the selector shows escapes, its value stays the run's name
    options = page.locator(".run-select option")
    assert options.all_inner_texts() == [PLAIN_RUN, HOSTILE + FLAG_HTML.replace("/", "") + BIDI_ESCAPED]
    page.locator(".run-select").select_option(RUN_NAME)
    expect(page.locator(".step-label")).to_have_text("step 20", timeout=10000)
    assert "\u202e" not in page.locator("body").inner_text()
    assert "\u2066" not in page.locator("body").inner_text()
    page.wait_for_timeout(300)  # an image's error handler would run by now
    assert_harmless(page)


def test_exported_page_with_hostile_names(page, tmp_path):
    path = tmp_path / "run.jsonl"
    with TrainingDataWriter(path) as w:
        for step in (10, 20):
            w.write_step(hostile_entry(step))
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "export", str(path), "--all", "-o", str(out),
                    "--title", RUN_NAME], check=True, capture_output=True, timeout=120)
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=15000)
    assert page.locator(".run-title").inner_text() == HOSTILE + FLAG_HTML.replace("/", "") + BIDI_ESCAPED
    assert page.locator(".seq").nth(1).locator(".seq-name").inner_text() == HOSTILE + FLAG_HTML + "evil\\u202etxt.exe"
    assert "</script><img\u00b7src=x\u00b7onerror=alert(1)>" in page.locator(".tok .tt").all_inner_texts()
    assert "\u202e" not in page.locator("body").inner_text()
    page.keyboard.press("ArrowLeft")
    expect(page.locator(".step-label")).to_have_text("step 10", timeout=10000)
    page.evaluate("() => { location.hash = '#metric=__proto__&run=nope&seq=constructor'; }")
    page.wait_for_timeout(300)
    assert_harmless(page)
