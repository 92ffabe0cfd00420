"""Two runs compared token by token: Python, the ``compare_runs`` route (route table, seqviz
serve, TensorBoard plugin) and ``seqviz compare-runs``, on synthetic runs whose learned-at
steps are known, including probes that do not match."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from seqviz_trackers import TrainingDataReader, TrainingDataWriter
from seqviz_trackers.cli import main as cli_main_fn
from seqviz_trackers.dynamics import Dynamics, compare_runs_json, dynamics_for
from seqviz_trackers.dynamics.runs_compare import _run_at
from seqviz_trackers.serve.api import ROUTES, Runs, handle
from seqviz_trackers.serve.server import start_in_thread
from test_dynamics import STEPS, synthetic_entry, write_synthetic
from runs_compare_helpers import _seq, mirror_pair, run_entry, write_pair, write_run


@pytest.fixture
def runs_dir(tmp_path):
    write_pair(tmp_path)
    return tmp_path


def _readers(runs_dir):
    return TrainingDataReader(runs_dir / "a.jsonl"), TrainingDataReader(runs_dir / "b.jsonl")


def test_lists_and_verdict_at_the_last_step_of_a(runs_dir):
    out = compare_runs_json(*_readers(runs_dir), names=("a", "b"))
    assert out["step"] == 50
    assert out["a"] == {"run": "a", "step": 50, "exact": True, "num_steps": 6, "first_step": 0, "last_step": 50}
    assert out["b"]["step"] == 45 and out["b"]["exact"] is False  # B's nearest logged step at or before 50

    def where(name):
        return [(r["pos"], r["learned_a"], r["learned_b"], r["lead"]) for r in out[name]]

    assert where("earlier_in_a") == [(0, 10, 30, 20)]
    assert where("earlier_in_b") == [(1, 30, 15, -15)]
    assert where("only_in_a") == [(3, 0, None, None)]
    assert where("only_in_b") == [(2, None, 15, None)]
    gaps = out["biggest_gap"]
    assert {r["pos"] for r in gaps[:2]} == {2, 3} and all(abs(r["delta_logp"]) < 1e-3 for r in gaps[2:])
    assert next(r for r in gaps if r["pos"] == 2)["delta_logp"] > 3   # B predicts it, A does not
    assert next(r for r in gaps if r["pos"] == 3)["delta_logp"] < -3
    row = out["only_in_b"][0]
    assert (row["name"], row["index_a"], row["token"], row["target"], row["rank_a"], row["rank_b"]) == \
        ("probe", 0, "<id 3>", "<id 4>", 16, 1)
    assert row["context"] == "<id 1><id 2><id 3>"

    by_name = {(p["name"], p["status"]): p for p in out["probes"]}
    probe = by_name[("probe", "matched")]
    assert probe["verdict"] == "B ahead on 2 tokens, A on 2, 1 learned at the same step, 1 learned by neither"
    assert (probe["compared"], probe["a_ahead"], probe["b_ahead"], probe["same"], probe["neither"]) == (6, 2, 2, 1, 1)
    text = by_name[("text", "different_text")]
    assert text["reason"] == "different token ids: 3 vs 3 tokens, first difference at token 2"
    assert text["compared"] == 0 and text["verdict"] is None
    assert by_name[("extra-a", "only_a")]["seq_b"] is None
    assert by_name[(None, "only_b")]["seq_a"] is None
    assert out["summary"] == {"matched": 1, "different_text": 1, "only_a": 1, "only_b": 1, "compared": 6,
                              "a_ahead": 2, "b_ahead": 2, "same": 1, "neither": 1,
                              "mean_delta_logp": out["summary"]["mean_delta_logp"], "verdict": probe["verdict"]}
    # no row ever comes from the mismatched probes
    assert {r["name"] for name in ("earlier_in_a", "earlier_in_b", "only_in_a", "only_in_b", "biggest_gap")
            for r in out[name]} == {"probe"}


def test_learned_at_is_taken_as_of_each_runs_aligned_step(runs_dir):
    out = compare_runs_json(*_readers(runs_dir), 20, names=("a", "b"), per_token=True)
    assert (out["a"]["step"], out["b"]["step"], out["b"]["exact"]) == (20, 15, False)
    assert [(r["pos"], r["learned_a"]) for r in out["only_in_a"]] == [(3, 0), (0, 10)]
    assert [(r["pos"], r["learned_b"]) for r in out["only_in_b"]] == [(1, 15), (2, 15)]
    assert out["earlier_in_a"] == out["earlier_in_b"] == []
    # position 4 of run A was top-1 at step 10 only: learned as of step 10, not as of step 20
    at10 = compare_runs_json(*_readers(runs_dir), 10, names=("a", "b"))
    assert (4, 10) in [(r["pos"], r["learned_a"]) for r in at10["only_in_a"]]
    (part,) = out["per_token"]
    assert (part["seq_a"], part["index_a"], part["positions"]) == (0, 0, [0, 1, 2, 3, 4, 5])
    assert part["delta_logp"][1] > 3 and part["delta_logp"][0] < -3  # at 20 / 15: B has pos 1, A has pos 0


def test_learned_as_of_a_step_equals_a_dynamics_built_up_to_that_step(tmp_path):
    """The vectorised learned-at of a step equals what Dynamics computes incrementally
    (absent steps, forgetting and re-learning included)."""
    reader = TrainingDataReader(write_synthetic(tmp_path / "run.jsonl"))
    for i, step in enumerate(STEPS):
        dyn = Dynamics()
        for s in STEPS[:i + 1]:
            dyn.add_entry(synthetic_entry(s))
        at = _run_at(reader, "r", step)
        for key, track in dyn.tracks_by_key().items():
            assert at.tracks[key].learned_at().tolist() == track.since1.tolist(), (step, key)
    assert _run_at(reader, "r", 35).step == 30


def test_a_run_compared_with_itself_is_all_even(tmp_path):
    reader = TrainingDataReader(write_synthetic(tmp_path / "run.jsonl"))
    out = compare_runs_json(reader, reader, per_token=True)
    assert out["summary"]["a_ahead"] == out["summary"]["b_ahead"] == 0
    assert out["summary"]["same"] == int(sum((dynamics_for(reader).learned_at(s) >= 0).sum() for s in (0, 1)))
    assert all(d == 0 for part in out["per_token"] for d in part["delta_logp"])


def test_route_in_the_table_and_its_errors(runs_dir):
    assert "compare_runs" in ROUTES
    runs = Runs()
    runs.add("a", runs_dir / "a.jsonl")
    runs.add("b", runs_dir / "b.jsonl")
    status, body = handle(runs, "compare_runs", {"a": "a", "b": "b", "step": "30", "tokens": "1", "limit": "1"})
    assert status == 200 and (body["run"], body["vs"], body["step"]) == ("a", "b", 30)
    assert (body["a"]["step"], body["b"]["step"], body["b"]["exact"]) == (30, 30, True)
    assert all(len(body[k]) <= 1 for k in ("earlier_in_a", "earlier_in_b", "only_in_a", "only_in_b", "biggest_gap"))
    assert body["per_token"][0]["index_a"] == 0
    json.dumps(body, allow_nan=False)
    assert handle(runs, "compare_runs", {"a": "a"}) == (400, {"error": "missing query parameter 'b' (the run to compare with)"})
    assert handle(runs, "compare_runs", {"a": "a", "b": "nope"})[0] == 404
    assert handle(runs, "compare_runs", {"a": "a", "b": "b", "step": "x"})[0] == 400
    runs.add("late", write_run(runs_dir / "late.jsonl", "b"))
    status, body = handle(runs, "compare_runs", {"a": "a", "b": "b", "step": "-1"})
    assert status == 400
    status, body = handle(runs, "compare_runs", {"a": "a", "b": "b", "step": "5"})
    assert status == 200 and body["b"]["step"] == 0


def test_no_step_at_or_before_is_a_404(tmp_path):
    path = tmp_path / "late.jsonl"
    with TrainingDataWriter(path) as w:
        w.write_step(run_entry(30, "b"))
    runs = Runs()
    runs.add("a", write_run(tmp_path / "a.jsonl", "a"))
    runs.add("late", path)
    status, body = handle(runs, "compare_runs", {"a": "a", "b": "late", "step": "20"})
    assert status == 404 and body["error"] == "run 'late' has no step at or before 20"


def test_served_by_seqviz_serve_and_the_tensorboard_plugin(runs_dir, tmp_path):
    h = start_in_thread(logdir=runs_dir, port=0, interval=0.1)
    try:
        with urllib.request.urlopen(f"{h.url.rstrip('/')}/compare_runs?a=a&b=b", timeout=30) as r:
            served = json.loads(r.read())
        try:
            urllib.request.urlopen(f"{h.url.rstrip('/')}/compare_runs?a=a&b=zzz", timeout=30)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        else:
            raise AssertionError("an unknown run must be a 404")
    finally:
        h.stop()
    assert served["summary"]["verdict"] == "B ahead on 2 tokens, A on 2, 1 learned at the same step, 1 learned by neither"

    pytest.importorskip("tensorboard")
    from tb_helpers import wsgi_app

    logs = tmp_path / "logs"
    mirror_pair(logs)
    client, _, _ = wsgi_app(logs)
    r = client.get("/data/plugin/seqviz/compare_runs", query_string={"a": "a", "b": "b"})
    assert r.status_code == 200, r.json
    assert {k: v for k, v in r.json.items() if k not in ("a", "b")} == \
        {k: v for k, v in served.items() if k not in ("a", "b")}


# -- the command line ------------------------------------------------------------------------
def test_cli_prints_verdicts_lists_and_mismatches(runs_dir, capsys):
    a, b = str(runs_dir / "a.jsonl"), str(runs_dir / "b.jsonl")
    assert cli_main_fn(["compare-runs", a, b]) == 0
    out = capsys.readouterr().out
    assert f"A = {a}" in out and f"B = {b}" in out
    assert "step 50: A at step 50, B at step 45 (its nearest logged step at or before 50)" in out
    assert "probe: B ahead on 2 tokens, A on 2, 1 learned at the same step, 1 learned by neither" in out
    assert "text: not compared: different token ids: 3 vs 3 tokens, first difference at token 2" in out
    assert "extra-a: only in A" in out
    for title in ("Learned earlier in A", "Learned earlier in B", "Learned only in A", "Learned only in B",
                  "Biggest gap at this step"):
        assert title in out
    assert cli_main_fn(["compare-runs", a, b, "--step", "20", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["a"]["step"], body["b"]["step"]) == (20, 15)


def test_cli_errors(runs_dir, tmp_path, capsys):
    a = str(runs_dir / "a.jsonl")
    assert cli_main_fn(["compare-runs", a, str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"seqviz compare-runs: {tmp_path / 'missing.jsonl'}: no such file")
    late = tmp_path / "late.jsonl"
    with TrainingDataWriter(late) as w:
        w.write_step(run_entry(30, "b"))
    assert cli_main_fn(["compare-runs", a, str(late), "--step", "20"]) == 2
    assert "seqviz compare-runs: run 'B' has no step at or before 20" in capsys.readouterr().err
    # nothing in common: exit 1, and why
    other = tmp_path / "other.jsonl"
    with TrainingDataWriter(other) as w:
        w.write_step({"step": 0, "sequences": [_seq([9, 9, 9], [True, True], "else", 0)]})
    assert cli_main_fn(["compare-runs", a, str(other)]) == 1
    captured = capsys.readouterr()
    assert "seqviz compare-runs: no probe of A matches one of B" in captured.err
    assert "probe: only in A" in captured.out


def test_learned_at_rows_are_numpy_free_json(runs_dir):
    out = compare_runs_json(*_readers(runs_dir), per_token=True)
    for name in ("earlier_in_a", "only_in_b", "biggest_gap"):
        for r in out[name]:
            assert all(not isinstance(v, np.generic) for v in r.values())
    json.dumps(out, allow_nan=False)


# -- two real demo runs ----------------------------------------------------------------------
DEMO_STEPS = 60  # about a minute each on a CPU


@pytest.mark.slow
def test_two_real_demo_runs_with_other_seeds_and_learning_rates(tmp_path):
    """Two tiny GPT-2 runs of ``seqviz demo`` (seed 1 at the default learning rate, seed 2 at
    2e-3): the same probes in both, so every probe matches and gets a verdict."""
    pytest.importorskip("transformers")
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    args = {"a": ["--seed", "1"], "b": ["--seed", "2", "--lr", "2e-3"]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "seqviz_trackers.cli", "demo", "--out", str(tmp_path / name),
                                     "--steps", str(DEMO_STEPS), "--no-wandb", *extra], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, extra in args.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    a, b = (tmp_path / name / "seqviz.jsonl" for name in ("a", "b"))

    proc = subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "compare-runs", str(a), str(b)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"step {DEMO_STEPS}: A at step {DEMO_STEPS}, B at step {DEMO_STEPS}\n" in text
    assert "probes: 4 matched, 0 with different text, 0 only in A, 0 only in B" in text
    verdicts = re.findall(r"^  (eval\[\d\]): (B ahead on \d+ tokens?, A on \d+(?:, \d+ learned at the same step)?, "
                          r"\d+ learned by neither)$", text, re.M)
    assert [name for name, _ in verdicts] == ["eval[0]", "eval[1]", "eval[2]", "eval[3]"], text

    h = start_in_thread(logdir=tmp_path, port=0)
    try:
        with urllib.request.urlopen(f"{h.url.rstrip('/')}/compare_runs?a=a/seqviz&b=b/seqviz&tokens=1", timeout=60) as r:
            body = json.loads(r.read())
    finally:
        h.stop()
    assert (body["a"]["step"], body["b"]["step"], body["b"]["exact"]) == (DEMO_STEPS, DEMO_STEPS, True)
    probes = body["probes"]
    assert [p["status"] for p in probes] == ["matched"] * 4
    assert [(p["name"], p["verdict"]) for p in probes] == verdicts
    for p in probes:  # every predicted token compared, each counted once
        assert p["compared"] == p["a_ahead"] + p["b_ahead"] + p["same"] + p["neither"] > 10
    assert body["summary"]["compared"] == sum(p["compared"] for p in probes)
    assert len(body["per_token"]) == 4 and body["biggest_gap"]
    assert all(r["delta_logp"] is not None for r in body["biggest_gap"])
