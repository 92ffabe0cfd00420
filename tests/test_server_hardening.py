"""``seqviz serve`` against what an attacker or a damaged disk can do: unreadable runs,
slow routes, hostile requests and arguments. Real servers in threads, real clients."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from seqviz_trackers.runs import Runs
from seqviz_trackers.serve import api
from seqviz_trackers.serve.server import make_runs, start_in_thread
from seqviz_trackers.storage.jsonl import LocalFiles
from test_server import get, recv, write, ws_url


def wait_for(condition, timeout: float = 10.0, what: str = "the condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def logdir_server(tmp_path):
    handles = []

    def start(**kw):
        h = start_in_thread(logdir=tmp_path, port=0, interval=0.1, **kw)
        handles.append(h)
        return h

    yield tmp_path, start
    for h in handles:
        h.stop()


def make_symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # stat/open: "Too many levels of symbolic links", even as root


# -- item 4: one unreadable run ---------------------------------------------------------

def test_a_symlink_loop_run_is_reported_and_the_other_runs_keep_working(logdir_server):
    root, start = logdir_server
    write(root / "good.jsonl", 1, 2)
    write(root / "bad.jsonl", 5)
    h = start()
    with connect(ws_url(h) + "?run=good") as ws:
        assert recv(ws, "step", run="good")["entry"]["step"] == 2
        assert {r["run"] for r in json.loads(get(h, "/runs")[1])["runs"]} == {"good", "bad"}
        make_symlink_loop(root / "bad.jsonl")

        status, body = get(h, "/runs")
        assert status == 200
        listing = json.loads(body)
        assert listing["runs"] == [{"run": "good", "num_steps": 2, "last_step": 2}]
        [problem] = listing["problems"]
        assert problem["run"] == "bad" and "symbolic links" in problem["message"]

        status, body = get(h, "/steps?run=good")
        assert status == 200 and [s["step"] for s in json.loads(body)["steps"]] == [1, 2]
        status, body = get(h, "/steps?run=bad")
        assert status == 500 and "cannot be read" in json.loads(body)["error"]

        runs = recv(ws, "runs", timeout=10)  # the live loop says so too, and goes on
        assert [r["run"] for r in runs["runs"]] == ["good"] and runs["problems"][0]["run"] == "bad"
        write(root / "good.jsonl", 3)
        assert recv(ws, "step", run="good")["entry"]["step"] == 3


def test_a_fifo_where_a_run_was_never_blocks_the_server(logdir_server):
    root, start = logdir_server
    write(root / "good.jsonl", 1)
    write(root / "bad.jsonl", 5)
    h = start()
    assert get(h, "/runs")[0] == 200
    (root / "bad.jsonl").unlink()
    os.mkfifo(root / "bad.jsonl")  # opening it for reading would wait for a writer forever
    status, body = get(h, "/runs")
    listing = json.loads(body)
    assert status == 200 and [r["run"] for r in listing["runs"]] == ["good"]
    assert "not a regular file" in listing["problems"][0]["message"]


def test_unreadable_folder_and_file_are_reported_and_the_others_listed(tmp_path, monkeypatch):
    """``chmod 000`` does not stop root, so the refusals a user would get are raised here."""
    write(tmp_path / "good.jsonl", 1)
    (tmp_path / "locked").mkdir()
    write(tmp_path / "locked" / "hidden.jsonl", 1)
    write(tmp_path / "secret.jsonl", 1)
    real_scandir, real_open = os.scandir, LocalFiles.open

    def scandir(path="."):
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def refusing_open(self, path):
        if Path(path).name == "secret.jsonl":
            raise PermissionError(13, "Permission denied", path)
        return real_open(self, path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(LocalFiles, "open", refusing_open)
    runs = make_runs(logdir=tmp_path)
    status, body = api.handle(runs, "runs", {})
    assert status == 200
    assert body["runs"] == [{"run": "good", "num_steps": 1, "last_step": 1}]
    problems = {p["run"]: p["message"] for p in body["problems"]}
    assert set(problems) == {"locked/", "secret"}
    assert "Permission denied" in problems["locked/"] and "Permission denied" in problems["secret"]
    assert api.handle(runs, "steps", {"run": "good"})[0] == 200
    assert api.handle(runs, "step", {"run": "secret", "step": "1"})[0] == 500


def test_a_file_made_unreadable_while_served_logs_one_line(logdir_server, caplog):
    root, start = logdir_server
    write(root / "good.jsonl", 1)
    write(root / "bad.jsonl", 5)
    h = start()
    caplog.set_level(logging.WARNING, logger="seqviz_trackers")
    with connect(ws_url(h) + "?run=bad") as ws:
        assert recv(ws, "step", run="bad")["entry"]["step"] == 5
        make_symlink_loop(root / "bad.jsonl")
        assert "cannot be read" in recv(ws, "waiting", run="bad", timeout=10)["message"]
        ticks = h.server.ticks
        wait_for(lambda: h.server.ticks >= ticks + 30, what="30 more ticks")  # each polls the watched run
    about_bad = [r for r in caplog.records if "bad" in r.getMessage()]
    assert len(about_bad) == 1, [r.getMessage() for r in about_bad]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
