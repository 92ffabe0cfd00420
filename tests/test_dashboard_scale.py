"""The dashboard at real scale in headless Chromium: 16 sequences x 4,096 tokens scroll with
a bounded number of token boxes in the page, boxes never overlap, and a long sequence can be
collapsed to a window around the selected token."""

from __future__ import annotations

import pytest

from playwright.sync_api import expect

from seqviz_trackers.serve.export import export_html
from web_data import long_entry

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NEXT_FRAME = "() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))"

# every drawn box of every grid: [grid, token index, left, top, width] (px from the grid's corner)
BOXES = """() => [...document.querySelectorAll('.grid')].flatMap((g, k) => {
  const at = g.getBoundingClientRect();
  return [...g.querySelectorAll('.tok')].map((e) => {
    const r = e.getBoundingClientRect();
    return [k, e._index, Math.round(r.left - at.left), Math.round(r.top - at.top), Math.round(r.width)];
  });
})"""


def _open(page, tmp_path, entry, name):
    out = tmp_path / f"{name}.html"
    out.write_text(export_html([entry]))
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=60000)


def _no_overlap(boxes):
    rows = {}
    for grid, index, left, top, width in boxes:
        rows.setdefault((grid, top), []).append((left, width, index))
    for (grid, top), row in rows.items():
        row.sort()
        for (l1, w1, i1), (l2, _, i2) in zip(row, row[1:]):
            assert l1 + w1 <= l2, f"boxes of tokens {i1} and {i2} overlap in grid {grid} at y={top}"
            assert i1 < i2, "boxes are in token order along a row"


def test_16x4096_scroll_keeps_the_dom_bounded_and_boxes_apart(page, tmp_path):
    entry = long_entry(3, n_seqs=16, n_tokens=4096, top_k=5)
    _open(page, tmp_path, entry, "big")
    assert page.locator(".seq").count() == 16
    height = page.evaluate("document.scrollingElement.scrollHeight")
    assert height > 16 * 4096 / 40 * 50  # every token has its place in the page, drawn or not
    most = 0
    for y in range(0, height, max(1, height // 40)):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.evaluate(NEXT_FRAME)
        boxes = page.evaluate(BOXES)
        most = max(most, len(boxes))
        _no_overlap(boxes)
        assert boxes, f"token boxes are drawn at y={y}"
    assert most < 3000, f"{most} token boxes in the page at once, of {16 * 4096}"
    page.evaluate("window.scrollTo(0, document.scrollingElement.scrollHeight)")
    page.wait_for_function("() => [...document.querySelectorAll('.seq:last-child .tok')].some((e) => e._index === 4095)",
                           timeout=10000)
    assert not page.js_errors, page.js_errors


def test_a_long_sequence_collapses_to_a_window_around_the_selected_token(page, tmp_path):
    entry = long_entry(5, n_seqs=2, n_tokens=2048, top_k=5)
    _open(page, tmp_path, entry, "window")
    seq = page.locator(".seq").first
    grid = seq.locator(".grid")
    full = grid.evaluate("g => g.offsetHeight")
    seq.locator(".tok").nth(10).click()
    expect(page.locator(".detail")).to_contain_text("position 10")
    button = seq.locator(".win-btn")
    button.click()
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(seq.locator(".seq-window")).to_contain_text("of 2048")
    small = grid.evaluate("g => g.offsetHeight")
    assert small < full / 3
    shown = grid.evaluate("g => [...g.querySelectorAll('.tok')].map((e) => e._index)")
    assert 10 in shown and max(shown) < 2048 // 2 and min(shown) == 0
    # the other sequence is not collapsed
    assert page.locator(".seq").nth(1).locator(".win-btn").get_attribute("aria-pressed") == "false"
    # End selects the last token: the window follows it
    grid.focus()
    page.keyboard.press("End")
    expect(page.locator(".detail")).to_contain_text("position 2047")
    page.wait_for_function("() => [...document.querySelector('.seq .grid').querySelectorAll('.tok')].some((e) => e._index === 2047)",
                           timeout=10000)
    shown = grid.evaluate("g => [...g.querySelectorAll('.tok')].map((e) => e._index)")
    assert min(shown) > 2048 // 2
    expect(seq.locator(".seq-window")).to_contain_text("2048 of 2048")
    # a step change keeps the window; expanding gives back every token's place
    button.click()
    expect(button).to_have_attribute("aria-pressed", "false")
    expect(seq.locator(".seq-window")).to_have_text("")
    assert grid.evaluate("g => g.offsetHeight") == full
    assert not page.js_errors, page.js_errors
