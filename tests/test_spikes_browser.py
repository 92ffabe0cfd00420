"""Loss spikes in the dashboard, in headless Chromium, on a real run with corrupted rows
injected at known steps (tests/spike_run.py): the loss chart marks every injected step,
a click on a mark opens that step's training batch with the corrupted rows on top, and a
click on one of their tokens shows its top-k. The same in the served dashboard, in the
TensorBoard tab (a real tensorboard process) and in an exported page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytest.importorskip("transformers")

from spike_run import CORRUPT_ROWS, INJECTED_STEPS, write_spike_run  # noqa: E402
from seqviz_trackers.cli.main import main  # noqa: E402
from seqviz_trackers.serve.server import start_in_thread  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory, one_torch_thread):
    """One training run: its JSONL (and batches file) beside its TensorBoard log directory ``tb/``."""
    root = tmp_path_factory.mktemp("spikes_browser")
    return write_spike_run(root, tensorboard=root / "tb" / "run")


@pytest.fixture(scope="module")
def served(spike_run):
    h = start_in_thread(file=spike_run, port=0, interval=0.1)
    yield h
    h.stop()


def check_spikes_and_batch(frame, page):
    """On a loaded dashboard (page or frame): marks at the injected steps; a click on the
    first opens its batch with the corrupted rows first; a token click shows its top-k."""
    marks = frame.locator(".chart-mark")
    expect(marks.first).to_be_visible(timeout=30_000)
    steps = sorted(int(s) for s in marks.evaluate_all("els => els.map(e => e.dataset.step)"))
    assert set(INJECTED_STEPS) <= set(steps)
    assert len(set(steps) - set(INJECTED_STEPS)) <= 1  # at most one false spike in 1,200 steps
    assert frame.locator(".batchview").is_hidden()

    step = INJECTED_STEPS[1]
    frame.locator(f".chart-mark[data-step='{step}']").click()
    view = frame.locator(".batchview")
    expect(view).to_be_visible(timeout=10_000)
    expect(view.locator(".changes-title")).to_have_text(f"Training batch \u00b7 step {step}", timeout=10_000)
    expect(view.locator(".batch-badge.spike")).to_be_visible()
    assert frame.locator(".probe").is_hidden()
    rows = view.locator(".batch-row")
    expect(rows.first).to_be_visible()
    top = [int(r) for r in rows.evaluate_all("els => els.map(e => e.dataset.row)")][:len(CORRUPT_ROWS)]
    assert sorted(top) == sorted(CORRUPT_ROWS)
    losses = [float(re.search(r"loss ([\d.]+)", t)[1]) for t in view.locator(".batch-row-loss").all_inner_texts()]
    assert losses == sorted(losses, reverse=True)
    assert view.locator(".batch-hist-canvas").count() == 1

    first = rows.first
    assert first.locator(".tok").count() > 0  # the captured row's tokens, coloured by loss
    assert first.locator(".tok.m0, .tok.m1, .tok.m2, .tok.m3, .tok.m4").count() > 0  # random tokens: high loss
    first.locator(".tok").nth(3).click()
    detail = frame.locator(".detail")
    expect(detail.locator(".bar-row").first).to_be_visible(timeout=10_000)
    assert f"step {step}" in detail.inner_text() and f"row {top[0]}" in detail.inner_text()
    assert detail.locator(".bar-row").count() == 5

    frame.locator("button[aria-label='close the training batch']").click()
    expect(frame.locator(".probe")).to_be_visible()
    assert view.is_hidden()
    assert page.js_errors == [], page.js_errors


def test_served_dashboard_marks_spikes_and_opens_their_batch(page, served):
    page.goto(served.url)
    page.wait_for_selector(".tok", timeout=15_000)
    check_spikes_and_batch(page, page)
    # a deep link opens the batch; the button toggles the view
    page.goto(served.url + f"#batch={INJECTED_STEPS[0]}")
    page.reload()
    expect(page.locator(".batchview .changes-title")).to_have_text(f"Training batch \u00b7 step {INJECTED_STEPS[0]}", timeout=15_000)
    page.locator(".batches-btn").click()
    expect(page.locator(".probe")).to_be_visible()


def test_tensorboard_tab_marks_spikes_and_opens_their_batch(page, spike_run, tmp_path):
    from tb_helpers import TensorBoardProcess

    from test_tb_browser import _open_tab

    proc = TensorBoardProcess(spike_run.parent / "tb", load_fast=True, log_path=tmp_path / "tb.log")
    try:
        frame = _open_tab(page, proc.url)
        frame.wait_for_selector(".tok", timeout=30_000)
        check_spikes_and_batch(frame, page)
    finally:
        proc.stop()


def test_exported_page_carries_the_batches(page, spike_run, tmp_path):
    out = tmp_path / "spikes.html"
    assert main(["export", str(spike_run), "-o", str(out)]) == 0
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=15_000)
    check_spikes_and_batch(page, page)


def test_a_run_without_batches_shows_no_batch_view(page, tmp_path):
    from web_data import write_learning_run

    path = write_learning_run(tmp_path / "plain.jsonl", [0, 100, 200])
    h = start_in_thread(file=path, port=0, interval=0.1)
    try:
        page.goto(h.url)
        page.wait_for_selector(".tok", timeout=15_000)
        expect(page.locator(".status")).to_have_text("Live", timeout=10_000)
        assert page.locator(".batches-btn").is_hidden()
        assert page.locator(".chart-mark").count() == 0
        assert page.locator(".batchview").is_hidden()
        assert page.js_errors == []
    finally:
        h.stop()
