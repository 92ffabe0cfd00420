"""Files of the original seq-viz tool (see :mod:`seed_files`) in the one dashboard, in
headless Chromium: served by ``seqviz serve``, exported by ``seqviz export``, in the
TensorBoard tab of a real ``tensorboard`` over the TensorBoard mirror of such a run, and
in the W&B HTML panel. Their predictions show as ours do (colours, top-1 guesses, mean
p(target)); a target outside the 20 logged candidates shows "rank > 20", the
below-top-20 shade, and its sparkline draws that bound, labelled."""

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


def check_predictions_shown(page, entry, errors=None):
    """What ``page`` (a page, or the frame of the TensorBoard tab) shows of ``entry`` (the
    step on screen): a colour per predicted token, the top-1 guess under it, a mean
    p(target), and the below-top-20 token on click. ``errors``: the page's script errors
    (default ``page.js_errors``)."""
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
    expect(detail.locator(".bar-row")).to_have_count(5, timeout=15000)
    expect(detail.locator(".mini-col")).to_have_count(20)
    assert detail.locator(".mini-col.hit").count() == 0
    legend = page.locator(".legend-below")
    expect(legend).to_contain_text("below top-20")
    check_bound_sparkline(page, len(STEPS))
    assert not (page.js_errors if errors is None else errors)


#: CSS pixels of the sparkline's canvas that are drawn on, inside the p(target) band and
#: right of the axis labels (rows 8..52 of its 96, x from 32): empty when nothing is drawn
P_BAND_INK = """c => {
  const g = c.getContext("2d"), sx = c.width / c.clientWidth, sy = c.height / c.clientHeight;
  const x0 = Math.round(32 * sx), y0 = Math.round(8 * sy), w = c.width - x0, h = Math.round(44 * sy);
  const d = g.getImageData(x0, y0, w, h).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


def check_bound_sparkline(page, steps: int):
    """The selected token's target is below the top 20 at every step: its "Over the run"
    sparkline draws the bound (a hatched strip in the p and the rank band, labelled) and
    says it is only a bound."""
    spark = page.locator(".detail .spark")
    expect(spark).to_have_attribute("data-bound", str(steps), timeout=15000)
    expect(spark.locator(".spark-bound")).to_contain_text(
        f"below the top 20 at {steps} of {steps} steps drawn: hatched = only a bound, rank > 20, p < p\u2082\u2080")
    assert "below the top 20" in spark.locator("canvas").get_attribute("aria-label")
    canvas = spark.locator("canvas")
    page.wait_for_function(f"() => ({P_BAND_INK})(document.querySelector('.detail .spark canvas')) > 100", timeout=15000)
    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] - 9, "y": 30})
    expect(spark.locator(".chart-tip")).to_have_text(re.compile(r"step \d+ \u00b7 p < \d.*% \u00b7 rank > 20"))


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


@pytest.mark.slow
def test_tensorboard_tab_shows_a_seed_run(page, seed_file, tmp_path):
    """A seed file logged through the TensorBoard mirror, in the seqviz tab of a real TensorBoard."""
    pytest.importorskip("tensorboard")
    from seqviz_trackers import SeqVizLogger
    from tb_helpers import TensorBoardProcess
    from test_tb_browser import _open_tab

    entries = [json.loads(line) for line in seed_file.read_text("utf-8").splitlines()]
    with SeqVizLogger(tensorboard=tmp_path / "logs" / "seed") as logger:
        for entry in entries:
            logger.log_step(entry)
    proc = TensorBoardProcess(tmp_path / "logs", load_fast=True, log_path=tmp_path / "tb.log")
    try:
        frame = _open_tab(page, proc.url)
        frame.wait_for_selector(".tok", timeout=30_000)
        expect(frame.locator(".step-label")).to_have_text("step 300", timeout=15_000)
        check_predictions_shown(frame, entries[-1], page.js_errors)
    finally:
        proc.stop()


def test_wandb_panel_shows_a_seed_step(page, seed_file, tmp_path, monkeypatch):
    """A seed file logged through the W&B mirror (offline): the last step's HTML panel, opened from disk."""
    pytest.importorskip("wandb")
    from wandb_helpers import html_files, log_steps_offline, offline_env

    offline_env(monkeypatch, tmp_path)
    entries = [json.loads(line) for line in seed_file.read_text("utf-8").splitlines()]
    files = html_files(log_steps_offline(tmp_path, entries))
    assert len(files) == len(entries)
    page.goto(files[-1].resolve().as_uri())
    page.wait_for_selector(".tok", timeout=15000)
    expect(page.locator(".step-label")).to_have_text("step 300")
    check_predictions_shown(page, entries[-1])
