"""``seqviz serve`` end to end: a real server in a thread, real websockets clients and
raw HTTP requests. Each test writes its own JSONL file."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from factories import make_entry
from proc_helpers import cli_process
from seqviz_trackers import TrainingDataWriter, encode_entry
from seqviz_trackers.serve import api
from seqviz_trackers.serve.server import start_in_thread

ENTRY = make_entry(0)


def line(step: int) -> bytes:
    return encode_entry({**ENTRY, "step": step}, validate=False)


def write(path: Path, *steps: int) -> None:
    with open(path, "ab") as f:
        for step in steps:
            f.write(line(step))


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "run.jsonl"
    handles = []

    def start(**kw):
        h = start_in_thread(file=path, port=0, interval=0.1, **kw)
        handles.append(h)
        return h

    yield path, start
    for h in handles:
        h.stop()


def ws_url(handle) -> str:
    return handle.url.replace("http://", "ws://") + "ws"


def recv(ws, kind: str, timeout: float = 5.0, **match):
    """The next message of type ``kind`` (and matching fields), skipping others."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind!r} message within {timeout} s")
        msg = json.loads(ws.recv(timeout=left))
        if msg["type"] == kind and all(msg.get(k) == v for k, v in match.items()):
            return msg


def steps_become(ws, expected: list[int], timeout: float = 10.0) -> None:
    """Follow the step list the server announces (``steps``, ``steps_added``, ``reset``)
    until it is ``expected``: a file rewritten in place may first be seen empty."""
    end = time.monotonic() + timeout
    seen: list[int] | None = None
    while seen != expected:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the steps announced are {seen}, not {expected}, after {timeout} s")
        msg = json.loads(ws.recv(timeout=left))
        if msg["type"] == "reset":
            seen = []
        elif msg["type"] == "steps":
            seen = [s["step"] for s in msg["steps"]]
        elif msg["type"] == "steps_added" and seen is not None:
            seen += [s["step"] for s in msg["steps"]]


def nothing(ws, kind: str, wait: float = 0.5) -> None:
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        try:
            msg = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return
        assert msg["type"] != kind, msg


def get(handle, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_connect_gets_summary_history_and_latest(served):
    path, start = served
    write(path, 10, 20, 30)
    h = start()
    with connect(ws_url(h)) as ws:
        runs = recv(ws, "runs")
        assert runs["runs"] == [{"run": "run", "num_steps": 3, "last_step": 30}]
        summary = recv(ws, "summary")
        assert summary["summary"]["num_steps"] == 3
        steps = recv(ws, "steps")
        assert [s["step"] for s in steps["steps"]] == [10, 20, 30]
        latest = recv(ws, "step")
        assert latest["entry"]["step"] == 30
        assert latest["entry"]["sequences"][0]["tokens"] == ENTRY["sequences"][0]["tokens"]
        # an older step on request, through the same route table as HTTP
        ws.send(json.dumps({"type": "get", "id": 7, "route": "step", "params": {"run": "run", "step": 10}}))
        resp = recv(ws, "response", id=7)
        assert resp["status"] == 200 and resp["body"]["step"] == 10
        ws.send(json.dumps({"type": "get", "id": 8, "route": "step", "params": {"run": "run", "step": 11}}))
        resp = recv(ws, "response", id=8)
        assert resp["status"] == 404 and "no step 11" in resp["body"]["error"]


def test_live_append_arrives(served):
    path, start = served
    write(path, 1)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        with TrainingDataWriter(path) as w:
            w.write_step(make_entry(2))
        added = recv(ws, "steps_added")
        assert [s["step"] for s in added["steps"]] == [2]
        assert recv(ws, "step")["entry"]["step"] == 2


def test_partial_line_waits_for_its_newline(served):
    path, start = served
    write(path, 1)
    h = start()
    raw = line(2)
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        with open(path, "ab") as f:
            f.write(raw[:200])
        nothing(ws, "step", 0.6)
        with open(path, "ab") as f:
            f.write(raw[200:])
        assert recv(ws, "step")["entry"]["step"] == 2


def test_malformed_line_is_a_warning_and_streaming_goes_on(served):
    path, start = served
    write(path, 1)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        with open(path, "ab") as f:
            f.write(b'{"step": 2, "sequences": [\n')
        warning = recv(ws, "warning")
        assert warning["line"] == 2 and "JSON" in warning["message"]
        write(path, 3)
        assert recv(ws, "step")["entry"]["step"] == 3
    status, body = get(h, "/steps?run=run")
    assert status == 200 and json.loads(body)["problems"][0]["line"] == 2


def test_truncated_or_replaced_file_is_read_again(served):
    path, start = served
    write(path, 1, 2, 3)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        path.write_bytes(line(7))  # truncates to one shorter file (the server may see it empty first)
        recv(ws, "reset")
        steps_become(ws, [7])
        assert recv(ws, "step")["entry"]["step"] == 7
        replacement = path.with_suffix(".new")
        replacement.write_bytes(line(8) + line(9) + line(10))
        os.replace(replacement, path)
        recv(ws, "reset")
        assert [s["step"] for s in recv(ws, "steps")["steps"]] == [8, 9, 10]


def test_file_created_after_the_server_started(served):
    path, start = served
    h = start()
    with connect(ws_url(h)) as ws:
        assert recv(ws, "runs")["runs"] == []
        recv(ws, "waiting")
        write(path, 5)
        assert recv(ws, "step")["entry"]["step"] == 5


def stalled_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_many_clients_and_a_stalled_one(served, monkeypatch):
    import seqviz_trackers.serve.server as server_module

    monkeypatch.setattr(server_module, "QUEUE_LIMIT", 8)
    path, start = served
    write(path, 0)
    h = start()
    big = {**ENTRY, "metadata": {"pad": "x" * 150_000}}
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(stalled_client(h.port))
        clients = [stack.enter_context(connect(ws_url(h), max_queue=None)) for _ in range(50)]
        for ws in clients:
            recv(ws, "step")
        assert len(h.server.clients) == 51
        t0 = time.monotonic()
        pacer, others = clients[0], clients[1:]
        with open(path, "ab") as f:
            for step in range(1, 41):  # separate batches: one message pair each
                f.write(encode_entry({**big, "step": step}, validate=False))
                f.flush()
                assert recv(pacer, "step", timeout=30)["entry"]["step"] == step  # sent before the next one is written
        for ws in others:
            # every reader gets the last step although one client stopped reading
            end = time.monotonic() + 30
            last = '{"type":"step","run":"run","entry":{"step":40,'
            while not ws.recv(timeout=max(0.01, end - time.monotonic())).startswith(last):
                pass
        assert time.monotonic() - t0 < 30
        # the stalled client was dropped (its queue is bounded), the 50 others are still served
        deadline = time.monotonic() + 10
        while len(h.server.clients) > 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(h.server.clients) == 50
        assert stalled.fileno() >= 0


def test_bad_origin_refused_and_own_origin_accepted(served):
    path, start = served
    write(path, 1)
    h = start()
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(h), origin="http://evil.example")
    assert info.value.response.status_code == 403
    with connect(ws_url(h), origin=f"http://127.0.0.1:{h.port}") as ws:
        recv(ws, "step")
    h2 = start(allow_origins=["http://evil.example"])
    with connect(ws_url(h2), origin="http://evil.example") as ws:
        recv(ws, "step")


def test_foreign_host_header_refused(served):
    path, start = served
    write(path, 1)
    h = start()
    status, body = get(h, "/runs", headers={"Host": "attacker.example:8765"})
    assert status == 403
    status, _ = get(h, "/runs", headers={"Host": f"localhost:{h.port}"})
    assert status == 200


@pytest.mark.parametrize("bad", [
    "/../server.py", "/%2e%2e/server.py", "/..%2fserver.py", "/%2e%2e%2fserver.py", "/.%2e/api.py",
    "/web/../../server.py", "/%252e%252e/server.py", "/..\\server.py", "/%5c..%5cserver.py",
    "/.hidden", "/index.js%00.html", "//etc/passwd",
])
def test_static_files_cannot_leave_the_web_folder(served, bad):
    path, start = served
    h = start()
    status, body = get(h, bad)
    assert status == 404
    assert b"import" not in body


def test_http_serves_dashboard_and_every_route(served, monkeypatch):
    path, start = served
    write(path, 3, 4)
    h = start()
    status, body = get(h, "/")
    assert status == 200 and b'type="module"' in body
    status, body = get(h, "/index.js")
    assert status == 200 and b"export function render" in body
    assert json.loads(get(h, "/runs")[1]) == {"runs": [{"run": "run", "num_steps": 2, "last_step": 4}]}
    assert json.loads(get(h, "/step?run=run&step=4")[1])["step"] == 4
    status, body = get(h, "/step?run=run&step=x")
    assert status == 400 and "step" in json.loads(body)["error"]
    status, body = get(h, "/steps?run=nope")
    assert status == 404 and "nope" in json.loads(body)["error"]
    # a route added to api.ROUTES later is served with no server change
    monkeypatch.setitem(api.ROUTES, "echo", lambda runs, q: {"echo": q})
    assert json.loads(get(h, "/echo?a=1")[1]) == {"echo": {"a": "1"}}
    with connect(ws_url(h)) as ws:
        ws.send(json.dumps({"type": "get", "id": 1, "route": "echo", "params": {"b": 2}}))
        assert recv(ws, "response", id=1)["body"] == {"echo": {"b": "2"}}


def test_steps_after_answers_only_new_steps_and_a_version_that_notices_resets(served):
    path, start = served
    write(path, 1, 2, 3)
    h = start()

    def steps(query: str) -> dict:
        status, body = get(h, f"/steps?run=run{query}")
        assert status == 200, body
        return json.loads(body)

    full = steps("")
    assert [s["step"] for s in full["steps"]] == [1, 2, 3] and full["num_steps"] == 3 and "after" not in full
    version = full["version"]
    write(path, 4, 5)
    new = steps("&after=3")
    assert new["after"] == 3 and [s["step"] for s in new["steps"]] == [4, 5]
    assert new["num_steps"] == 5 and new["version"] == version
    assert steps("&after=5")["steps"] == [] and [s["step"] for s in steps("&after=-1")["steps"]] == [1, 2, 3, 4, 5]
    assert [s["step"] for s in steps("&after=0")["steps"]] == [1, 2, 3, 4, 5]
    for bad in ("x", "-2", "1.5"):
        status, body = get(h, f"/steps?run=run&after={bad}")
        assert status == 400 and "after must be" in json.loads(body)["error"]

    write(path, 5)  # step 5 logged again: the steps held before are not all still right
    again = steps("&after=5")
    assert again["steps"] == [] and again["num_steps"] == 5 and again["version"] != version
    version = again["version"]
    path.write_bytes(line(1) + line(9))  # truncated and rewritten: two steps again
    reset = steps("&after=5")
    assert [s["step"] for s in reset["steps"]] == [9] and reset["num_steps"] == 2 and reset["version"] != version
    with connect(ws_url(h)) as ws:  # the websocket's own requests answer it too
        ws.send(json.dumps({"type": "get", "id": 1, "route": "steps", "params": {"run": "run", "after": 1}}))
        body = recv(ws, "response", id=1)["body"]
        assert [s["step"] for s in body["steps"]] == [9] and body["version"] == reset["version"]


def test_bad_messages_are_answered_and_huge_ones_close(served):
    path, start = served
    write(path, 1)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        ws.send("not json")
        assert "bad message" in recv(ws, "error")["message"]
        ws.send(json.dumps({"type": "watch", "run": "nope"}))
        assert "unknown run" in recv(ws, "error")["message"]
        ws.send("x" * 200_000)
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(10):
                ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009


def test_logdir_runs_and_watch(tmp_path):
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "steps.jsonl", 1, 2)
    h = start_in_thread(logdir=tmp_path, port=0, interval=0.1)
    try:
        with connect(ws_url(h)) as ws:
            assert [r["run"] for r in recv(ws, "runs")["runs"]] == ["a/steps"]
            assert recv(ws, "step", run="a/steps")["entry"]["step"] == 2
            write(tmp_path / "b.jsonl", 9)
            runs = recv(ws, "runs", timeout=5)
            assert [r["run"] for r in runs["runs"]] == ["a/steps", "b"]
            # watching the run it watches sends nothing again (the latest step can weigh
            # megabytes); the watches are handled in order, so all of it would come before b's
            ws.send(json.dumps({"type": "watch", "run": "a/steps"}))
            ws.send(json.dumps({"type": "watch", "run": "b"}))
            before_b = []
            while (msg := json.loads(ws.recv(timeout=5)))["type"] != "summary" or msg["run"] != "b":
                before_b.append(msg)
            assert not [m for m in before_b if m.get("run") == "a/steps" and m["type"] in ("summary", "steps", "step")]
            assert recv(ws, "step", run="b")["entry"]["step"] == 9
            write(tmp_path / "b.jsonl", 10)
            assert recv(ws, "step", run="b")["entry"]["step"] == 10
    finally:
        h.stop()


def test_port_in_use_is_one_clear_line(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(OSError):
            start_in_thread(file=tmp_path / "x.jsonl", port=port)
        proc = subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "serve", "--file", str(tmp_path / "x.jsonl"),
                               "--port", str(port)], capture_output=True, text=True, timeout=30)
    finally:
        sock.close()
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"seqviz serve: port {port} on 127.0.0.1 is already in use; stop the other server or pick another with --port"


def test_cli_serves_prints_url_and_stops_cleanly_on_ctrl_c(tmp_path):
    path = tmp_path / "run.jsonl"
    write(path, 1)
    proc = cli_process("serve", "--file", str(path), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        url_line = proc.stdout.readline()
        assert "serving" in first and "open http://127.0.0.1:" in url_line
        url = url_line.split()[1]
        with connect(url.replace("http://", "ws://") + "ws") as ws:
            assert recv(ws, "step")["entry"]["step"] == 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err and "stopped" in err


def test_non_loopback_bind_warns(tmp_path):
    proc = cli_process("serve", "--file", str(tmp_path / "r.jsonl"), "--host", "0.0.0.0", "--port", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "warning: binding 0.0.0.0" in err


def test_cli_bad_arguments_are_one_line(tmp_path, capsys):
    from seqviz_trackers.cli import main

    assert main(["serve", "--logdir", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"seqviz serve: {tmp_path / 'nope'}: no such folder"
    assert main(["serve", "--file", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"seqviz serve: {tmp_path} is a folder; use --logdir {tmp_path}"
    assert main(["serve", "--file", str(tmp_path / "r.jsonl"), "--interval", "0"]) == 2
    assert "--interval must be positive" in capsys.readouterr().err


def test_a_slow_request_does_not_delay_live_steps(served, monkeypatch):
    import threading

    entered = threading.Semaphore(0)
    release = threading.Event()

    def slow(runs, q):  # answers only once the live step came through
        entered.release()
        release.wait(30)
        return {"slow": True}

    monkeypatch.setitem(api.ROUTES, "slow", slow)
    path, start = served
    write(path, 1)
    h = start()
    with connect(ws_url(h)) as ws:
        recv(ws, "step")
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=get(h, "/slow")))
        t.start()
        ws.send(json.dumps({"type": "get", "id": 3, "route": "slow", "params": {}}))
        try:
            assert entered.acquire(timeout=10)  # a slow request is being answered
            write(path, 2)
            assert recv(ws, "step", timeout=10)["entry"]["step"] == 2  # not queued behind it
        finally:
            release.set()
        t.join(10)
        assert answer["r"][0] == 200 and json.loads(answer["r"][1]) == {"slow": True}
        assert recv(ws, "response", id=3, timeout=10)["body"] == {"slow": True}


def test_a_line_appended_while_the_latest_step_is_sent_is_announced(tmp_path):
    """The live loop's reader is refreshed only where what it finds is announced: a line
    that lands between that refresh and the read of the latest step (a trainer appending
    meanwhile) still reaches the clients as ``steps_added``, never silently indexed."""
    from seqviz_trackers.serve.server import SeqVizServer, make_runs

    path = tmp_path / "run.jsonl"
    write(path, 1)
    server = SeqVizServer(make_runs(file=path))
    sent: list[dict] = []
    server._broadcast = lambda run, obj, clients=None, feed=None, text=None: sent.append(json.loads(text) if obj is None else obj)
    server._share_problems = lambda: None
    reader = server._tail("run")
    real_refresh = reader.refresh

    def refresh_then_a_writer_appends():
        update = real_refresh()
        if update.new and update.new[-1].step < 3:
            write(path, update.new[-1].step + 1)  # lands right after this refresh
        return update

    reader.refresh = refresh_then_a_writer_appends
    for _ in range(4):
        server._poll_run("run")
    announced = [s["step"] for m in sent if m["type"] == "steps_added" for s in m["steps"]]
    assert announced == [1, 2, 3]
    assert [m["entry"]["step"] for m in sent if m["type"] == "step"] == [1, 2, 3]
