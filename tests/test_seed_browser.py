"""Files of the original seq-viz tool (see :mod:`seed_files`) in the one dashboard, in
headless Chromium: served by ``seqviz serve`` and exported by ``seqviz export``. Their
predictions show as ours do (colours, top-1 guesses, mean p(target)); a target outside
the 20 logged candidates shows "rank > 20" and the below-top-20 shade."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from seed_files import HARD_EVERY, in_top20, write_seed_file
from seqviz_trackers.cli.main import main as seqviz
from seqviz_trackers.format.entry import facts
from seqviz_trackers.serve.server import start_in_thread

pytestmark = pytest.mark.browser

STEPS = [0, 100, 200, 300]
ABSENT_POS = HARD_EVERY - 1  # its target is never among the top 20


def pct(p: float) -> str:
    """A probability as the dashboard's fmtPct writes it."""
    if p >= 0.995:
        return "100%"
    if p < 0.001:
        return "0%" if p == 0 else "<0.1%"
    return f"{p * 100:.{1 if p < 0.1 else 0}f}%"


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory):
    return write_seed_file(tmp_path_factory.mktemp("seedweb") / "training_data.jsonl", STEPS)


def check_predictions_shown(page, entry):
    """What the page shows of ``entry`` (the step on screen): a colour per predicted token,
    the top-1 guess under it, a mean p(target), and the below-top-20 token on click."""
    seqs = page.locator(".seq")
    expect(seqs).to_have_count(len(entry["sequences"]))
    for s, seq in enumerate(entry["sequences"]):
        view = seqs.nth(s)
        boxes = view.locator(".tok")
        expect(boxes).to_have_count(len(seq["tokens"]))
        fs = [facts(p) for p in seq["predictions"]]
        low = sum(f.prob or 0 for f in fs) / len(fs)
        high = sum(f.prob if f.prob is not None else f.p_lt for f in fs) / len(fs)
        below = sum(f.prob is None for f in fs)
        mean = pct(low) if pct(low) == pct(high) else f"{pct(low)}\u2013{pct(high)}"
        figures = view.locator(".seq-figures").inner_text()
        assert f"mean p(target) {mean} ({below} below top-20)" in figures, figures
        classes = boxes.evaluate_all("els => els.map(e => e.className)")
        guesses = view.locator(".tok .tp").evaluate_all("els => els.map(e => [e.className, e.textContent])")
        assert classes[0] == "tok first"  # nothing predicts the first token
        for pred in seq["predictions"]:
            j = pred["position"] + 1  # the prediction is drawn under the token it predicts
            f = facts(pred)
            if in_top20(pred):
                assert re.fullmatch(r"tok m\d", classes[j]), (j, classes[j])
                assert classes[j] == f"tok m{min(9, int(f.prob * 10))}"
            else:
                assert classes[j] == "tok mbelow", (j, classes[j])
            cls, text = guesses[j]
            assert text != "" and cls == ("tp ok" if f.correct else "tp no"), (j, cls, text)

    pred = entry["sequences"][0]["predictions"][ABSENT_POS]
    assert not in_top20(pred)
    seqs.first.locator(".tok").nth(ABSENT_POS + 1).click()
    detail = page.locator(".detail")
    expect(detail).to_contain_text("rank > 20")
    assert "rank > 20, p < p\u2082\u2080" in detail.inner_text()
    stats = dict(zip(detail.locator(".stat-l").all_inner_texts(), detail.locator(".stat-v").all_inner_texts()))
    assert stats["rank"] == "> 20" and stats["p(target)"].startswith("< ")
    assert stats["top-1"] == "\u2717 miss"
    assert detail.locator(".bar-row").count() == 5 and detail.locator(".mini-col").count() == 20
    assert detail.locator(".mini-col.hit").count() == 0
    legend = page.locator(".legend-below")
    expect(legend).to_contain_text("below top-20")
    assert not page.js_errors


def test_served_dashboard_shows_a_seed_file(page, seed_file, tmp_path):
    path = tmp_path / "training_data.jsonl"
    path.write_bytes(seed_file.read_bytes())
    with start_in_thread(file=path, port=0, interval=0.1) as h:
        page.goto(h.url)
        page.wait_for_selector(".tok", timeout=15000)
        expect(page.locator(".status")).to_have_text("Live", timeout=10000)
        expect(page.locator(".step-label")).to_have_text("step 300")
        entry = json.loads(path.read_text("utf-8").splitlines()[-1])
        check_predictions_shown(page, entry)


def test_exported_page_shows_a_seed_file(page, seed_file, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert seqviz(["export", str(seed_file), "--all", "-o", str(out)]) == 0
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=15000)
    expect(page.locator(".step-label")).to_have_text("step 300")
    entry = json.loads(seed_file.read_text("utf-8").splitlines()[-1])
    check_predictions_shown(page, entry)
