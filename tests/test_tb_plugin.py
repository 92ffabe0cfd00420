"""The seqviz plugin inside TensorBoard's own WSGI app, on log directories written by the mirror."""

from __future__ import annotations

import os
import threading
import zlib

import fsspec
import pytest

from tb_helpers import entry, mirror_run, python_loader, wsgi_app
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from seqviz_trackers.serve import api
from seqviz_trackers.storage.jsonl import TrainingDataReader, encode_entry
from tb_plugin import asset_path
from tb_plugin.plugin import GFileFiles, SeqVizPlugin, SeqVizPluginLoader

from factories import HOSTILE

P = "/data/plugin/seqviz"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Three runs: 150 steps, a nested one, and a run with scalars but no seqviz data."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("logs")
    mirror_run(root / "big", range(150))
    mirror_run(root / "sweep" / "lr_0.1", [0, 10, 20], texts=[HOSTILE + " and more text"])
    w = SummaryWriter(log_dir=str(root / "plain"))
    w.add_scalar("loss", 1.0, 0)
    w.close()
    return root


@pytest.fixture(scope="module")
def app(logdir):
    return wsgi_app(logdir)


def test_tab_is_listed_with_its_es_module(app):
    client, _, _ = app
    listing = client.get("/data/plugins_listing").json["seqviz"]
    assert listing["enabled"] is True
    assert listing["tab_name"] == "seqviz"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{P}/index.js"}


def test_runs_lists_only_runs_with_seqviz_data_nested_included(app):
    client, _, _ = app
    r = client.get(f"{P}/runs")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.json == {"runs": [
        {"run": "big", "num_steps": 150, "last_step": 149},
        {"run": "sweep/lr_0.1", "num_steps": 3, "last_step": 20},
    ]}


def test_logdir_pointing_at_the_run_itself(tmp_path):
    mirror_run(tmp_path / "run", [0, 1])
    client, _, _ = wsgi_app(tmp_path / "run")
    assert client.get(f"{P}/runs").json == {"runs": [{"run": ".", "num_steps": 2, "last_step": 1}]}
    assert client.get(f"{P}/step?run=.&step=1").json["step"] == 1


def test_every_step_is_served_although_tensorboard_samples_the_summaries(app):
    client, _, multiplexer = app
    # TensorBoard's own Python loader kept 10 of the 150 marker summaries...
    assert len(multiplexer.Tensors("big", "seqviz")) == 10
    # ...the plugin reads the assets, which are not sampled.
    steps = client.get(f"{P}/steps?run=big").json
    assert [s["step"] for s in steps["steps"]] == list(range(150))
    assert steps["steps"][42]["loss"] == pytest.approx(5.0 - 0.42)
    for n in (0, 77, 149):
        e = client.get(f"{P}/step?run=big&step={n}").json
        assert e["step"] == n and e["sequences"][0]["tokens"]


def test_hostile_tokens_come_back_as_plain_json_strings(app):
    client, _, _ = app
    r = client.get(f"{P}/step?run=sweep/lr_0.1&step=20")
    assert r.status_code == 200
    text = "".join(r.json["sequences"][0]["tokens"])
    assert HOSTILE in text
    assert r.mimetype == "application/json" and r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("query, status, message", [
    ("steps", 400, "missing query parameter 'run'"),
    ("steps?run=nope", 404, "unknown run 'nope'"),
    ("steps?run=plain", 404, "unknown run 'plain'"),
    ("step?run=big&step=abc", 400, "step must be a non-negative integer, got 'abc'"),
    ("step?run=big&step=-3", 400, "non-negative integer"),
    ("step?run=big", 400, "non-negative integer"),
    ("step?run=big&step=150", 404, "run 'big' has no step 150"),
    ("step?run=../../etc&step=1", 404, "unknown run"),
])
def test_bad_requests_answer_a_clear_json_error(app, query, status, message):
    client, _, _ = app
    r = client.get(f"{P}/{query}")
    assert r.status_code == status
    assert r.mimetype == "application/json"
    assert message in r.json["error"]


def test_every_route_in_the_shared_table_is_served(app, monkeypatch):
    client, _, _ = app
    for name in api.ROUTES:  # none falls through to the static-file handler
        r = client.get(f"{P}/{name}?run=big&step=1")
        assert r.mimetype == "application/json"
        assert "not found: " not in r.get_data(as_text=True), name

    # A route added to the shared table later is served without touching the plugin.
    monkeypatch.setitem(api.ROUTES, "echo", lambda runs, q: {"runs": runs.names(), "q": q})
    client2, _, _ = wsgi_app(app[1]._logdir)
    r = client2.get(f"{P}/echo?x=1")
    assert r.status_code == 200
    assert r.json == {"runs": ["big", "sweep/lr_0.1"], "q": {"x": "1"}}


def test_corrupt_asset_line_is_a_4xx_and_reported(tmp_path):
    mirror_run(tmp_path / "r", range(3))
    path = asset_path(tmp_path / "r")
    lines = path.read_bytes().splitlines(keepends=True)
    # step 1's line: keep the header (so it is indexed) but break the JSON after it
    lines[1] = lines[1][:200] + b"\xff garbage\n"
    lines.insert(2, b"this is not json\n")
    path.write_bytes(b"".join(lines))
    client, _, _ = wsgi_app(tmp_path)

    steps = client.get(f"{P}/steps?run=r").json
    assert [s["step"] for s in steps["steps"]] == [0, 1, 2]
    assert steps["problems"] == [{"line": 3, "message": steps["problems"][0]["message"]}]
    assert "not valid JSON" in steps["problems"][0]["message"]

    r = client.get(f"{P}/step?run=r&step=1")
    assert r.status_code == 404
    assert "step 1 of run 'r' cannot be read" in r.json["error"] and "not valid JSON" in r.json["error"]
    assert client.get(f"{P}/step?run=r&step=2").json["step"] == 2


def test_steps_logged_while_open_appear_and_runs_object_is_kept(tmp_path):
    mirror_run(tmp_path / "live", range(2))
    client, plugin, _ = wsgi_app(tmp_path)
    assert client.get(f"{P}/runs").json["runs"] == [{"run": "live", "num_steps": 2, "last_step": 1}]
    runs = plugin.runs("")
    reader = runs.reader("live")

    mirror_run(tmp_path / "live", range(2, 5))  # training goes on; no TensorBoard reload
    assert [s["step"] for s in client.get(f"{P}/steps?run=live").json["steps"]] == [0, 1, 2, 3, 4]
    assert client.get(f"{P}/step?run=live&step=4").json["step"] == 4
    assert plugin.runs("") is runs and runs.reader("live") is reader, "index kept across requests"


def test_steps_after_serves_new_steps_and_notices_a_rewritten_asset(tmp_path):
    mirror_run(tmp_path / "live", range(3))
    client, _, _ = wsgi_app(tmp_path)
    full = client.get(f"{P}/steps?run=live").json
    assert full["num_steps"] == 3 and [s["step"] for s in full["steps"]] == [0, 1, 2]

    mirror_run(tmp_path / "live", range(3, 6))
    new = client.get(f"{P}/steps?run=live&after=2").json
    assert [s["step"] for s in new["steps"]] == [3, 4, 5] and new["after"] == 2
    assert new["num_steps"] == 6 and new["version"] == full["version"]
    assert client.get(f"{P}/steps?run=live&after=5").json["steps"] == []
    r = client.get(f"{P}/steps?run=live&after=last")
    assert r.status_code == 400 and "after must be an integer" in r.json["error"]

    path = asset_path(tmp_path / "live")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))  # cut back to steps 0, 1
    cut = client.get(f"{P}/steps?run=live&after=5").json
    assert cut["steps"] == [] and cut["num_steps"] == 2 and cut["version"] != full["version"]


# -- static files ------------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    web = tmp_path / "web"
    (web / "views").mkdir(parents=True)
    (web / "index.js").write_text("export function render() { document.body.textContent = 'hi'; }\n")
    (web / "style.css").write_text("body { color: red }\n")
    (web / "views" / "grid.js").write_text("export const x = 1;\n")
    (web / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (web / "data.json").write_text('{"a": 1}')
    (web / "page.html").write_text("<!doctype html><p>x</p>")
    (web / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", web / "link.txt")
    logs = tmp_path / "logs"
    mirror_run(logs / "r", [0])
    client, _, _ = wsgi_app(logs, web_dir=web)
    return client


@pytest.mark.parametrize("name, content_type, body", [
    ("index.js", "text/javascript; charset=utf-8", b"export function render()"),
    ("style.css", "text/css; charset=utf-8", b"body"),
    ("views/grid.js", "text/javascript; charset=utf-8", b"export const x"),
    ("icon.svg", "image/svg+xml; charset=utf-8", b"<svg"),
    ("data.json", "application/json", b'{"a": 1}'),
    ("page.html", "text/html; charset=utf-8", b"<!doctype html>"),
])
def test_static_files_with_their_content_types(web, name, content_type, body):
    r = web.get(f"{P}/{name}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == content_type
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.get_data().startswith(body)
    if name.endswith(".html"):
        assert "script-src" in r.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    "../outside.txt", "views/../../outside.txt", "%2e%2e/outside.txt", "..%2Foutside.txt",
    "link.txt", ".secret", "views", "missing.js", "views/..\\..\\outside.txt", "/etc/passwd",
])
def test_static_guard_refuses_paths_outside_the_web_folder(web, path):
    r = web.get(f"{P}/{path}")
    assert r.status_code == 404
    assert r.mimetype == "application/json" and r.json["error"].startswith("not found")
    assert b"outside" not in r.get_data().replace(b"outside.txt", b"")


def test_served_under_path_prefix_and_experiment_urls(logdir, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.js").write_text("export function render() {}\n")
    client, _, _ = wsgi_app(logdir, path_prefix="/tb", web_dir=web)
    assert client.get(f"/tb{P}/index.js").get_data().startswith(b"export function render")
    assert client.get(f"/tb{P}/runs").json["runs"][0]["run"] == "big"
    assert client.get(f"/tb/experiment/abc{P}/index.js").status_code == 200
    assert client.get(f"/tb/experiment/abc{P}/steps?run=sweep/lr_0.1").json["run"] == "sweep/lr_0.1"


def test_real_dashboard_folder_is_served_when_present(app):
    client, plugin, _ = app
    if not os.path.exists(os.path.join(plugin._web_dir, "index.js")):
        pytest.skip("seqviz_trackers/web/index.js not built yet")
    r = client.get(f"{P}/index.js")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert b"render" in r.get_data()


# -- TensorBoard's file layer (remote log directories) -----------------------------

def test_gfile_files_read_like_local_files(logdir):
    path = str(asset_path(logdir / "big"))
    local, remote = TrainingDataReader(path), TrainingDataReader(path, files=GFileFiles())
    assert [s.step for s in remote.steps] == [s.step for s in local.steps] == list(range(150))
    assert remote.get_step(149) == local.get_step(149)
    assert GFileFiles().stat(path + ".missing") is None


def test_plugin_serves_a_remote_log_directory_through_tensorboards_file_layer(logdir):
    """An fsspec ``memory://`` log directory stands in for s3:// / gs:// ones."""
    fs = fsspec.filesystem("memory")
    root = "memory://seqviz-test-logs"
    fs.put(str(logdir / "sweep"), "/seqviz-test-logs/sweep", recursive=True)
    # a torn last line, as a live writer leaves it
    with fs.open("/seqviz-test-logs/sweep/lr_0.1/plugins/seqviz/steps.jsonl", "ab") as f:
        f.write(encode_entry(entry(30))[:100])
    try:
        _, provider = python_loader(root)
        plugin = SeqVizPluginLoader().load(base_plugin.TBContext(logdir=root, data_provider=provider))
        assert isinstance(plugin, SeqVizPlugin) and isinstance(plugin._files, GFileFiles)
        client = Client(application.TensorBoardWSGI([plugin], data_provider=provider))
        assert client.get(f"{P}/runs").json == {"runs": [{"run": "sweep/lr_0.1", "num_steps": 3, "last_step": 20}]}
        assert client.get(f"{P}/step?run=sweep/lr_0.1&step=10").json["step"] == 10
    finally:
        fs.rm("/seqviz-test-logs", recursive=True)


def test_a_step_is_answered_while_a_dynamics_route_is_still_at_work(tmp_path, monkeypatch):
    """A step change is not queued behind a dynamics build (the tab's first tracks request,
    seconds at 16 x 4,096): one quick route and one other are answered beside each other."""
    mirror_run(tmp_path / "run", [0, 1])
    client, _, _ = wsgi_app(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def slow(runs, query):
        inside.set()
        return {"released": release.wait(60)}

    monkeypatch.setitem(api.ROUTES, "learned", slow)
    answers = {}
    worker = threading.Thread(target=lambda: answers.update(slow=client.get(f"{P}/learned?run=run")))
    worker.start()
    try:
        assert inside.wait(60)
        step = client.get(f"{P}/step?run=run&step=1")
        assert step.status_code == 200 and step.json["step"] == 1
        assert worker.is_alive()  # the dynamics route is still at work
    finally:
        release.set()
        worker.join(60)
    assert answers["slow"].json == {"released": True}


def test_a_stored_step_view_is_sent_as_the_columns_file_holds_it_to_a_browser_that_takes_deflate(tmp_path):
    mirror_run(tmp_path / "run", [0, 1], texts=[HOSTILE + " and more text"])
    client, _, _ = wsgi_app(tmp_path)
    url = f"{P}/step?run=run&step=1&view=1"
    plain = client.get(url)  # no Accept-Encoding: TensorBoard's own answer
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    gzipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"
    browser = client.get(url, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert browser.status_code == 200 and browser.headers["Content-Encoding"] == "deflate"
    assert browser.mimetype == "application/json"
    assert zlib.decompress(browser.get_data()) == plain.get_data()
    assert plain.json["step"] == 1 and plain.json["sequences"][0]["view"]
    refused = client.get(url, headers={"Accept-Encoding": "gzip, deflate;q=0"})
    assert refused.headers["Content-Encoding"] == "gzip"
    entry = client.get(f"{P}/step?run=run&step=1", headers={"Accept-Encoding": "deflate"})  # parsed, not stored
    assert "Content-Encoding" not in entry.headers and entry.json["step"] == 1
