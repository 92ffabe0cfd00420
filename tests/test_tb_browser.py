"""End to end: a real TensorBoard in headless Chromium, the seqviz tab, the latest step's
tokens, a click on a token, its predictions."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tb_helpers import TensorBoardProcess, entry, mirror_run

from factories import HOSTILE
from tb_plugin.plugin import WEB_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EARLY = ["To be, or not to be, that is the question:"]
LATEST = ["Whether tis nobler in the mind to suffer " + HOSTILE]


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    if not (WEB_DIR / "index.js").exists():
        pytest.skip(f"the dashboard is not built yet ({WEB_DIR / 'index.js'} is missing)")
    root = tmp_path_factory.mktemp("browserlogs")
    mirror_run(root / "demo", range(0, 150), texts=EARLY)
    mirror_run(root / "demo", [150], texts=LATEST)
    proc = TensorBoardProcess(root, load_fast=True, log_path=root / "tb.log")
    proc.root = root
    yield proc
    proc.stop()


def _open_tab(page, url):
    """Open TensorBoard on the seqviz tab; the plugin's iframe (a Playwright Frame)."""
    page.goto(url + "/#seqviz")
    for _ in range(150):
        for frame in page.frames:
            if "plugin_entry.html" in frame.url and "name=seqviz" in frame.url:
                return frame
        page.wait_for_timeout(200)
    raise AssertionError(f"no seqviz iframe; frames: {[f.url for f in page.frames]}")


def test_seqviz_tab_shows_latest_step_and_token_predictions(tensorboard, page):
    latest = entry(150, LATEST)
    tokens = latest["sequences"][0]["tokens"]
    assert len(tokens) != len(entry(0, EARLY)["sequences"][0]["tokens"])
    frame = _open_tab(page, tensorboard.url)

    # the latest step's tokens, rendered as text (the hostile one included, literally)
    frame.wait_for_function(f"() => document.querySelectorAll('.tok').length === {len(tokens)}", timeout=30_000)
    body = frame.locator("body").inner_text()
    assert re.search(r"\b150\b", body), "the latest step number is shown"
    shown = frame.locator(".tok .tt").all_inner_texts()
    assert len(shown) == len(tokens)
    assert "<img" in "".join(shown)
    assert frame.locator("img[src=x]").count() == 0
    assert page.dialogs == []

    # click a token: its predictions appear in the detail panel
    cell = frame.locator(".tok").nth(3)
    cell.click()
    frame.wait_for_selector(".detail .bar-row", timeout=10_000)
    detail = frame.locator(".detail").inner_text()
    pred = latest["sequences"][0]["predictions"][2]  # token 3 is predicted at position 2
    assert "step 150" in detail and "position 3" in detail
    rows = frame.locator(".detail .bar-row")
    assert rows.count() == min(5, len(pred["top_k"]))
    top_id = pred["top_k"][0][0]  # candidates are [id, token, p]
    assert f"(id {top_id})" in rows.first.get_attribute("title")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tb_seqviz_tab.png"))
    assert page.js_errors == [], page.js_errors


def test_token_history_sparkline_in_the_tab(tensorboard, page):
    """The selected token's p(target) and rank over every logged step (the series route)."""
    frame = _open_tab(page, tensorboard.url)
    frame.wait_for_selector(".tok", timeout=30_000)
    frame.locator(".slider").fill("100")  # an early step: its sequence was logged at steps 0..149
    frame.wait_for_function("() => document.querySelector('.step-label').textContent === 'step 100'", timeout=10_000)
    frame.locator(".tok").nth(3).click()
    spark = frame.locator(".detail .spark")
    spark.locator(".spark-learned").wait_for(timeout=15_000)
    assert re.search(r"\b15[01] steps\b", spark.inner_text())  # every logged step, past TensorBoard's sampling
    pred = entry(100, EARLY)["sequences"][0]["predictions"][2]  # token 3 is predicted at position 2
    learned = "learned at step 0" if pred["target_rank"] == 1 else "not learned"
    assert spark.locator(".spark-learned").inner_text().startswith(learned)
    assert frame.locator(".spark-canvas").evaluate("c => c.width > 0 && c.height > 0")
    assert page.js_errors == [], page.js_errors


def _steps_requests(page) -> list[dict[str, list[str]]]:
    """The query of every ``steps`` request the page sends from now on (the list fills as it runs)."""
    seen: list[dict[str, list[str]]] = []

    def record(request):
        url = urlsplit(request.url)
        if url.path.endswith("/data/plugin/seqviz/steps"):
            seen.append(parse_qs(url.query))

    page.on("request", record)
    return seen


def _until(page, fn, timeout_ms: int = 30_000) -> bool:
    """Poll ``fn()`` while Playwright runs (its events are delivered only inside its calls)."""
    for _ in range(timeout_ms // 200):
        if fn():
            return True
        page.wait_for_timeout(200)
    return bool(fn())


def test_step_logged_while_open_appears(tensorboard, page):
    """A step logged while the tab is open appears; the polls ask only for the steps past the
    last one the tab holds (``steps?after=N``), not the whole list each time, until the list
    changed otherwise (a step logged again)."""
    seen = _steps_requests(page)
    frame = _open_tab(page, tensorboard.url)
    frame.wait_for_selector(".tok", timeout=30_000)
    # the polls go on from the last step held: 150 until a later one appears
    assert _until(page, lambda: any(q.get("after") == ["150"] for q in seen)), seen
    mirror_run(tensorboard.root / "demo", [151], texts=EARLY)  # training goes on
    frame.wait_for_function("() => /\\b151\\b/.test(document.body.innerText)", timeout=20_000)
    assert _until(page, lambda: any(q.get("after") == ["151"] for q in seen)), seen
    assert all(q.get("run") == ["demo"] for q in seen), seen
    full = len([q for q in seen if "after" not in q])
    assert full <= 2, f"the whole list was asked for again: {seen}"  # the page's own load, the first poll

    # step 151 logged again (its loss changed): the version changes, and the tab asks for the whole list
    polled = len(seen)
    mirror_run(tensorboard.root / "demo", [151], texts=LATEST)
    assert _until(page, lambda: any("after" not in q for q in seen[polled:])), seen[polled:]
    assert page.js_errors == [], page.js_errors
