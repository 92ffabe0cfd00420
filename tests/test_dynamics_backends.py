"""The training-dynamics routes served for real: by ``seqviz serve`` over HTTP and by the
TensorBoard plugin (TensorBoard's own WSGI app over a directory written by the mirror)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from test_dynamics import STEPS, synthetic_entry, write_synthetic

from seqviz_trackers import SeqVizLogger
from seqviz_trackers.serve.server import start_in_thread


def _check_known_events(get):
    """``get(route_with_query) -> (status, json)``: the synthetic run's known events."""
    status, body = get("learned")
    assert status == 200, body
    assert [s["learned_at"] for s in body["sequences"]] == [[20, None, None, 0, None], [40, None]]
    assert body["forgetting"]["total"] == 2
    status, body = get("series", seq=0, pos=1)
    assert status == 200 and body["steps"] == STEPS and body["forgotten"] == [{"step": 30, "since": 10, "last_top1": 20}]
    status, body = get("diff", a=10, b=20)
    assert status == 200 and [r["pos"] for r in body["learned"]] == [0]
    assert body["divergence"]["name"] == "js_topk_other"
    status, body = get("sequences", step=30)
    assert status == 200 and body["at_step"] == {"step": 30, "seq": [0]}
    status, body = get("diff", a=10, b=25)
    assert status == 404 and "no step 25" in body["error"]


def test_seqviz_serve_answers_the_dynamics_routes(tmp_path):
    path = write_synthetic(tmp_path / "dyn.jsonl")
    handle = start_in_thread(file=path, port=0, interval=0.1)
    try:
        def get(route, **params):
            query = "&".join(f"{k}={v}" for k, v in {"run": "dyn", **params}.items())
            try:
                with urllib.request.urlopen(f"{handle.url.rstrip('/')}/{route}?{query}", timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        _check_known_events(get)
    finally:
        handle.stop()


def test_tensorboard_plugin_answers_the_dynamics_routes(tmp_path):
    pytest.importorskip("tensorboard")
    from tb_helpers import wsgi_app

    with SeqVizLogger(tensorboard=tmp_path / "dyn") as logger:
        for step in STEPS:
            logger.log_step(synthetic_entry(step))
    client, _, _ = wsgi_app(tmp_path)

    def get(route, **params):
        r = client.get(f"/data/plugin/seqviz/{route}", query_string={"run": "dyn", **params})
        return r.status_code, r.json

    _check_known_events(get)
