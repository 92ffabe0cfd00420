"""The step view (what the dashboard draws of a step, :mod:`seqviz_trackers.format.view`) against
:func:`~seqviz_trackers.format.entry.facts`, the ``candidates`` route on ``seqviz serve`` and in
TensorBoard, and in the served page: a step arrives without candidates, a click fetches them."""

from __future__ import annotations

import copy
import http.client
import json
import math

import pytest

from factories import HOSTILE, make_entry
from seed_files import in_top20, seed_entry
from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.format.entry import by_position, candidates, facts
from seqviz_trackers.format.view import VIEW_FIELDS, candidates_at, step_view
from seqviz_trackers.serve.server import start_in_thread
from web_data import learning_entry


def odd_entry() -> dict:
    """Our form with the optional fields left out here and there, a malformed candidate and
    a prediction without a position (which the view leaves out)."""
    e = make_entry(5)
    preds = e["sequences"][0]["predictions"]
    for key, pred in zip(("target_prob", "target_rank", "loss", "correct", "entropy"), preds):
        del pred[key]
    del preds[5]["target_rank"], preds[5]["target_prob"], preds[5]["loss"]
    preds[5]["target_token_id"] = 10 ** 9  # outside the candidates: a bound
    preds[6]["top_k"][0] = ["x", "bad", 0.5]
    preds.append({"target_token_id": 1, "top_k": [[1, "a", 1.0]]})
    return e


def check_view(entry: dict) -> None:
    """Each column of each sequence's view is what facts() says of that prediction."""
    view = step_view(entry)
    assert json.loads(json.dumps(view)) == view
    assert {k: v for k, v in view.items() if k != "sequences"} == {k: v for k, v in entry.items() if k != "sequences"}
    for seq, vseq in zip(entry["sequences"], view["sequences"]):
        assert {k: v for k, v in vseq.items() if k != "view"} == {k: v for k, v in seq.items() if k != "predictions"}
        preds = [p for p in seq["predictions"] if isinstance(p.get("position"), int)]
        cols = vseq["view"]
        bounded = [facts(p).rank_gt is not None for p in preds]
        assert set(cols) == set(VIEW_FIELDS) | ({"rank_gt", "p_lt"} if any(bounded) else set())
        for i, pred in enumerate(preds):
            f = facts(pred)
            row = {k: cols[k][i] for k in cols}
            assert row["position"] == pred["position"]
            assert row["target_token_id"] == pred.get("target_token_id")
            assert row["target_token_str"] == pred.get("target_token_str")
            assert (row["target_prob"], row["target_rank"], row["loss"], row["entropy"], row["correct"]) == (
                f.prob, f.rank, f.loss, f.entropy, f.correct)
            assert (row["top1_id"], row["top1_str"]) == ((f.top[0][0], f.top[0][1]) if f.top else (None, None))
            assert (row.get("rank_gt"), row.get("p_lt")) == (f.rank_gt, f.p_lt)
    # with the candidates: each prediction's, in columns, read back as candidates() reads them
    page = step_view(entry, with_candidates=True)
    strings = page["candidate_strings"]
    for seq, vseq in zip(entry["sequences"], page["sequences"]):
        preds = [p for p in seq["predictions"] if isinstance(p.get("position"), int)]
        cand = vseq["candidates"]
        assert len(cand["n"]) == len(preds) and sum(cand["n"]) == len(cand["id"]) == len(cand["p"])
        start = 0
        for pred, n in zip(preds, cand["n"]):
            ids, probs = cand["id"][start:start + n], cand["p"][start:start + n]
            tokens = cand["token"][start:start + n] if "token" in cand else [strings[str(i)] for i in ids]
            assert list(zip(ids, tokens, probs)) == candidates(pred)
            where = (entry["sequences"].index(seq), pred["position"])
            assert candidates_at(entry, *where) == candidates_at(page, *where) == [list(c) for c in candidates(pred)]
            start += n


def test_view_of_converter_entries_is_what_facts_says():
    check_view(make_entry(3))
    check_view(learning_entry(100, 300))


def test_view_of_odd_entries_is_what_facts_says():
    check_view(odd_entry())
    hostile = make_entry(4, [HOSTILE + " text"])
    check_view(hostile)


def test_view_of_original_seed_files_keeps_the_bounds():
    for step in (0, 150, 300):
        entry = seed_entry(step, 300, with_loss=step == 150)
        check_view(entry)
        view = step_view(entry)
        for seq, vseq in zip(entry["sequences"], view["sequences"]):
            cols = vseq["view"]
            for i, pred in enumerate(seq["predictions"]):
                if not in_top20(pred):  # absent target: rank > 20, p < p_20 (p known only from a logged loss)
                    assert cols["target_rank"][i] is None and cols["rank_gt"][i] == 20
                    assert cols["p_lt"][i] == pred["top_20"][-1]["prob"]
                    assert (cols["target_prob"][i] is None) == ("loss" not in pred)
                else:
                    assert cols["rank_gt"][i] is None and cols["target_rank"][i] >= 1


def test_candidate_strings_that_do_not_follow_their_id_are_kept_per_sequence():
    entry = make_entry(2)
    first = entry["sequences"][0]["predictions"][0]["top_k"][0]
    other = copy.deepcopy(entry["sequences"][0])
    other["predictions"][0]["top_k"][0] = [first[0], first[1] + " but other", first[2]]
    entry["sequences"].append(other)
    check_view(entry)
    page = step_view(entry, with_candidates=True)
    assert "token" not in page["sequences"][0]["candidates"] and "token" in page["sequences"][-1]["candidates"]


def test_view_is_a_fraction_of_the_entry():
    entry = learning_entry(100, 300)
    full, view = (len(json.dumps(x, separators=(",", ":"))) for x in (entry, step_view(entry)))
    assert view < full / 3


# -- the routes ----------------------------------------------------------------------------

def http_json(handle, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "run.jsonl"
    entries = [learning_entry(step, 300) for step in (0, 100)]
    with TrainingDataWriter(path) as w:
        for e in entries:
            w.write_step(e)
    handle = start_in_thread(file=path, port=0, interval=0.1)
    handle.entries = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    handle.path = path
    yield handle
    handle.stop()


def test_server_step_view_and_candidates_routes(served):
    entry = served.entries[1]
    status, body = http_json(served, "/step?run=run&step=100&view=1")
    assert status == 200 and body == json.loads(json.dumps(step_view(entry)))
    status, body = http_json(served, "/step?run=run&step=100")
    assert status == 200 and body == entry  # the logged form, unchanged
    pred = entry["sequences"][1]["predictions"][3]
    status, body = http_json(served, f"/candidates?run=run&step=100&seq=1&pos={pred['position']}")
    assert status == 200
    assert body == {"run": "run", "step": 100, "seq": 1, "pos": pred["position"], "top_k": pred["top_k"]}
    for query, code, message in [
        ("candidates?run=run&step=100&seq=1", 400, "missing query parameter 'pos'"),
        ("candidates?run=run&step=100&seq=x&pos=1", 400, "seq must be an integer"),
        ("candidates?run=run&step=100&seq=9&pos=1", 404, "no prediction at position 1 of sequence 9"),
        ("candidates?run=run&step=7&seq=0&pos=1", 404, "has no step 7"),
        ("step?run=run&step=100&view=2", 400, "view must be 0 or 1"),
    ]:
        status, body = http_json(served, "/" + query)
        assert (status, message in body["error"]) == (code, True), (query, body)


def test_candidates_of_a_step_are_read_once_while_its_line_stays(served, monkeypatch):
    from seqviz_trackers.storage.jsonl import TrainingDataReader

    reads = []
    real = TrainingDataReader.read
    monkeypatch.setattr(TrainingDataReader, "read", lambda self, info: reads.append(info.step) or real(self, info))
    for pos in (0, 1, 2):
        status, body = http_json(served, f"/candidates?run=run&step=0&seq=0&pos={pos}")
        assert status == 200 and body["top_k"] == by_position(served.entries[0]["sequences"][0])[pos]["top_k"]
    assert reads == []  # each prediction read alone: the columns record maps the line's
    with open(served.path, "w", encoding="utf-8") as f:  # rewritten (same length): read anew, whole
        f.write(json.dumps({**served.entries[0], "sequences": served.entries[0]["sequences"][::-1]}) + "\n")
    for pos in (0, 1):
        status, body = http_json(served, f"/candidates?run=run&step=0&seq=0&pos={pos}")
        assert status == 200 and body["top_k"] == by_position(served.entries[0]["sequences"][-1])[pos]["top_k"]
    assert reads == [0]  # once


def test_dashboard_feed_pushes_the_view_and_the_root_feed_the_logged_entry(served):
    from websockets.sync.client import connect

    url = served.url.replace("http://", "ws://")
    with connect(url + "ws") as ws:
        while (msg := json.loads(ws.recv(timeout=10)))["type"] != "step":
            pass
        assert msg["entry"] == json.loads(json.dumps(step_view(served.entries[-1])))
    with connect(url) as ws:
        msg = json.loads(ws.recv(timeout=10))
        assert msg == {**served.entries[-1], "type": "training_update"}


def test_tensorboard_plugin_answers_the_view_and_candidates(tmp_path):
    from tb_helpers import entry as tb_entry, mirror_run, wsgi_app

    mirror_run(tmp_path / "run", [0, 1])
    client, _, _ = wsgi_app(tmp_path)
    logged = client.get("/data/plugin/seqviz/step?run=run&step=1").json
    assert logged["step"] == 1 and "predictions" in logged["sequences"][0]
    assert client.get("/data/plugin/seqviz/step?run=run&step=1&view=1").json == json.loads(json.dumps(step_view(logged)))
    pred = logged["sequences"][0]["predictions"][2]
    r = client.get(f"/data/plugin/seqviz/candidates?run=run&step=1&seq=0&pos={pred['position']}")
    assert r.status_code == 200 and r.json["top_k"] == pred["top_k"]
    assert client.get("/data/plugin/seqviz/candidates?run=run&step=1&seq=0&pos=999").status_code == 404
    assert tb_entry(1)["step"] == 1


# -- the served page -------------------------------------------------------------------------

@pytest.mark.browser
def test_served_page_gets_steps_without_candidates_and_fetches_them_on_click(page, served):
    requests = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: requests.append(payload)))
    page.goto(served.url)
    page.wait_for_selector(".tok", timeout=15000)
    page.wait_for_selector(".status.live", timeout=15000)
    # the step shown came without candidates (its view)
    held = page.evaluate("window.seqvizDashboard.state.entry.sequences[0].predictions.filter((p) => p.top_k).length")
    assert held == 0
    page.locator(".seq").nth(1).locator(".tok").nth(5).click()  # predicted at position 4
    detail = page.locator(".detail")
    detail.locator(".mini-col").nth(19).wait_for(timeout=15000)
    assert detail.locator(".mini-col").count() == 20 and detail.locator(".bar-row").count() == 5
    asked = [json.loads(r) for r in requests if '"candidates"' in r]
    assert [a["params"] for a in asked] == [{"run": "run", "step": 100, "seq": 1, "pos": 4}]
    pred = by_position(served.entries[-1]["sequences"][1])[4]
    titles = [detail.locator(".bar-row").nth(i).get_attribute("title") for i in range(5)]
    assert titles == [f"{c[1]} (id {c[0]}): p = {c[2]}" for c in pred["top_k"][:5]]
    ids = [c[0] for c in pred["top_k"]]
    if pred["target_token_id"] in ids:
        assert detail.locator(".mini-col").nth(ids.index(pred["target_token_id"])).get_attribute("class") == "mini-col hit"
    assert math.isclose(page.evaluate("window.seqvizDashboard.state.entry.sequences[1].predictions[4].top_k[0][2]"),
                        pred["top_k"][0][2])
    # shown again: asked once more (the server reads the step once: see the next test)
    page.locator(".seq").nth(1).locator(".tok").nth(6).click()
    page.locator(".seq").nth(1).locator(".tok").nth(5).click()
    detail.locator(".mini-col").nth(19).wait_for(timeout=15000)
    assert len([r for r in requests if '"candidates"' in r]) == 2
    assert not page.js_errors


def mutations(entry: dict, seed: int) -> list[dict]:
    """``entry`` with one prediction changed each time: a field left out, of another type,
    out of its range, a first candidate of another form: the bulk reading of the view
    (converter form) must then agree with the reading one prediction at a time."""
    import random

    rnd = random.Random(seed)
    odd_values = [None, True, False, -1, 0, 1, 2, 0.5, 1.5, -0.0, 10 ** 30, "1", [], {}, [1], (1, "a", 0.5), float("inf")]
    fields = ["position", "target_token_id", "target_token_str", "target_prob", "target_rank", "loss", "correct",
              "entropy", "top_k", "top_20"]
    out = []
    for _ in range(60):
        e = copy.deepcopy(entry)
        preds = e["sequences"][0]["predictions"]
        pred = preds[rnd.randrange(len(preds))]
        what = rnd.random()
        field = rnd.choice(fields)
        if what < 0.3:
            pred.pop(field, None)
        elif what < 0.8:
            pred[field] = rnd.choice(odd_values)
        else:
            first = pred["top_k"][0]
            pred["top_k"][0] = rnd.choice([[first[0], None, first[2]], [True, first[1], first[2]], first[:2],
                                           [first[0], first[1], 1], {"token_id": first[0], "token_str": "x", "prob": 0.1},
                                           (first[0], first[1], first[2]), [first[0], first[1], first[2], "extra"]])
        out.append(e)
    return out


def test_bulk_reading_of_the_view_is_the_reading_one_prediction_at_a_time():
    from seqviz_trackers.format import view as view_module

    base = [make_entry(3), learning_entry(100, 300), odd_entry(), seed_entry(150, 300, with_loss=True)]
    masked = make_entry(6)
    del masked["sequences"][0]["predictions"][2]["loss"]  # p = 0 in the converter: no loss logged
    masked["sequences"][0]["predictions"][2]["target_prob"] = 0.0
    base.append(masked)
    fast = 0
    for i, entry in enumerate(base + [m for j, b in enumerate(base[:2]) for m in mutations(b, j)]):
        for seq in entry["sequences"]:
            preds = view_module._predictions(seq)
            got = view_module._fast_columns(preds)
            if got is not None:
                fast += 1
                slow = view_module._slow_columns(preds)
                assert got == slow, i
                assert json.dumps(got) == json.dumps(slow), i  # the same types too (1.0 is not 1)
    assert fast > 20  # the converter's form is read in bulk, and most mutations too
    check_view(masked)


def test_seqviz_serve_answers_the_same_view_with_and_without_the_columns_file(tmp_path):
    """``seqviz serve`` reads a step's view from the columns file when it holds it; the
    same lines without a columns file (the original tool's files, ``columns=False``) are
    parsed: the answers are the same bytes."""
    import shutil
    import signal
    import subprocess

    from factories import HOSTILE
    from proc_helpers import cli_process
    from seqviz_trackers.storage.columns import SUFFIX

    cached, plain = tmp_path / "cached.jsonl", tmp_path / "plain.jsonl"
    entries = [learning_entry(step, 300) for step in (0, 100)] + [make_entry(200, [HOSTILE + " caf\u00e9 \U0001F600"])]
    entries.append(seed_entry(300, 300))  # the original form: bounded targets
    with TrainingDataWriter(cached) as w:
        for e in entries:
            w.write_step(e)
    shutil.copy(cached, plain)
    assert (tmp_path / ("cached.jsonl" + SUFFIX)).exists() and not (tmp_path / ("plain.jsonl" + SUFFIX)).exists()
    proc = cli_process("serve", "--logdir", str(tmp_path), "--port", "0", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    try:
        proc.stdout.readline()
        port = int(proc.stdout.readline().split()[1].rsplit(":", 1)[1].strip("/"))
        for e in entries:
            bodies = []
            for run in ("cached", "plain"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", f"/step?run={run}&step={e['step']}&view=1")
                resp = conn.getresponse()
                bodies.append((resp.status, resp.read()))
                conn.close()
            assert bodies[0] == bodies[1] and bodies[0][0] == 200
            assert json.loads(bodies[0][1]) == json.loads(json.dumps(step_view(e)))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
