"""A large step's first sequences, sent apart (``step?view=1&seqs=K``) so that the dashboard
draws them while the whole step view is on its way: the view's JSON cut where the columns
record says its sequences are, the route on ``seqviz serve`` and in TensorBoard, the
websocket that pushes no step to a dashboard that asks for its own, and the served page."""

from __future__ import annotations

import json
import threading

import pytest

from factories import HOSTILE, make_entry
from seed_files import seed_entry
from seqviz_trackers import TrainingDataReader, TrainingDataWriter
from seqviz_trackers.format.view import step_view
from seqviz_trackers.serve.server import start_in_thread
from seqviz_trackers.storage import columns as columns_mod
from seqviz_trackers.storage.columns import view_part, view_text
from test_step_view import http_json
from web_data import learning_entry


def views() -> list[dict]:
    hostile = make_entry(200, [HOSTILE + " caf\u00e9 \U0001F600", "b c d"])
    last = {k: v for k, v in learning_entry(5, 100).items() if k != "sequences"}
    last["sequences"] = learning_entry(5, 100)["sequences"]  # the sequences not first, not last
    last["after"] = {"sequences": [1, 2]}
    return [step_view(learning_entry(100, 300)), step_view(hostile), step_view(seed_entry(300, 300)), step_view(last),
            {"step": 1, "sequences": []}, {"step": 2, "sequences": ["odd", 3, None]}, {"step": 3, "sequences": {"x": 1}}]


def test_view_text_is_the_json_of_the_view_and_cuts_at_each_sequence():
    for view in views():
        text, spans = view_text(view)
        assert text == json.dumps(view, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        seqs = view["sequences"]
        if not isinstance(seqs, list):
            assert spans is None
            continue
        assert len(spans) == len(seqs) + 1
        for count in range(len(seqs) + 2):
            part = view_part(text, spans, count)
            assert json.loads(part) == {**view, "sequences": seqs[:count]}, count
            assert (part == text) == (count >= len(seqs))


def test_view_part_refuses_spans_that_do_not_fit_the_text():
    view = step_view(learning_entry(100, 300))
    text, spans = view_text(view)
    assert view_part(text, spans, 1) is not None
    for bad in ([s + 1 for s in spans], [spans[0]] + [s - 1 for s in spans[1:]], spans[:1] + [len(text) + 5],
                "x", [], [1.5, 2], None, [spans[0], True]):
        assert view_part(text, bad, 1) is None, bad


def write_run(path, entries):
    with TrainingDataWriter(path) as w:
        for e in entries:
            w.write_step(e)
    return TrainingDataReader(path)


def test_reader_cuts_a_large_stored_view_and_sends_nothing_else(tmp_path, monkeypatch):
    entries = [learning_entry(step, 300) for step in (0, 100)]
    reader = write_run(tmp_path / "run.jsonl", entries)
    info = reader.steps[1]
    whole = json.loads(reader.read_view(info, encoded=True))
    nothing = {"of": None, "view": None}
    assert json.loads(reader.read_view_part(info, 1)) == nothing  # a small view: the whole is sent at once
    monkeypatch.setattr(TrainingDataReader, "PART_MIN_BYTES", 0)
    n = len(whole["sequences"])
    for count in range(n):
        assert json.loads(reader.read_view_part(info, count)) == \
            {"of": n, "view": {**whole, "sequences": whole["sequences"][:count]}}
    assert json.loads(reader.read_view_part(info, n)) == nothing  # all of it: ask for the view

    # never the line parsed for it: without the columns file, or once the line is not the
    # one the record was made from (rewritten, the same length), there is none
    parsed = []
    real = TrainingDataReader.read
    monkeypatch.setattr(TrainingDataReader, "read", lambda self, i: parsed.append(i.step) or real(self, i))
    path = tmp_path / "run.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    swapped = lines[1].replace(b'"step":100', b'"step":101')  # indexed anew: another step, same length
    path.write_bytes(lines[0] + swapped)
    fresh = TrainingDataReader(path)
    assert json.loads(fresh.read_view_part(fresh.step_info(101), 1)) == nothing
    (tmp_path / ("run.jsonl" + columns_mod.SUFFIX)).unlink()
    plain = TrainingDataReader(path)
    assert json.loads(plain.read_view_part(plain.steps[0], 1)) == nothing
    assert parsed == []


def test_records_without_the_spans_are_not_cut(tmp_path, monkeypatch):
    """A record written before ``view_seqs`` (or with spans that do not fit): no part."""
    made = columns_mod._make_view_section
    monkeypatch.setattr(columns_mod, "_make_view_section", lambda entry: (made(entry)[0], None))
    monkeypatch.setattr(columns_mod, "_last_view", None)
    monkeypatch.setattr(TrainingDataReader, "PART_MIN_BYTES", 0)
    reader = write_run(tmp_path / "run.jsonl", [learning_entry(100, 300)])
    assert reader.read_view(reader.steps[0], stored_only=True) is not None  # the view is stored, not its spans
    assert json.loads(reader.read_view_part(reader.steps[0], 1)) == {"of": None, "view": None}


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A served run whose views count as large (every stored view is cut)."""
    monkeypatch.setattr(TrainingDataReader, "PART_MIN_BYTES", 0)
    path = tmp_path / "run.jsonl"
    entries = [learning_entry(step, 300) for step in (0, 100)]
    write_run(path, entries)
    handle = start_in_thread(file=path, port=0, interval=0.1)
    handle.views = [json.loads(json.dumps(step_view(json.loads(line)))) for line in path.read_text("utf-8").splitlines()]
    yield handle
    handle.stop()


def test_served_step_route_answers_the_first_sequences(big):
    view = big.views[1]
    status, body = http_json(big, "/step?run=run&step=100&view=1&seqs=2")
    assert len(view["sequences"]) == 3
    assert status == 200 and body == {"of": 3, "view": {**view, "sequences": view["sequences"][:2]}}
    for query, message in [("step?run=run&step=100&seqs=1", "seqs is only for a step view"),
                           ("step?run=run&step=100&view=1&seqs=x", "seqs must be an integer"),
                           ("step?run=run&step=100&view=1&seqs=-1", "seqs must be at least 0")]:
        status, body = http_json(big, "/" + query)
        assert (status, message in body["error"]) == (400, True), (query, body)
    status, body = http_json(big, "/step?run=run&step=7&view=1&seqs=1")
    assert status == 404 and "has no step 7" in body["error"]


def test_tensorboard_plugin_answers_the_first_sequences(tmp_path, monkeypatch):
    from tb_helpers import mirror_run, wsgi_app

    monkeypatch.setattr(TrainingDataReader, "PART_MIN_BYTES", 0)
    mirror_run(tmp_path / "run", [0, 1], texts=["to be or not to be", "that is the question"])
    client, _, _ = wsgi_app(tmp_path)
    view = client.get("/data/plugin/seqviz/step?run=run&step=1&view=1").json
    body = client.get("/data/plugin/seqviz/step?run=run&step=1&view=1&seqs=1").json
    assert body == {"of": len(view["sequences"]), "view": {**view, "sequences": view["sequences"][:1]}}
    assert len(view["sequences"]) > 1


def connect_messages(url: str) -> list[dict]:
    """What the dashboard's websocket sends at connect: the messages before the answer to a
    request made right after (the server queues them first)."""
    from websockets.sync.client import connect

    with connect(url) as ws:
        ws.send(json.dumps({"type": "get", "id": 1, "route": "runs", "params": {}}))
        out = []
        while (msg := json.loads(ws.recv(timeout=30)))["type"] != "response":
            out.append(msg)
    return out


def test_websocket_pushes_no_step_to_a_dashboard_that_asks_for_its_own(big):
    ws = big.url.replace("http://", "ws://") + "ws"
    assert [m["type"] for m in connect_messages(ws)] == ["runs", "summary", "steps", "step"]
    assert [m["type"] for m in connect_messages(ws + "?latest=0")] == ["runs", "summary", "steps"]


@pytest.mark.browser
def test_served_page_draws_the_first_sequence_while_the_step_is_on_its_way(page, big, monkeypatch):
    """The whole step view the page asks for is held back until it shows the first sequence alone."""
    release = threading.Event()
    real = TrainingDataReader.read_view

    def held(self, info, encoded=False, stored_only=False):
        if encoded and not stored_only and threading.current_thread().name.startswith("seqviz-routes"):
            assert release.wait(60), "the page did not draw the first sequence"
        return real(self, info, encoded, stored_only)

    monkeypatch.setattr(TrainingDataReader, "read_view", held)
    try:
        page.goto(big.url)
        page.wait_for_selector(".seq .tok", timeout=30000)
        assert page.locator(".seq").count() == 1
        assert page.locator(".seq-more").inner_text() == "Loading 2 more sequences\u2026"
        assert page.locator(".step-info .kv", has_text="sequences").locator(".v").inner_text() == "3"
    finally:
        release.set()
    page.locator(".seq").nth(2).locator(".tok").first.wait_for(timeout=30000)
    assert page.locator(".seq").count() == 3 and page.locator(".seq-more").count() == 0
    tokens = big.views[1]["sequences"][2]["tokens"]
    assert page.locator(".seq").nth(2).locator(".tok").count() == len(tokens)
    assert not page.js_errors


def test_the_whole_view_after_its_first_sequences_is_not_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(TrainingDataReader, "PART_MIN_BYTES", 0)
    reader = write_run(tmp_path / "run.jsonl", [learning_entry(step, 300) for step in (0, 100)])
    looked = []
    real = columns_mod.ColumnsReader.view
    monkeypatch.setattr(columns_mod.ColumnsReader, "view", lambda self, info: looked.append(info.step) or real(self, info))
    info = reader.step_info(100)
    part = json.loads(reader.read_view_part(info, 1))
    whole = json.loads(reader.read_view(info, encoded=True))
    assert part["view"]["sequences"] == whole["sequences"][:1] and looked == [100]
    reader.read_view(reader.step_info(0), encoded=True)
    assert looked == [100, 0]  # another step: read from its record
