"""What the ``make_*_screenshot.py`` scripts share: headless Chromium on a dashboard."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from playwright.sync_api import Browser, Page, sync_playwright

from seqviz_trackers.serve.server import start_in_thread

CHROMIUM = os.environ.get("SEQVIZ_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served(**source: Any) -> Iterator[Callable[..., Page]]:
    """``seqviz serve`` of ``source`` (``file=`` or ``logdir=``) in this process, and Chromium.
    Yields ``open(fragment="", width=1440, height=880)``: a new page of the dashboard, live."""
    handle = start_in_thread(port=0, **source)
    try:
        with chromium() as browser:
            def open_page(fragment: str = "", width: int = 1440, height: int = 880) -> Page:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(handle.url + fragment)
                page.wait_for_selector(".status.live")
                return page

            yield open_page
    finally:
        handle.stop()


def save(page: Page, out: str, *, top: bool = True) -> None:
    """Screenshot ``page`` to ``out`` once the pointer is out of the way and the page has settled."""
    if top:
        page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.wait_for_timeout(400)  # transitions end
    page.screenshot(path=out)
    print(f"wrote {out}")
