"""Two runs compared token by token in the dashboard, in headless Chromium: ``seqviz serve
--logdir`` (the control, the colours, the lists, a row selecting its token, the sparkline of
both runs, deep links, a step of run B logged while the page is open), the TensorBoard tab
of a real ``tensorboard`` process, and a page made by ``seqviz export --vs``. The runs are
those of runs_compare_helpers.py, whose learned-at steps are known."""

from __future__ import annotations

import re

import pytest

from playwright.sync_api import expect

from runs_compare_helpers import PROBE_IDS, _seq, run_entry, write_pair
from seqviz_trackers import SeqVizLogger, TrainingDataWriter
from seqviz_trackers.serve.server import start_in_thread

pytestmark = pytest.mark.browser

LEGEND = "colour: \u0394 log p(target), run B \u2212 run A"
# the colour of each token of "probe" at A's step 50 / B's step 45 (token t is predicted at
# position t - 1): Δ log p > +2 (B better) is d8, < -2 (A better) d0, about 0 d4
COLOURS_AT_50 = {1: "d4", 2: "d4", 3: "d8", 4: "d0", 5: "d4", 6: "d4"}


@pytest.fixture
def served(tmp_path):
    write_pair(tmp_path)
    h = start_in_thread(logdir=tmp_path, port=0, interval=0.1)
    h.folder = tmp_path
    yield h
    h.stop()


def learned_everything_in_b(step):
    """A step of run B where every position of the probe is top-1."""
    entry = run_entry(step, "b")
    entry["sequences"][0] = _seq(PROBE_IDS, [True] * (len(PROBE_IDS) - 1), "probe", step)
    return entry


def probe_tokens(scope):
    """The token boxes of the sequence named "probe"."""
    return scope.locator(".seq").filter(has=scope.locator(".seq-name", has_text="probe")).first.locator(".tok")


def expect_colours(scope, colours):
    toks = probe_tokens(scope)
    expect(toks).to_have_count(len(PROBE_IDS))
    for t, cls in colours.items():
        expect(toks.nth(t)).to_have_class(f"tok {cls}", timeout=10_000)


def row_tokens(scope):
    """The token numbers (``#N``, N = position + 1) of the rows of the list shown, all of "probe"."""
    cells = scope.locator(".runcmp .change-row td.c-where").all_inner_texts()
    assert all(c.startswith("probe #") for c in cells), cells
    return [int(re.match(r"probe #(\d+)", c).group(1)) for c in cells]


def check_lists(scope):
    """The tab of each list holds the expected tokens of "probe"."""
    runcmp = scope.locator(".runcmp")
    expect(runcmp.locator(".runcmp-probe.matched")).to_contain_text(
        "B ahead on 2 tokens, A on 2, 1 learned at the same step, 1 learned by neither", timeout=10_000)
    expect(runcmp.locator(".runcmp-probe.different_text")).to_contain_text("not compared: different token ids")
    expected = {"earlier_in_a": [1], "earlier_in_b": [2], "only_in_a": [4], "only_in_b": [3]}  # token = position + 1
    for tab, tokens in expected.items():
        runcmp.locator(f".btn.tab[data-tab='{tab}']").click()
        expect(runcmp.locator(".change-row")).to_have_count(len(tokens))
        assert row_tokens(scope) == tokens, tab
    runcmp.locator(".btn.tab[data-tab='biggest_gap']").click()
    expect(runcmp.locator(".btn.tab.on")).to_have_attribute("data-tab", "biggest_gap")
    assert set(row_tokens(scope)[:2]) == {3, 4}  # |Δ log p| > 3; the others about 0


def pick_row_and_check_sparkline(scope, tab, learned_a, learned_b, token):
    """Click the only row of ``tab``: token ``token`` of "probe" is selected and its sparkline
    names both runs' learned-at steps."""
    runcmp = scope.locator(".runcmp")
    runcmp.locator(f".btn.tab[data-tab='{tab}']").click()
    runcmp.locator(".change-row").first.click()
    sel = scope.locator(".seq").first.locator(".tok.sel")  # "probe" is the first sequence
    expect(sel).to_have_count(1)
    assert sel.evaluate("e => e._index") == token
    spark = scope.locator(".detail .spark")
    expect(spark.locator(".spark-learned")).to_have_text(f"A: {learned_a}", timeout=10_000)
    expect(spark.locator(".spark-learned-b")).to_have_text(f"B: {learned_b}")


def test_served_logdir_compare_with_run(page, served):
    page.goto(served.url + "#run=a")
    page.wait_for_selector(".tok", timeout=15_000)
    expect(page.locator(".step-label")).to_have_text("step 50")
    control = page.locator(".vs-control")
    expect(control).to_be_visible()
    assert control.locator("option").all_inner_texts() == ["\u2013 none \u2013", "b"]
    control.locator("select").select_option("b")

    legend = page.locator(".legend")
    expect(legend.locator(".legend-title")).to_have_text(LEGEND)
    assert legend.locator(".swatches .sw").count() == 9
    expect(legend.locator(".legend-note")).to_contain_text(
        "A = a at step 50 \u00b7 B = b at step 45 (its nearest logged step at or before)")
    assert page.locator(".metric-select").input_value() == "vs"
    expect_colours(page, COLOURS_AT_50)
    check_lists(page)
    pick_row_and_check_sparkline(page, "earlier_in_a", "learned at step 10 \u00b7 top-1 from then on",
                                 "learned at step 30", 1)
    pick_row_and_check_sparkline(page, "only_in_a", "learned at step 0 \u00b7 top-1 from then on", "not learned", 4)
    page.wait_for_function("() => location.hash.includes('vs=b') && location.hash.includes('run=a')")
    assert not page.js_errors


def test_deep_link_restores_the_comparison_on_reload(page, served):
    page.goto(served.url + "#run=a&vs=b&step=20&rc=only_in_b")
    page.wait_for_selector(".tok", timeout=15_000)
    page.reload()
    page.wait_for_selector(".tok", timeout=15_000)
    expect(page.locator(".step-label")).to_have_text("step 20")
    assert page.locator(".vs-select").input_value() == "b"
    expect(page.locator(".legend-note")).to_contain_text(
        "A = a at step 20 \u00b7 B = b at step 15 (its nearest logged step at or before)")
    runcmp = page.locator(".runcmp")
    expect(runcmp.locator(".btn.tab.on")).to_have_attribute("data-tab", "only_in_b")
    # as of step 20 / 15: B learned positions 1 and 2 (at 15), A positions 3 and 0
    expect(runcmp.locator(".change-row")).to_have_count(2)
    assert row_tokens(page) == [2, 3]
    runcmp.locator(".btn.tab[data-tab='only_in_a']").click()
    expect(runcmp.locator(".change-row")).to_have_count(2)
    expect_colours(page, {2: "d8", 1: "d0", 6: "d4"})
    assert not page.js_errors


def test_the_comparison_follows_a_step_of_run_b_logged_while_open(page, served):
    page.goto(served.url + "#run=a&vs=b")
    page.wait_for_selector(".tok", timeout=15_000)
    expect(page.locator(".legend-note")).to_contain_text("B = b at step 45 (its nearest logged step at or before)",
                                                         timeout=10_000)
    runcmp = page.locator(".runcmp")
    runcmp.locator(".btn.tab[data-tab='only_in_a']").click()
    expect(runcmp.locator(".change-row")).to_have_count(1)  # position 3
    with TrainingDataWriter(served.folder / "b.jsonl") as w:
        w.write_step(learned_everything_in_b(50))
    expect(page.locator(".legend-note")).to_contain_text("A = a at step 50 \u00b7 B = b at step 50 \u00b7", timeout=20_000)
    expect(runcmp.locator(".change-row")).to_have_count(0)  # B learned position 3 at 50
    runcmp.locator(".btn.tab[data-tab='earlier_in_a']").click()
    expect(runcmp.locator(".change-row")).to_have_count(2)  # positions 0 (10 vs 30) and 3 (0 vs 50)
    runcmp.locator(".btn.tab[data-tab='only_in_b']").click()
    expect(runcmp.locator(".change-row")).to_have_count(2)  # positions 2 and 4 (A forgot it after step 10)
    assert page.locator(".vs-select").input_value() == "b" and page.locator(".step-label").inner_text() == "step 50"
    expect_colours(page, {4: "d4", 5: "d8"})
    assert not page.js_errors


def check_core(scope, vs):
    """Choose run ``vs`` under "compare with run": the colours, the lists, a row selecting its
    token and the sparkline of both runs, at A's step 50 (B at 45)."""
    scope.locator(".vs-select").select_option(vs)
    expect(scope.locator(".legend .legend-title")).to_have_text(LEGEND, timeout=10_000)
    expect(scope.locator(".legend-note")).to_contain_text("at step 50 \u00b7 B = ", timeout=10_000)
    expect(scope.locator(".legend-note")).to_contain_text(" at step 45 (its nearest logged step at or before)")
    expect_colours(scope, COLOURS_AT_50)
    check_lists(scope)
    pick_row_and_check_sparkline(scope, "earlier_in_b", "learned at step 30 \u00b7 top-1 from then on",
                                 "learned at step 15", 2)


@pytest.mark.slow
def test_tensorboard_tab_with_two_runs(page, tmp_path):
    pytest.importorskip("tensorboard")
    from runs_compare_helpers import mirror_pair
    from tb_helpers import TensorBoardProcess
    from test_tb_browser import _open_tab

    mirror_pair(tmp_path / "logs")
    tb = TensorBoardProcess(tmp_path / "logs", load_fast=True, log_path=tmp_path / "tb.log")
    try:
        frame = _open_tab(page, tb.url)
        frame.wait_for_selector(".tok", timeout=30_000)
        frame.locator(".run-select").select_option("a")
        expect(frame.locator(".step-label")).to_have_text("step 50", timeout=10_000)
        check_core(frame, "b")
        # run B logs step 50 while the tab is open: the polled tab compares with it
        with SeqVizLogger(tensorboard=tmp_path / "logs" / "b") as logger:
            logger.log_step(learned_everything_in_b(50))
        expect(frame.locator(".legend-note")).to_contain_text("B = b at step 50 \u00b7", timeout=30_000)
        frame.locator(".runcmp .btn.tab[data-tab='only_in_a']").click()
        expect(frame.locator(".runcmp .change-row")).to_have_count(0)
        assert frame.locator(".vs-select").input_value() == "b"
        assert page.js_errors == [], page.js_errors
    finally:
        tb.stop()


def test_export_made_with_vs(page, tmp_path):
    from seqviz_trackers.cli import main as cli_main

    a, b = write_pair(tmp_path)
    out = tmp_path / "a.html"
    assert cli_main(["export", str(a), "--vs", str(b), "-o", str(out)]) == 0
    page.goto(out.as_uri())
    page.wait_for_selector(".tok", timeout=15_000)
    assert page.locator(".vs-control option").all_inner_texts() == ["\u2013 none \u2013", "b.jsonl"]
    check_core(page, "b.jsonl")
    assert not page.js_errors
