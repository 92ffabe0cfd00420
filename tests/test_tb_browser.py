"""End to end: a real TensorBoard in headless Chromium, the seqviz tab, the latest step's
tokens, a click on a token, its predictions."""

from __future__ import annotations

import re

import pytest

from tb_helpers import TensorBoardProcess, entry, mirror_run

from conftest import ARTIFACTS
from factories import HOSTILE
from tb_plugin.plugin import WEB_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


def _plugin_frame(page):
    for frame in page.frames:
        if "plugin_entry.html" in frame.url and "name=seqviz" in frame.url:
            return frame
    return None


def test_seqviz_tab_shows_latest_step_and_token_predictions(tensorboard, page):
    latest = entry(150, LATEST)
    tokens = latest["sequences"][0]["tokens"]
    page.goto(tensorboard.url + "/#seqviz")
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => f.src.includes('seqviz'))",
                           timeout=30_000)
    page.wait_for_timeout(200)
    frame = _plugin_frame(page)
    assert frame is not None, [f.url for f in page.frames]

    # the latest step's tokens, rendered as text (the hostile one included, literally)
    frame.wait_for_function(f"() => document.querySelectorAll('.tok').length === {len(tokens)}", timeout=30_000)
    body = frame.locator("body").inner_text()
    assert re.search(r"\b150\b", body), "the latest step number is shown"
    shown = frame.locator(".tok .tt").all_inner_texts()
    assert len(shown) == len(tokens)
    assert "<img" in "".join(shown) or "img" in "".join(shown)
    assert frame.locator("img[src=x]").count() == 0
    assert page.dialogs == []

    # click a token: its predictions appear in the detail panel
    cell = frame.locator(".tok").nth(3)
    cell.click()
    frame.wait_for_selector(".detail .bar-row", timeout=10_000)
    detail = frame.locator(".detail").inner_text()
    pred = latest["sequences"][0]["predictions"][2]  # token 3 is predicted at position 2
    assert "step 150" in detail and "position 3" in detail
    assert frame.locator(".detail .bar-row").count() == min(5, len(pred["top_k"]))

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tb_seqviz_tab.png"))
    assert page.js_errors == [], page.js_errors


def test_step_logged_while_open_appears(tensorboard, page):
    page.goto(tensorboard.url + "/#seqviz")
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => f.src.includes('seqviz'))",
                           timeout=30_000)
    page.wait_for_timeout(200)
    frame = _plugin_frame(page)
    frame.wait_for_selector(".tok", timeout=30_000)
    mirror_run(tensorboard.root / "demo", [151], texts=EARLY)  # training goes on
    frame.wait_for_function("() => /\\b151\\b/.test(document.body.innerText)", timeout=20_000)
    assert page.js_errors == [], page.js_errors
