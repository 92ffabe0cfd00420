"""``seqviz serve`` against what an attacker or a damaged disk can do: unreadable runs,
slow routes, hostile requests and arguments. Real servers in threads, real clients."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from seqviz_trackers.serve import api
from seqviz_trackers.serve import server as server_module
from seqviz_trackers.serve.server import make_runs, start_in_thread
from seqviz_trackers.storage.jsonl import LocalFiles
from test_server import get, recv, served, write, ws_url  # noqa: F401 (a fixture)


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
        h = start_in_thread(**{"logdir": tmp_path, "port": 0, "interval": 0.1, **kw})
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


# -- item 6 and the handshake limit: slow work never stops other answers ---------------

def fetch(handle, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Blocked:
    """A route that waits, in its worker thread, until the test releases it."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, runs, query):
        self.entered.release()
        assert self.release.wait(60)
        return {"built": True}


def in_thread(fn, *args):
    out = {}
    t = threading.Thread(target=lambda: out.update(answer=fn(*args)), daemon=True)
    t.start()
    return t, out


def test_runs_and_step_answer_while_dynamics_builds_are_blocked(served, monkeypatch):
    path, start = served
    write(path, 1, 2)
    build = Blocked()
    monkeypatch.setitem(api.ROUTES, "sequences", build)
    h = start()
    builds = [in_thread(fetch, h, "/sequences?run=run", 60) for _ in range(3)]
    try:
        assert build.entered.acquire(timeout=10)  # a build is running (the others wait for it)
        status, body = fetch(h, "/runs")
        assert status == 200 and json.loads(body)["runs"][0]["num_steps"] == 2
        status, body = fetch(h, "/step?run=run&step=2")
        assert status == 200 and json.loads(body)["step"] == 2
        with connect(ws_url(h)) as ws:  # the live loop answers too
            assert recv(ws, "step")["entry"]["step"] == 2
            ws.send(json.dumps({"type": "get", "id": 1, "route": "steps", "params": {"run": "run"}}))
            assert len(recv(ws, "response", id=1)["body"]["steps"]) == 2
            write(path, 3)
            assert recv(ws, "step", timeout=10)["entry"]["step"] == 3
        assert not any(out for _, out in builds)  # all of that while the builds were blocked
    finally:
        build.release.set()
    for t, out in builds:
        t.join(60)
        assert out["answer"][0] == 200 and json.loads(out["answer"][1]) == {"built": True}


def test_a_route_slower_than_the_request_limit_still_answers(served, monkeypatch):
    """websockets' open_timeout also covered the answer of an HTTP route: a route slower
    than it answered nothing. Now only the wait for the request itself is limited."""
    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT", 0.5)
    path, start = served
    write(path, 1)
    slow = Blocked()
    monkeypatch.setitem(api.ROUTES, "slow", slow)
    h = start()
    t, out = in_thread(fetch, h, "/slow", 60)
    try:
        assert slow.entered.acquire(timeout=10)
        # a connection opened after the slow request, that sends nothing, is dropped once
        # REQUEST_TIMEOUT has passed: by then the slow request has taken longer than that
        idle = socket.create_connection(("127.0.0.1", h.port), timeout=30)
        try:
            assert idle.recv(1) == b""
        except ConnectionResetError:
            pass
        finally:
            idle.close()
    finally:
        slow.release.set()
    t.join(60)
    assert out["answer"][0] == 200 and json.loads(out["answer"][1]) == {"built": True}


# -- requests an attacker can send ------------------------------------------------------

def test_a_fault_answering_http_is_not_called_a_failed_websocket(served, monkeypatch):
    path, start = served
    h = start()

    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(api, "web_file", broken)
    status, body = fetch(h, "/index.html")
    assert status == 500
    assert b"WebSocket" not in body and b"disk on fire" in body


@pytest.mark.parametrize("rid", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_requests_with_non_finite_ids_are_answered(served, rid):
    path, start = served
    write(path, 1)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        ws.send('{"type": "get", "id": %s, "route": "runs", "params": {}}' % rid)
        answer = recv(ws, "response")
        assert answer["id"] is None and answer["status"] == 200
        ws.send('{"type": "get", "id": 7, "route": "step", "params": {"run": "run", "step": "%s"}}' % ("9" * 40))
        assert recv(ws, "response", id=7)["status"] == 404


def test_original_feed_answers_non_finite_and_huge_steps(served):
    path, start = served
    write(path, 1)
    h = start()
    with connect(h.url.replace("http://", "ws://")) as ws:
        assert json.loads(ws.recv(timeout=5))["step"] == 1
        for step in ("NaN", "1e999", "9" * 40):
            ws.send('{"type": "get_step", "step": %s}' % step)
            answer = json.loads(ws.recv(timeout=5))
            assert answer["type"] == "error" and "step" in answer["message"]


# -- files changed behind the server's back ---------------------------------------------

def test_an_edited_display_string_in_the_columns_file_is_not_trusted(tmp_path):
    from test_columns_file import assert_same, from_entries, story
    from test_columns_file import write as write_run

    from seqviz_trackers import TrainingDataReader
    from seqviz_trackers.dynamics import dynamics_for
    from seqviz_trackers.storage import columns as columns_file

    entries = story()
    path = write_run(tmp_path / "run.jsonl", entries)
    cols = Path(path + columns_file.SUFFIX)
    data = bytearray(cols.read_bytes())
    with open(cols, "rb") as f:  # a record that is used (not the first step's, whose line is parsed)
        header, body, _ = next((h, b, n) for h, b, n, _v in columns_file._scan(f, 0, len(data)) if h["step"] == 10)
    shown = next(v for v in header["vocab"].values() if v.isascii() and v.isalnum() and len(v) > 1)
    old, new = json.dumps(shown).encode(), json.dumps("Z" * len(shown)).encode()  # same length: offsets hold
    at = data.rindex(old, 0, body)
    data[at:at + len(old)] = new
    cols.write_bytes(bytes(data))
    dyn = dynamics_for(TrainingDataReader(path))
    assert_same(dyn, from_entries(entries))  # the edited record is refused, its line parsed
    assert "Z" * len(shown) not in dyn.vocab.values()


def test_a_same_size_rewrite_in_place_is_noticed(tmp_path):
    from factories import make_entry

    from seqviz_trackers import TrainingDataReader, encode_entry

    base = make_entry(0)
    one, two = ({**base, "step": s, "loss": 1.25} for s in (1, 2))
    path = tmp_path / "run.jsonl"
    path.write_bytes(encode_entry(one) + encode_entry(two))
    reader = TrainingDataReader(path)
    assert reader.get_step(1)["loss"] == 1.25
    inode, size = os.stat(path).st_ino, os.path.getsize(path)
    with open(path, "r+b") as f:  # the same file, the same size, other lines
        f.write(encode_entry({**two, "loss": 2.5}) + encode_entry({**one, "loss": 7.5}))
    assert (os.stat(path).st_ino, os.path.getsize(path)) == (inode, size)
    assert reader.get_step(1)["loss"] == 7.5
    assert [(s.step, s.loss) for s in reader.steps] == [(1, 7.5), (2, 2.5)]


# -- arguments and idle cost ------------------------------------------------------------

def serve_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "serve", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flag, value, said", [
    ("--port", "70000", "--port must be between 0 and 65535"),
    ("--port", "-1", "--port must be between 0 and 65535"),
    ("--interval", "nan", "--interval must be positive and finite"),
    ("--interval", "inf", "--interval must be positive and finite"),
    ("--interval", "1e-9", "--interval must be at least 0.01 s"),
])
def test_bad_port_and_interval_are_one_clear_line(tmp_path, flag, value, said):
    proc = serve_cli("--file", str(tmp_path / "r.jsonl"), flag, value)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"seqviz serve: {said}") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_binding_every_address_says_the_host_check_is_off(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "seqviz_trackers.cli", "serve", "--file", str(tmp_path / "r.jsonl"),
                             "--host", "0.0.0.0", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Host header check is off on 0.0.0.0" in err


def test_run_scans_back_off_while_nothing_changes(logdir_server):
    root, start = logdir_server
    write(root / "a.jsonl", 1)
    h = start(interval=0.05)  # polls every 5 ms, scans from every 50 ms up to every MAX_SCAN_GAP s
    runs = h.server.runs
    scans = []
    real = runs._discover
    runs._discover = lambda: scans.append(1) or real()
    ticks = h.server.ticks
    wait_for(lambda: h.server.ticks >= ticks + 400, timeout=60, what="400 ticks")
    assert len(scans) <= 8, f"{len(scans)} scans in 400 ticks (40 without a back-off)"
    with connect(ws_url(h)) as ws:  # a new run is still found, and a new page sees every run at once
        assert [r["run"] for r in recv(ws, "runs")["runs"]] == ["a"]
        write(root / "b.jsonl", 2)
        assert [r["run"] for r in recv(ws, "runs", timeout=30)["runs"]] == ["a", "b"]
