"""The TensorBoard plugin against damaged log directories and hostile URLs, inside
TensorBoard's own WSGI app (the Python loader) on directories written by the mirror."""

from __future__ import annotations

import os

from tb_helpers import mirror_run, wsgi_app

from tb_plugin import plugin as plugin_module

P = "/data/plugin/seqviz"


def test_one_unreadable_run_leaves_the_tab_with_the_others(tmp_path):
    mirror_run(tmp_path / "good", [0, 1])
    mirror_run(tmp_path / "bad", [0, 1, 2])
    client, _, _ = wsgi_app(tmp_path)
    assert {r["run"] for r in client.get(f"{P}/runs").json["runs"]} == {"good", "bad"}
    asset = tmp_path / "bad" / "plugins" / "seqviz" / "steps.jsonl"
    asset.unlink()
    os.symlink(asset.name, asset)  # a symlink loop: unreadable even as root

    r = client.get(f"{P}/runs")
    assert r.status_code == 200
    assert r.json["runs"] == [{"run": "good", "num_steps": 2, "last_step": 1}]
    [problem] = r.json["problems"]
    assert problem["run"] == "bad" and "symbolic links" in problem["message"]
    assert client.get(f"{P}/step?run=good&step=1").json["step"] == 1
    r = client.get(f"{P}/steps?run=bad")
    assert r.status_code == 500 and "cannot be read" in r.json["error"]


def test_made_up_experiment_ids_keep_a_bounded_cache_and_share_readers(tmp_path):
    mirror_run(tmp_path / "a", range(20))
    mirror_run(tmp_path / "b", [0, 5])
    client, plugin, _ = wsgi_app(tmp_path)
    for n in range(40):
        r = client.get(f"/experiment/made-up-{n}{P}/steps?run=a")
        assert r.status_code == 200 and len(r.json["steps"]) == 20
        client.get(f"/experiment/made-up-{n}{P}/sequences?run=b")
    assert len(plugin._runs) <= plugin_module.MAX_EXPERIMENTS < 40
    assert len(plugin._readers) == 2  # one reader per asset file, whatever id asked

    # the real experiment (no id) and a recent one still answer, from the same readers
    assert client.get(f"{P}/runs").json["runs"] == [
        {"run": "a", "num_steps": 20, "last_step": 19}, {"run": "b", "num_steps": 2, "last_step": 5}]
    assert client.get(f"/experiment/made-up-39{P}/step?run=b&step=5").json["step"] == 5
    assert plugin.runs("").reader("a") is plugin.runs("made-up-39").reader("a")
    assert len(plugin._readers) == 2
