"""The ``seqviz/dashboard`` HTML panel as wandb writes it: self-contained, and in headless
Chromium, opened from disk, it shows the step's tokens with untrusted text kept literal."""

from __future__ import annotations

import copy
import re

import pytest

wandb = pytest.importorskip("wandb")
pytest.importorskip("seqviz_trackers.serve.export")

from factories import HOSTILE, make_entry  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402
from wandb_helpers import html_files, init_run, log_steps_offline, offline_env, run_folder  # noqa: E402
from wandb_panel import WandbMirror  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.usefixtures("stop_wandb_service")

TEXTS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
#: Markup and CSS that make a browser load something (what the code loads is checked in Chromium).
RESOURCE = re.compile(r"""(?:src|href|action|poster|srcset|xlink:href)\s*=\s*["']?\s*(?:[a-z]+:|//)"""
                      r"""|url\(\s*["']?\s*(?:[a-z]+:|//)|@import""", re.I)


def hostile_entry(step: int) -> dict:
    """A real entry whose second token (and the target predicted from the first) is an HTML attack."""
    entry = copy.deepcopy(make_entry(step, TEXTS))
    seq = entry["sequences"][0]
    seq["tokens"][1] = HOSTILE
    seq["predictions"][0]["target_token_str"] = HOSTILE
    seq["name"] = HOSTILE
    return entry


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """An offline run with two logged steps; returns (entries, the HTML files wandb wrote)."""
    tmp = tmp_path_factory.mktemp("wandb-html")
    mp = pytest.MonkeyPatch()
    offline_env(mp, tmp)
    entries = [make_entry(100, TEXTS), hostile_entry(200)]
    try:
        files = html_files(log_steps_offline(tmp, entries))
    finally:
        mp.undo()
    assert len(files) == 2
    return entries, files


def inlined_data(path) -> dict:
    from seqviz_trackers.serve.export import page_data

    return page_data(path.read_text("utf-8"))


def test_panel_holds_its_step_and_the_loss_history(logged):
    entries, files = logged
    for n, (entry, path) in enumerate(zip(entries, files), 1):
        data = inlined_data(path)
        assert [e["step"] for e in data["entries"]] == [entry["step"]]  # this step only
        assert [s["step"] for s in data["steps"]] == [e["step"] for e in entries[:n]]  # history so far
        assert data["steps"][-1]["loss"] == pytest.approx(entry["loss"])


def test_panel_is_self_contained(logged):
    _, files = logged
    assert RESOURCE.search('<img src="https://example.com/x.png">') and RESOURCE.search("a{background:url(//x/y)}")
    for path in files:
        text = path.read_text("utf-8")
        assert "http://" not in text and "https://" not in text
        assert RESOURCE.findall(text) == []
        assert "<script src" not in text and "<link" not in text  # inject=False: no W&B stylesheet


@pytest.mark.browser
def test_panel_from_disk_shows_the_tokens_and_keeps_hostile_text_literal(logged, page):
    entries, files = logged
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    url = files[1].resolve().as_uri()
    page.goto(url)
    page.wait_for_selector(".tok", state="attached", timeout=15000)
    page.wait_for_timeout(300)
    assert requests == [url], "the panel must load nothing but itself"
    titles = page.eval_on_selector_all(".tok", "cells => cells.map(c => c.title)")
    for seq in entries[1]["sequences"]:
        for token in seq["tokens"]:
            assert any(t.startswith(token) for t in titles), f"token {token!r} not shown"
    index = next(i for i, t in enumerate(titles) if t.startswith(HOSTILE))
    page.locator(".tok").nth(index).click()  # its detail panel shows the token too
    expect(page.locator(".detail .sel-head")).to_be_visible(timeout=10000)
    assert HOSTILE in page.inner_text("body")
    assert page.eval_on_selector_all("img", "els => els.length") == 0  # the token's <img> was never parsed
    assert page.dialogs == [] and page.js_errors == []
    assert "200" in page.inner_text("body")  # the step it shows


def test_panel_size_follows_the_step_not_the_run_length(tmp_path, monkeypatch):
    offline_env(monkeypatch, tmp_path)
    run = init_run(mode="offline", dir=str(tmp_path))
    try:
        mirror = WandbMirror(run, history_points=5, series_points=5, artifact_on_close=False)
        with SeqVizLogger(tmp_path / "steps.jsonl", mirrors=[mirror]) as logger:
            for step in range(1, 13):
                logger.log_step(make_entry(step, ["To be, or not to be"], seed=0))
    finally:
        run.finish()
    files = html_files(run_folder(run))
    assert len(files) == 12
    last = inlined_data(files[-1])["steps"]
    assert len(last) == 5 and last[0]["step"] == 1 and last[-1]["step"] == 12
    sizes = [p.stat().st_size for p in files]
    assert max(sizes[5:]) - min(sizes[5:]) < 64  # same entry size: same page size, whatever the step count


def test_a_failing_panel_leaves_the_table_and_scalars(tmp_path, monkeypatch, caplog):
    import seqviz_trackers.serve.export

    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    offline_env(monkeypatch, tmp_path)
    monkeypatch.setattr(seqviz_trackers.serve.export, "export_html", broken)
    run = init_run(mode="offline", dir=str(tmp_path))
    try:
        with caplog.at_level("WARNING", logger="seqviz_trackers.wandb"):
            with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
                logger.log_step(make_entry(1, TEXTS))
                logger.log_step(make_entry(2, TEXTS))
    finally:
        run.finish()
    (message,) = [m for m in caplog.messages if "seqviz/dashboard" in m]
    assert "cannot draw" in message
    assert html_files(run_folder(run)) == []
    tables = list((run_folder(run) / "files" / "media" / "table" / "seqviz").glob("tokens_*.table.json"))
    assert len(tables) == 2
