"""A run that cannot be read (a symlink loop where its file was) beside a good one, in
headless Chromium: the served page (``seqviz serve --logdir``) and the TensorBoard tab list
it in the run selector as unavailable (a disabled option, the reason as its title), and
keep showing the good run; a link naming it says why it is not shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from seqviz_trackers.serve.server import start_in_thread
from test_server import write

pytestmark = pytest.mark.browser


def make_symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # stat/open: "Too many levels of symbolic links", even as root


def check_selector(view, good: str, bad: str, errors) -> None:
    """``view`` (a page or the TensorBoard tab's frame) shows run ``good`` and lists ``bad`` as unavailable."""
    view.wait_for_selector(".tok", timeout=30_000)
    select = view.locator(".run-select")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_count(2, timeout=15_000)
    assert select.input_value() == good
    option = select.locator("option.run-unavailable")
    expect(option).to_have_text(f"{bad} (cannot be read)")
    assert option.get_attribute("value") == bad and option.is_disabled()
    title = option.get_attribute("title")
    assert title.startswith("cannot be read (") and "symbolic links" in title, title
    assert not select.locator(f"option[value={good}]").is_disabled()
    assert errors == [], errors


def test_served_page_lists_an_unreadable_run_as_unavailable(page, tmp_path):
    write(tmp_path / "good.jsonl", 1, 2)
    write(tmp_path / "bad.jsonl", 5)
    make_symlink_loop(tmp_path / "bad.jsonl")
    with start_in_thread(logdir=tmp_path, port=0, interval=0.1) as h:
        page.goto(h.url)
        check_selector(page, "good", "bad", page.js_errors)
        expect(page.locator(".step-label")).to_have_text("step 2")

        # a link naming it, opened anew (going to the same page with another hash would only
        # change the hash, which the page may rewrite before a reload): the good run is shown, and why
        page.goto("about:blank")
        page.goto(h.url + "#run=bad")
        # the banner says so as soon as the runs are listed, and goes after 10 s: read it first
        banner = page.locator(".banner")
        expect(banner).to_contain_text("Run \u201cbad\u201d cannot be read (", timeout=30_000)
        expect(banner).to_contain_text("symbolic links")
        expect(banner).to_contain_text("showing \u201cgood\u201d instead")
        page.wait_for_selector(".tok", timeout=30_000)
        assert page.locator(".run-select").input_value() == "good"


def test_an_unreadable_run_becomes_unavailable_while_the_page_is_open(page, tmp_path):
    write(tmp_path / "good.jsonl", 1, 2)
    write(tmp_path / "bad.jsonl", 5)
    with start_in_thread(logdir=tmp_path, port=0, interval=0.1) as h:
        page.goto(h.url + "#run=good")
        page.wait_for_selector(".tok", timeout=15_000)
        select = page.locator(".run-select")
        expect(select.locator("option")).to_have_count(2, timeout=15_000)
        assert select.locator("option.run-unavailable").count() == 0
        make_symlink_loop(tmp_path / "bad.jsonl")  # the live runs message says so
        check_selector(page, "good", "bad", page.js_errors)


@pytest.mark.slow
def test_tensorboard_tab_lists_an_unreadable_run_as_unavailable(page, tmp_path):
    pytest.importorskip("tensorboard")
    from tb_helpers import TensorBoardProcess, mirror_run
    from test_tb_browser import _open_tab

    mirror_run(tmp_path / "logs" / "good", [0, 1])
    mirror_run(tmp_path / "logs" / "bad", [0, 1, 2])
    make_symlink_loop(tmp_path / "logs" / "bad" / "plugins" / "seqviz" / "steps.jsonl")
    proc = TensorBoardProcess(tmp_path / "logs", load_fast=True, log_path=tmp_path / "tb.log")
    try:
        frame = _open_tab(page, proc.url)
        check_selector(frame, "good", "bad", page.js_errors)
    finally:
        proc.stop()
