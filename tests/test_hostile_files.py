"""Hostile lines in a run's file, as other tools write them: a lone-surrogate escape
(``"\\ud800"``: valid JSON, not valid Unicode), bare ``NaN`` / ``Infinity`` (Python's
``json.dumps`` default), a step number past 2**63, and a huge incomplete last line.
Each costs at most its own step, never a connection, a route or another step; every
answer a browser gets is strict JSON."""

from __future__ import annotations

import copy
import http.client
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from factories import make_entry
from seqviz_trackers.cli.main import main as cli_main
from seqviz_trackers.serve.server import start_in_thread
from seqviz_trackers.storage.jsonl import _EDGE, LocalFiles, TrainingDataReader, encode_entry

ENTRY = make_entry(0)
SURROGATE_TOKEN = "bad\ud800"  # serialised by json.dumps as the escape \ud800


def good_line(step: int) -> bytes:
    return encode_entry({**ENTRY, "step": step})


def surrogate_line(step: int) -> bytes:
    e = copy.deepcopy(ENTRY)
    e["step"] = step
    e["sequences"][0]["tokens"][1] = SURROGATE_TOKEN
    e["sequences"][0]["name"] = "probe\udfff"
    line = json.dumps(e).encode() + b"\n"
    assert b"\\ud800" in line and b"\\udfff" in line
    return line


def nan_line(step: int) -> bytes:
    e = copy.deepcopy(ENTRY)
    e["step"] = step
    e["loss"] = math.nan
    e["sequences"][0]["predictions"][0]["target_prob"] = math.nan
    e["sequences"][0]["predictions"][1]["entropy"] = math.inf
    line = json.dumps(e).encode() + b"\n"
    assert b"NaN" in line and b"Infinity" in line
    return line


def client_json(obj: Any) -> bytes:
    from seqviz_trackers.storage.jsonl import client_json

    return client_json(obj)


def strict(body: bytes | str) -> Any:
    """Parse as a browser would accept only: UTF-8, no NaN/Infinity, no lone surrogate."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not strict JSON: {constant}")

    value = json.loads(text, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def hostile_run(path: Path) -> Path:
    """Steps 0 (good), 1 (lone surrogates), 2 (NaN / Infinity: the latest)."""
    path.write_bytes(good_line(0) + surrogate_line(1) + nan_line(2))
    return path


# -- the reader --------------------------------------------------------------------------
def test_reader_replaces_lone_surrogates_and_keeps_nan_steps(tmp_path):
    reader = TrainingDataReader(hostile_run(tmp_path / "run.jsonl"))
    assert [s.step for s in reader.steps] == [0, 1, 2]
    one = reader.get_step(1)
    assert one["sequences"][0]["tokens"][1] == "bad\ufffd" and one["sequences"][0]["name"] == "probe\ufffd"
    assert [e["step"] for e in reader] == [0, 1, 2] and reader.problems == []
    # a valid pair of escapes is one character, kept as it is
    pair = json.dumps({**ENTRY, "step": 3, "sequences": [{**ENTRY["sequences"][0], "name": "\U0001F600"}]}).encode()
    assert b"\\ud83d\\ude00" in pair
    with open(tmp_path / "run.jsonl", "ab") as f:
        f.write(pair + b"\n")
    assert reader.get_step(3)["sequences"][0]["name"] == "\U0001F600"
    two = reader.get_step(2)
    assert strict(client_json(two))["sequences"][0]["predictions"][0]["target_prob"] is None


def test_client_json_is_strict():
    body = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": "x\ud800", "d\udc00": {"e": math.nan}}
    assert strict(client_json(body)) == {"a": None, "b": [None, None, 1.5], "c": "x\ufffd", "d\ufffd": {"e": None}}


# -- the CLI -----------------------------------------------------------------------------
def test_validate_warns_on_surrogates_and_refuses_nan(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_bytes(good_line(0) + surrogate_line(1))
    assert cli_main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:2: warning:" in out and "lone surrogate" in out and "U+FFFD" in out
    assert "OK, 2 valid entries" in out

    hostile_run(path)
    assert cli_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3: " in out and "NaN" in out


def test_step_numbers_past_int64_are_refused(tmp_path, capsys):
    from seqviz_trackers.format.schema import SchemaValidationError, validate_entry

    with pytest.raises(SchemaValidationError, match=r"\$\.step"):
        validate_entry({**ENTRY, "step": 2 ** 63})
    validate_entry({**ENTRY, "step": 2 ** 63 - 1})
    path = tmp_path / "big.jsonl"
    big = good_line(2 ** 63 - 1).replace(b'"step":9223372036854775807', b'"step":9223372036854775808')
    path.write_bytes(good_line(0) + big + json.dumps({**ENTRY, "step": 2 ** 70}).encode() + b"\n")
    assert cli_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: " in out and f"{path}:3: " in out and "2**63" in out
    reader = TrainingDataReader(path)
    assert [s.step for s in reader.steps] == [0]
    assert [p.line for p in reader.problems] == [2, 3] and "2**63" in reader.problems[0].message


def strict_page(page: str) -> Any:
    """The data of an exported page, each layer parsed as a browser would accept only."""
    import gzip
    import re

    from seqviz_trackers.serve.export import page_bytes

    wrapper = strict(re.search(r'<script type="application/json" id="seqviz-data">(.*?)</script>', page, re.S).group(1))
    assert wrapper["encoding"] == "gzip+base85"
    return strict(gzip.decompress(page_bytes(wrapper["data"])))


def test_cli_export_of_hostile_lines(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_bytes(good_line(0) + nan_line(1) + surrogate_line(2))
    out = tmp_path / "report.html"
    assert cli_main(["export", str(path), "-o", str(out), "--all"]) == 0
    data = strict_page(out.read_text("utf-8"))
    assert [e["step"] for e in data["entries"]] == [0, 2]  # the NaN step is not a valid step: left out, listed
    assert data["entries"][1]["sequences"][0]["tokens"][1] == "bad\ufffd"
    assert f"{path}:2:" in capsys.readouterr().err
    # the latest step (surrogates) alone
    assert cli_main(["export", str(path), "-o", str(out)]) == 0
    assert [e["step"] for e in strict_page(out.read_text("utf-8"))["entries"]] == [2]


def test_export_never_truncates_the_old_page_when_it_fails(tmp_path, monkeypatch, capsys):
    from seqviz_trackers.cli import export as export_cli

    path = tmp_path / "run.jsonl"
    path.write_bytes(good_line(0))
    out = tmp_path / "report.html"
    out.write_text("an earlier report")

    def broken(*args: Any, **kwargs: Any) -> str:
        raise ValueError("the page cannot be built")

    monkeypatch.setattr(export_cli, "export_html", broken)
    with pytest.raises(ValueError):
        cli_main(["export", str(path), "-o", str(out), "--no-dynamics"])
    assert out.read_text() == "an earlier report"
    monkeypatch.undo()

    class Interrupted(BaseException):
        pass

    def interrupted(*args: Any) -> None:  # the page is written, and then the command is stopped
        raise Interrupted()

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(Interrupted):
        cli_main(["export", str(path), "-o", str(out), "--no-dynamics"])
    monkeypatch.undo()
    assert out.read_text() == "an earlier report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "run.jsonl"]  # no temporary file left


# -- the live server: HTTP and both websockets --------------------------------------------
def get(handle: Any, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def recv(ws: Any, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
    import time

    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind!r} message within {timeout} s")
        msg = strict(ws.recv(timeout=left))
        if msg["type"] == kind and all(msg.get(k) == v for k, v in match.items()):
            return msg


@pytest.fixture
def server(tmp_path):
    path = hostile_run(tmp_path / "run.jsonl")
    handle = start_in_thread(file=path, port=0, interval=0.1)
    yield path, handle
    handle.stop()


def test_server_http_answers_hostile_steps(server):
    _, h = server
    for step in (0, 1, 2):
        status, body = get(h, f"/step?run=run&step={step}")
        assert status == 200, body
        assert strict(body)["step"] == step
    assert strict(get(h, "/step?run=run&step=1")[1])["sequences"][0]["tokens"][1] == "bad\ufffd"
    nan_step = strict(get(h, "/step?run=run&step=2")[1])
    assert nan_step["loss"] is None and nan_step["sequences"][0]["predictions"][0]["target_prob"] is None
    assert nan_step["sequences"][0]["predictions"][1]["entropy"] is None
    for route in ("runs", "steps?run=run", "sequences?run=run", "series?run=run&seq=0"):
        status, body = get(h, "/" + route)
        assert status in (200, 400, 404), (route, body)
        strict(body)


def test_dashboard_websocket_survives_hostile_latest_lines(server):
    path, h = server
    with connect(h.url.replace("http://", "ws://") + "ws") as ws:
        latest = recv(ws, "step")  # the NaN line is the latest: it arrives, with unknowns as null
        assert latest["entry"]["step"] == 2 and latest["entry"]["loss"] is None
        with open(path, "ab") as f:
            f.write(surrogate_line(3))
        assert recv(ws, "step")["entry"]["sequences"][0]["tokens"][1] == "bad\ufffd"
        with open(path, "ab") as f:
            f.write(nan_line(4))
        assert recv(ws, "step")["entry"]["step"] == 4
        ws.send(json.dumps({"type": "get", "id": 1, "route": "step", "params": {"run": "run", "step": 1}}))
        response = recv(ws, "response", id=1)
        assert response["status"] == 200 and response["body"]["sequences"][0]["name"] == "probe\ufffd"
        with open(path, "ab") as f:
            f.write(good_line(5))
        assert recv(ws, "step")["entry"]["step"] == 5  # still connected, still live


def test_original_websocket_feed_survives_hostile_lines(server):
    path, h = server
    with connect(h.url.replace("http://", "ws://")) as ws:
        first = recv(ws, "training_update")
        assert first["step"] == 2 and first["sequences"][0]["predictions"][0]["target_prob"] is None
        ws.send(json.dumps({"type": "get_step", "step": 1}))
        assert recv(ws, "training_update", step=1)["sequences"][0]["tokens"][1] == "bad\ufffd"
        with open(path, "ab") as f:
            f.write(surrogate_line(3) + nan_line(4) + good_line(5))
        assert [recv(ws, "training_update")["step"] for _ in range(3)] == [3, 4, 5]


# -- the TensorBoard plugin ------------------------------------------------------------------
def test_tensorboard_plugin_routes_answer_hostile_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tb_helpers import mirror_run, wsgi_app
    from tb_plugin import asset_path

    mirror_run(tmp_path / "r", [0])
    with open(asset_path(tmp_path / "r"), "ab") as f:
        f.write(surrogate_line(1) + nan_line(2))
    client, _, _ = wsgi_app(tmp_path)
    p = "/data/plugin/seqviz"
    r = client.get(f"{p}/steps?run=r")
    assert r.status_code == 200 and [s["step"] for s in strict(r.data)["steps"]] == [0, 1, 2]
    r = client.get(f"{p}/step?run=r&step=1")
    assert r.status_code == 200 and strict(r.data)["sequences"][0]["tokens"][1] == "bad\ufffd"
    r = client.get(f"{p}/step?run=r&step=2")
    assert r.status_code == 200
    body = strict(r.data)
    assert body["loss"] is None and body["sequences"][0]["predictions"][0]["target_prob"] is None
    for route in ("sequences?run=r", "series?run=r&seq=0", "runs"):
        r = client.get(f"{p}/{route}")
        assert r.status_code in (200, 400, 404), (route, r.data)
        strict(r.data)


# -- a huge incomplete last line -------------------------------------------------------------
class CountingFiles(LocalFiles):
    """Local files that count the bytes read through them."""

    def __init__(self) -> None:
        self.read = 0

    def open(self, path: str) -> Any:
        files = self
        raw = super().open(path)

        class Counted:
            def __enter__(self) -> "Counted":
                return self

            def __exit__(self, *exc: object) -> None:
                raw.close()

            def seek(self, *a: Any) -> int:
                return raw.seek(*a)

            def read(self, n: int = -1) -> bytes:
                data = raw.read(n)
                files.read += len(data)
                return data

        return Counted()


def test_live_tail_reads_only_new_bytes_of_a_huge_fragment(tmp_path):
    path = tmp_path / "run.jsonl"
    fragment = 64 << 20
    with open(path, "wb") as f:
        f.write(good_line(0))
        head = b'{"step": 1, "sequences": ['
        f.write(head)  # a line whose newline has not come yet (and never makes a valid step)
        f.write(b" " * (fragment - len(head)))
    files = CountingFiles()
    reader = TrainingDataReader(path, files=files)
    assert [s.step for s in reader.steps] == [0]
    first = files.read
    assert first <= os.path.getsize(path) + (1 << 20)  # the first scan reads the file once
    for _ in range(5):
        before = files.read
        with open(path, "ab") as f:
            f.write(b" " * 1000)
        assert reader.refresh().new == []
        edges = 4 * _EDGE  # the fingerprint of what is indexed: its first and last bytes, read twice
        assert files.read - before <= 1000 + edges  # only what was appended
        before = files.read
        assert reader.refresh().new == [] and files.read - before <= edges  # nothing new: nothing more
    # the newline comes: the line is indexed (its bytes are read once more, not at every poll)
    before = files.read
    with open(path, "ab") as f:
        f.write(b"\n" + good_line(2))
    assert [s.step for s in reader.refresh().new] == [2]
    assert files.read - before <= os.path.getsize(path) - len(good_line(0)) + (1 << 20)
    assert [p.line for p in reader.problems] == [2]


# -- the converter and the logger: hostile inputs get one clear ValueError ---------------------
def test_masked_target_has_p_zero_and_the_last_rank():
    import torch

    from seqviz_trackers import tensor_to_training_entry
    from seqviz_trackers.format.entry import facts

    logits = torch.randn(1, 4, 50)
    ids = torch.tensor([[1, 2, 3, 4]])
    logits[0, 1, 3] = float("-inf")  # position 1 predicts token 3: masked
    entry = tensor_to_training_entry(logits, ids, None, step=0)
    pred = entry["sequences"][0]["predictions"][1]
    assert pred["target_prob"] == 0 and pred["target_rank"] == 50 and pred["correct"] is False
    assert "loss" not in pred and math.isfinite(pred["entropy"])
    others = [p["loss"] for i, p in enumerate(entry["sequences"][0]["predictions"]) if i != 1]
    assert entry["loss"] == pytest.approx(sum(others) / len(others), rel=1e-4)
    assert facts(pred).prob == 0 and facts(pred).rank == 50 and facts(pred).loss is None
    encode_entry(entry)  # a valid entry


class FewPieces:
    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [str(i) for i in ids[:-1]]


class Failing:
    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        raise KeyError(ids[0])


@pytest.mark.parametrize("change, message", [
    (dict(top_k=2.5), "top_k must be a positive integer, got 2.5"),
    (dict(top_k=True), "top_k must be a positive integer"),
    (dict(tokenizer=FewPieces()), r"tokenizer FewPieces returned \d+ pieces for \d+ token ids"),
    (dict(tokenizer=Failing()), r"tokenizer Failing failed to turn token ids into pieces \(KeyError"),
    (dict(device="meta"), "meta device"),
])
def test_bad_converter_inputs_give_one_clear_value_error(change, message):
    import torch

    from seqviz_trackers import tensor_to_training_entry

    logits = torch.randn(1, 4, 50, device=change.pop("device", "cpu"))
    kwargs = {"tokenizer": None, **change}
    with pytest.raises(ValueError, match=message):
        tensor_to_training_entry(logits, torch.tensor([[1, 2, 3, 4]]), step=0, **kwargs)


def test_a_lone_surrogate_in_a_name_is_a_clear_error_from_log_step(tmp_path):
    from seqviz_trackers import SeqVizLogger
    from seqviz_trackers.format.schema import SchemaValidationError

    bad = copy.deepcopy(ENTRY)
    bad["sequences"][0]["name"] = "run\udcff"  # a file name read with surrogateescape
    with SeqVizLogger(jsonl_path=tmp_path / "run.jsonl") as logger:
        with pytest.raises(SchemaValidationError, match=r"\$\.sequences\[0\]\.name: holds a lone surrogate"):
            logger.log_step(bad)
        logger.log_step(ENTRY)
    assert [s.step for s in TrainingDataReader(tmp_path / "run.jsonl").steps] == [0]
