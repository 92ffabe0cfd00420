"""Training dynamics: series, learned-when, forgetting, step comparison; Python API, routes and CLI."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from seqviz_trackers import TrainingDataReader, TrainingDataWriter, tensor_to_training_entry
from seqviz_trackers.serve.api import Runs, handle
from seqviz_trackers.cli import main as cli_main
from seqviz_trackers.dynamics import (DIVERGENCE, Dynamics, compare, diff_json, dynamics_for, js_topk_other,
                                      learned_json, series_json)
from seqviz_trackers.dynamics.compare import _divergences
from seqviz_trackers.format.entry import candidates, columns

V = 16
STEPS = [0, 10, 20, 30, 40, 50]
PROBE_IDS = [1, 2, 3, 4, 5, 6]  # positions 0..4 predict ids 2..6
OTHER_IDS = [7, 8, 9]           # positions 0..1 predict ids 8, 9
TOP1, RANK2, FAR = 5.0, 1.0, -1.0  # target logit; the distractor (id 0) has 2, every other id 0


def _probe_logits(step: int) -> list[float]:
    """Known story of the probe's targets, by position:
    0: top-1 from step 20 on (learned at 20)
    1: top-1 at steps 10 and 20, lost at 30 (a forgetting event), never again
    2: rank 2 from step 30 on (top-5 from 30, never top-1)
    3: top-1 at every step (learned at 0)
    4: never near the top
    """
    return [TOP1 if step >= 20 else FAR,
            TOP1 if step in (10, 20) else FAR,
            RANK2 if step >= 30 else FAR,
            TOP1,
            FAR]


def _other_logits(step: int) -> list[float]:
    """The second sequence is logged at steps 0, 10, 40, 50 only.
    0: top-1 at 40 and 50 (learned at 40); 1: top-1 at 10, lost at 40."""
    return [TOP1 if step >= 40 else FAR, TOP1 if step == 10 else FAR]


def _logits(ids: list[int], target_logits: list[float]) -> torch.Tensor:
    x = torch.zeros(1, len(ids), V)
    x[0, :, 0] = 2.0
    for pos, value in enumerate(target_logits):
        x[0, pos, ids[pos + 1]] = value
    return x


def synthetic_entry(step: int) -> dict:
    entry = tensor_to_training_entry(_logits(PROBE_IDS, _probe_logits(step)), torch.tensor([PROBE_IDS]), None,
                                     step=step, names=["probe"], timestamp=1000.0 + step)
    if step not in (20, 30):
        other = tensor_to_training_entry(_logits(OTHER_IDS, _other_logits(step)), torch.tensor([OTHER_IDS]), None,
                                         step=step, names=["other"])
        entry["sequences"] += other["sequences"]
    return entry


def write_synthetic(path, steps=STEPS):
    with TrainingDataWriter(path) as w:
        for step in steps:
            w.write_step(synthetic_entry(step))
    return path


@pytest.fixture
def run_file(tmp_path):
    return write_synthetic(tmp_path / "run.jsonl")


# -- Python API -----------------------------------------------------------------------------------
def test_series_hold_every_logged_step_with_absent_steps_left_out():
    dyn = Dynamics()
    for step in STEPS:
        dyn.add_entry(synthetic_entry(step))
    probe, other = dyn.tracks
    assert (probe.name, other.name) == ("probe", "other")
    assert probe.steps[:probe.n].tolist() == STEPS
    assert other.steps[:other.n].tolist() == [0, 10, 40, 50]  # absent at 20 and 30
    assert dyn.step_seqs == [[0, 1], [0, 1], [0], [0], [0, 1], [0, 1]]
    ranks0 = probe.rank[:probe.n, 0].tolist()
    assert ranks0 == [16, 16, 1, 1, 1, 1]
    assert probe.rank[:probe.n, 2].tolist() == [16, 16, 16, 2, 2, 2]
    assert probe.top1[:probe.n, 1].tolist() == [0, 3, 3, 0, 0, 0]  # id 3 is the target of position 1
    p = probe.prob[:probe.n, 0]
    assert p[0] < 0.02 and p[-1] > 0.6
    assert np.allclose(probe.loss[:probe.n, 0], -np.log(p), rtol=1e-3)
    assert (probe.entropy[:probe.n, :5] > 0).all()


def test_learned_at_top1_and_top5_and_forgetting_events():
    dyn = Dynamics()
    for step in STEPS:
        dyn.add_entry(synthetic_entry(step))
    assert dyn.learned_at(0).tolist() == [20, -1, -1, 0, -1]
    assert dyn.learned_at(0, top=5).tolist() == [20, -1, 30, 0, -1]
    assert dyn.learned_at(1).tolist() == [40, -1]
    # (seq, pos, step lost, top-1 since, last step at top-1): the other sequence was absent at 20 and 30
    assert dyn.events().tolist() == [[0, 1, 30, 10, 20], [1, 1, 40, 10, 10]]
    per = dyn.per_step()
    assert per["steps"].tolist() == STEPS
    assert per["gained"].tolist() == [1, 2, 1, 0, 1, 0]
    assert per["forgotten"].tolist() == [0, 0, 0, 1, 1, 0]
    assert per["learned"].tolist() == [1, 0, 1, 0, 1, 0]


def test_relearned_token_gets_its_last_learned_at_step():
    ids = [1, 2]
    dyn = Dynamics()
    for step, v in zip(range(5), [TOP1, FAR, TOP1, TOP1, TOP1]):
        dyn.add_entry(tensor_to_training_entry(_logits(ids, [v]), torch.tensor([ids]), None, step=step))
    assert dyn.learned_at(0).tolist() == [2]
    assert dyn.events().tolist() == [[0, 0, 1, 0, 0]]
    assert dyn.tracks[0].times_forgotten.tolist() == [1]


def test_unnamed_sequences_are_known_by_their_token_ids():
    a, b = [1, 2, 3], [4, 5, 6]
    dyn = Dynamics()
    for step, order in [(0, [a, b]), (1, [b, a]), (2, [b])]:
        entry = {"step": step, "sequences": []}
        for ids in order:
            entry["sequences"] += tensor_to_training_entry(_logits(ids, [TOP1, FAR]), torch.tensor([ids]), None,
                                                           step=step)["sequences"]
        dyn.add_entry(entry)
    assert [t.token_ids for t in dyn.tracks] == [a, b]
    assert dyn.step_seqs == [[0, 1], [1, 0], [1]]
    assert dyn.tracks[0].steps[:dyn.tracks[0].n].tolist() == [0, 1]


def test_steps_must_increase():
    dyn = Dynamics()
    dyn.add_entry(synthetic_entry(10))
    with pytest.raises(ValueError, match="step 10 arrives after step 10"):
        dyn.add_entry(synthetic_entry(10))


def old_format_entry(step: int, target_in_top: bool) -> dict:
    """The original seq-viz format: no target_prob / rank / loss / token_ids / name, top_k + top_20."""
    cands = [{"token_id": 9, "token_str": " the", "prob": 0.5}, {"token_id": 3, "token_str": " be", "prob": 0.2}]
    if not target_in_top:
        cands = [{"token_id": 9, "token_str": " the", "prob": 0.5}, {"token_id": 4, "token_str": " a", "prob": 0.2}]
    return {"step": step, "sequences": [{"tokens": ["To", " be", " or"], "predictions": [
        {"position": 0, "target_token_id": 3, "target_token_str": " be", "top_k": cands[:1], "top_20": cands,
         "entropy": 1.5},
        {"position": 1, "target_token_id": 9, "target_token_str": " or", "top_k": cands, "entropy": 1.0},
    ]}]}


def test_old_files_without_prob_or_rank_are_read_from_candidates_or_unknown():
    cols = columns(old_format_entry(0, True)["sequences"][0])
    assert cols.prob.tolist() == [0.2, 0.5] and cols.rank.tolist() == [2, 1]
    assert np.allclose(cols.loss, [-math.log(0.2), -math.log(0.5)])
    cols = columns(old_format_entry(0, False)["sequences"][0])
    assert math.isnan(cols.prob[0]) and cols.rank[0] == 0 and math.isnan(cols.loss[0])
    dyn = Dynamics()
    for step, inside in [(0, False), (1, True)]:
        dyn.add_entry(old_format_entry(step, inside))
    assert dyn.learned_at(0).tolist() == [-1, 0]
    assert dyn.learned_at(0, top=5).tolist() == [1, 0]
    out = compare(old_format_entry(0, False), old_format_entry(1, True), per_token=True)
    assert out["summary"]["compared"] == 2
    per = out["per_token"][0]  # position 0: p and rank unknown at step 0; position 1: unchanged
    assert per["delta_logp"] == [None, 0.0] and per["delta_rank"] == [None, 0] and per["flip"] == [0, 0]
    assert out["improved"] == out["worsened"] == out["learned"] == []


def test_garbage_predictions_never_crash():
    seq = {"tokens": ["a", "b"], "predictions": [
        {"position": 0, "target_token_id": 1, "target_prob": None, "target_rank": "x", "entropy": 1, "top_k": []},
        {"position": 99, "target_token_id": 1, "entropy": 1, "top_k": [[1, "b", 1]]},  # outside the tokens
        "not a dict", {"position": -1}]}
    cols = columns(seq)
    assert cols.pos.tolist() == [0] and cols.top1.tolist() == [-1] and cols.rank.tolist() == [0]
    dyn = Dynamics()
    dyn.add_entry({"step": 0, "sequences": [seq, "junk"]})
    dyn.add_entry({"step": 1, "sequences": None})
    assert dyn.num_steps == 2 and len(dyn.tracks) == 1


def test_js_topk_other_divergence():
    a = [(1, "a", 0.7), (2, "b", 0.2)]
    assert js_topk_other(a, a) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports, no remaining mass: maximal, ln 2
    assert js_topk_other([(1, "a", 1.0)], [(2, "b", 1.0)]) == pytest.approx(math.log(2))
    # over {1, 2, other}: P = (.7, .2, .1), Q = (.2, .7, .1)
    p, q = np.array([.7, .2, .1]), np.array([.2, .7, .1])
    m = (p + q) / 2
    expected = 0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum()
    assert js_topk_other(a, [(2, "b", 0.7), (1, "a", 0.2)]) == pytest.approx(expected)
    # candidates as logged: [id, token, p] in the file, {"token_id", "token_str", "prob"} in the original format
    assert candidates({"top_k": [[2, "b", 0.7], {"token_id": 1, "token_str": "a", "prob": 0.2}, [3, "c"], "x"]}) == [
        (2, "b", 0.7), (1, "a", 0.2)]
    assert DIVERGENCE["name"] == "js_topk_other"


@pytest.mark.parametrize("k_a,k_b", [(20, 20), (20, 5), (1, 3)])
def test_vectorised_divergences_equal_the_definition(k_a, k_b):
    rng = np.random.default_rng(k_a * 100 + k_b)

    def preds(k: int) -> list[dict]:
        out = []
        for i in range(300):
            ids = rng.choice(40, k, replace=bool(i % 50 == 7))   # a few rows repeat an id
            probs = rng.dirichlet(np.ones(k + 1))[:k] * rng.choice([0.5, 1.0, 1.6])  # some sum past 1
            probs[rng.random(k) < 0.05] = 0.0
            if i % 61 == 3:
                probs[0] = -0.01                                    # clamped to 0, as by the definition
            out.append({"top_k": [[int(t), f"t{t}", float(q)] for t, q in zip(ids, probs)]})
        return out

    a, b = preds(k_a), preds(k_b)
    expected = [js_topk_other(candidates(x), candidates(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(_divergences(a, b), expected, rtol=1e-9, atol=1e-12)
    ragged = a[:5] + [{"top_k": a[5]["top_k"][:-1] or [[1, "x", 0.5], "junk"]}]   # not one shape: the slow path
    np.testing.assert_allclose(_divergences(ragged, b[:6]), expected[:5] + [
        js_topk_other(candidates(ragged[5]), candidates(b[5]))], rtol=1e-12)
    huge = a[:2] + [{"top_k": [[2 ** 70, "x", 0.5]] * k_a}]                      # an id past int64: the slow path
    assert np.isfinite(_divergences(huge, b[:3])).all()


def test_compare_two_steps():
    out = compare(synthetic_entry(10), synthetic_entry(20), limit=5, per_token=True)
    assert (out["a"], out["b"]) == (10, 20)
    assert out["divergence"]["name"] == "js_topk_other"
    assert out["sequences"] == [{"seq": 0, "name": "probe", "index_a": 0, "index_b": 0}]  # other absent at 20
    s = out["summary"]
    assert s["compared"] == 5 and s["wrong_to_right"] == 1 and s["right_to_wrong"] == 0
    learned = out["learned"]
    assert [(r["pos"], r["rank_a"], r["rank_b"], r["delta_rank"], r["flip"]) for r in learned] == [(0, 16, 1, -15, 1)]
    r = learned[0]
    assert r["delta_logp"] == pytest.approx(math.log(r["p_b"] / r["p_a"]), rel=1e-3) and r["delta_logp"] > 3.5
    assert r["target"] == "<id 2>" and r["context"] == "<id 1>" and r["top1_a"] == "<id 0>" and r["top1_b"] == "<id 2>"
    assert 0 < r["divergence"] <= math.log(2)
    assert out["forgotten"] == [] and [x["pos"] for x in out["improved"]] == [0]
    per = out["per_token"][0]
    assert per["positions"] == [0, 1, 2, 3, 4] and per["flip"] == [1, 0, 0, 0, 0]
    assert per["delta_rank"][0] == -15 and per["delta_logp"][3] == pytest.approx(0, abs=1e-3)

    out = compare(synthetic_entry(20), synthetic_entry(30))
    assert [(r["pos"], r["flip"]) for r in out["forgotten"]] == [(1, -1)]
    assert out["worsened"][0]["pos"] == 1  # the biggest loss increase first
    assert out["summary"]["right_to_wrong"] == 1
    assert "per_token" not in out


# -- per-reader state, incremental ----------------------------------------------------------------
@pytest.mark.parametrize("columns_file", [True, False], ids=["columns_file", "jsonl_only"])
def test_dynamics_for_reads_only_new_steps(tmp_path, monkeypatch, columns_file):
    path = write_synthetic(tmp_path / "run.jsonl", STEPS[:3])
    if not columns_file:
        os.remove(f"{path}.cols")
    reader = TrainingDataReader(path)
    reads = []
    real_read = reader.read
    monkeypatch.setattr(reader, "read", lambda info: reads.append(info.step) or real_read(info))
    dyn = dynamics_for(reader)
    assert dyn.num_steps == 3
    # With a columns file no line is parsed: a sequence's first step (its tokens and targets)
    # comes from the view its record holds.
    assert reads == ([] if columns_file else STEPS[:3])
    reads.clear()
    assert dynamics_for(reader) is dyn and reads == []
    with TrainingDataWriter(path, columns=columns_file) as w:
        for step in STEPS[3:]:
            w.write_step(synthetic_entry(step))
    assert dynamics_for(reader) is dyn
    assert reads == ([] if columns_file else STEPS[3:])
    assert dyn.learned_at(0).tolist() == [20, -1, -1, 0, -1]
    assert dyn.events().tolist() == [[0, 1, 30, 10, 20], [1, 1, 40, 10, 10]]


def test_dynamics_for_rebuilds_after_rewrite_or_relogged_step(tmp_path):
    path = write_synthetic(tmp_path / "run.jsonl")
    reader = TrainingDataReader(path)
    first = dynamics_for(reader)
    assert first.learned_at(0).tolist()[0] == 20
    with TrainingDataWriter(path) as w:  # step 50 logged again, now with position 0 lost
        e = synthetic_entry(50)
        e["sequences"] = [tensor_to_training_entry(_logits(PROBE_IDS, [FAR, FAR, RANK2, TOP1, FAR]),
                                                   torch.tensor([PROBE_IDS]), None, step=50, names=["probe"])["sequences"][0]]
        w.write_step(e)
    again = dynamics_for(reader)
    assert again is not first and again.num_steps == 6
    assert again.learned_at(0).tolist() == [-1, -1, -1, 0, -1]
    os.remove(path)
    write_synthetic(path, STEPS[:2])  # replaced by a shorter file
    assert dynamics_for(reader).num_steps == 2


def test_a_line_broken_after_its_header_is_not_a_step(tmp_path):
    path = write_synthetic(tmp_path / "run.jsonl", STEPS[:2])
    with open(path, "ab") as f:
        f.write(b'{"step":20,"timestamp":1,"loss":1,"perplexity":2.7,"sequences":[oops\n')
    reader = TrainingDataReader(path)
    assert [s.step for s in reader.steps] == [0, 10, 20]  # indexed from its header alone
    dyn = dynamics_for(reader)
    assert dyn.steps.view().tolist() == [0, 10]
    assert [s.step for s in reader.steps] == [0, 10]  # reading it demoted it, for every user of the reader
    assert [(p.line, p.step) for p in reader.problems] == [(3, 20)]
    assert dynamics_for(reader) is dyn  # and the dynamics were not rebuilt for it


# -- routes ---------------------------------------------------------------------------------------
@pytest.fixture
def runs(run_file):
    r = Runs()
    r.add("demo", run_file)
    return r


def test_route_sequences(runs):
    status, body = handle(runs, "sequences", {"run": "demo", "step": "20"})
    assert status == 200
    assert [(s["seq"], s["name"], s["num_steps"], s["first_step"], s["last_step"], s["num_positions"])
            for s in body["sequences"]] == [(0, "probe", 6, 0, 50, 5), (1, "other", 4, 0, 50, 2)]
    assert body["at_step"] == {"step": 20, "seq": [0]} and body["run"] == "demo"
    assert handle(runs, "sequences", {"run": "demo"})[1]["at_step"] is None
    assert handle(runs, "sequences", {"run": "demo", "step": "15"})[0] == 404


def test_route_series(runs):
    status, body = handle(runs, "series", {"run": "demo", "seq": "0", "pos": "1"})
    assert status == 200, body
    assert body["steps"] == STEPS and body["target_rank"] == [16, 1, 1, 16, 16, 16]
    assert body["target"] == {"id": 3, "token": "<id 3>"} and body["token"] == "<id 2>"
    assert body["top1"] == [0, 3, 3, 0, 0, 0] and body["top1_tokens"] == {"0": "<id 0>", "3": "<id 3>"}
    assert body["learned_at"] is None and body["learned_at_top5"] is None
    assert body["forgotten"] == [{"step": 30, "since": 10, "last_top1": 20}]
    assert len(body["target_prob"]) == len(body["loss"]) == len(body["entropy"]) == 6
    body = handle(runs, "series", {"run": "demo", "seq": "1", "pos": "0"})[1]
    assert body["steps"] == [0, 10, 40, 50] and body["learned_at"] == 40 and body["name"] == "other"
    json.dumps(body)
    assert handle(runs, "series", {"run": "demo", "seq": "2", "pos": "0"})[0] == 404
    assert handle(runs, "series", {"run": "demo", "seq": "0", "pos": "5"})[0] == 404
    assert handle(runs, "series", {"run": "demo", "seq": "0"})[0] == 400
    assert handle(runs, "series", {"run": "demo", "seq": "x", "pos": "0"})[0] == 400
    assert handle(runs, "series", {"run": "nope", "seq": "0", "pos": "0"})[0] == 404


def test_route_diff(runs):
    status, body = handle(runs, "diff", {"run": "demo", "a": "10", "b": "20", "limit": "3"})
    assert status == 200, body
    assert (body["a"], body["b"], body["run"]) == (10, 20, "demo")
    assert [r["pos"] for r in body["learned"]] == [0] and body["divergence"]["name"] == "js_topk_other"
    assert "per_token" not in body
    # defaults: b = last step, a = the step before it
    body = handle(runs, "diff", {"run": "demo"})[1]
    assert (body["a"], body["b"]) == (40, 50)
    body = handle(runs, "diff", {"run": "demo", "b": "40", "tokens": "1"})[1]
    assert body["a"] == 30 and [p["seq"] for p in body["per_token"]] == [0]
    body = handle(runs, "diff", {"run": "demo", "a": "10", "b": "40"})[1]
    assert [s["seq"] for s in body["sequences"]] == [0, 1]
    assert sorted((r["seq"], r["pos"]) for r in body["forgotten"]) == [(0, 1), (1, 1)]
    assert [(r["seq"], r["pos"]) for r in body["learned"]] == [(0, 0), (1, 0)]
    json.dumps(body)
    assert handle(runs, "diff", {"run": "demo", "a": "10", "b": "25"}) == (404, {"error": "run 'demo' has no step 25"})
    status, body = handle(runs, "diff", {"run": "demo", "b": "0"})
    assert status == 400 and "first logged step" in body["error"]
    assert handle(runs, "diff", {"run": "demo", "limit": "-1"})[0] == 400
    assert handle(runs, "diff", {"run": "demo", "a": "x"})[0] == 400


def test_route_learned(runs):
    status, body = handle(runs, "learned", {"run": "demo"})
    assert status == 200, body
    assert (body["num_steps"], body["first_step"], body["last_step"]) == (6, 0, 50)
    assert body["per_step"] == {"steps": STEPS, "learned": [1, 0, 1, 0, 1, 0], "gained": [1, 2, 1, 0, 1, 0],
                                "forgotten": [0, 0, 0, 1, 1, 0]}
    probe, other = body["sequences"]
    assert probe["learned_at"] == [20, None, None, 0, None]
    assert probe["learned_at_top5"] == [20, None, 30, 0, None]
    assert probe["times_forgotten"] == [0, 1, 0, 0, 0]
    assert probe["targets"] == ["<id 2>", "<id 3>", "<id 4>", "<id 5>", "<id 6>"]
    assert other["learned_at"] == [40, None]
    assert body["forgetting"] == {"total": 2, "events": [
        {"seq": 0, "pos": 1, "step": 30, "since": 10, "last_top1": 20},
        {"seq": 1, "pos": 1, "step": 40, "since": 10, "last_top1": 10}]}
    body = handle(runs, "learned", {"run": "demo", "seq": "1", "limit": "1"})[1]
    assert [s["seq"] for s in body["sequences"]] == [1]
    assert body["forgetting"]["total"] == 1 and len(body["forgetting"]["events"]) == 1
    assert handle(runs, "learned", {"run": "demo", "seq": "7"})[0] == 404


def test_routes_follow_a_growing_file(tmp_path):
    path = write_synthetic(tmp_path / "run.jsonl", STEPS[:2])
    runs = Runs()
    runs.add("live", path)
    assert handle(runs, "learned", {"run": "live"})[1]["sequences"][0]["learned_at"][0] is None
    with TrainingDataWriter(path) as w:
        for step in STEPS[2:]:
            w.write_step(synthetic_entry(step))
    assert handle(runs, "learned", {"run": "live"})[1]["sequences"][0]["learned_at"][0] == 20
    assert handle(runs, "diff", {"run": "live"})[1]["b"] == 50


def test_diff_json_is_cached_per_reader(run_file):
    reader = TrainingDataReader(run_file)
    assert diff_json(reader, 10, 20) is diff_json(reader, 10, 20)
    with pytest.raises(KeyError):
        diff_json(reader, 10, 11)
    assert series_json(reader, 0, 0)["learned_at"] == 20
    assert learned_json(reader)["num_steps"] == 6


# -- command line ---------------------------------------------------------------------------------
def test_cli_diff(run_file, capsys):
    assert cli_main(["diff", str(run_file), "--from", "10", "--to", "20"]) == 0
    out = capsys.readouterr().out
    assert "step 10 → step 20" in out and "1 wrong→right, 0 right→wrong" in out
    learned = out.split("Learned (wrong → right)")[1].split("Forgotten")[0]
    assert "probe" in learned and '→ "<id 2>"' in learned and "16 → 1" in learned
    assert "Jensen-Shannon" in out
    assert cli_main(["diff", str(run_file)]) == 0
    assert "step 40 → step 50" in capsys.readouterr().out
    assert cli_main(["diff", str(run_file), "--from", "20", "--to", "30", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["pos"] for r in body["forgotten"]] == [1]


def test_cli_diff_errors(run_file, tmp_path, capsys):
    assert cli_main(["diff", str(run_file), "--from", "10", "--to", "25"]) == 2
    err = capsys.readouterr().err
    assert "no step 25" in err and "logged steps: 0, 10, 20, 30, 40, 50" in err
    assert cli_main(["diff", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["diff", str(run_file), "--to", "0"]) == 2
    assert "no earlier step" in capsys.readouterr().err


def test_cli_stops_quietly_when_its_reader_goes_away(tmp_path):
    import subprocess
    import sys

    from factories import corpus, make_entry

    path = tmp_path / "long.jsonl"
    with TrainingDataWriter(path) as w:
        for step in (0, 10):
            w.write_step(make_entry(step, [corpus()[:4000], corpus()[4000:8000]]))
    proc = subprocess.Popen([sys.executable, "-m", "seqviz_trackers.cli", "learned", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(str(path).encode())  # like `seqviz learned FILE | head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_cli_learned(run_file, capsys):
    assert cli_main(["learned", str(run_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = lambda seq_header, pos: next(l for l in lines[lines.index(seq_header):] if l.strip().startswith(f"{pos} "))
    probe = next(l for l in lines if l.startswith("sequence 0 probe"))
    assert "2 of 5 tokens learned" in probe
    assert "step 20" in row(probe, 0)
    assert "not learned" in row(probe, 1) and "30 (since 10)" in row(probe, 1)
    assert "not learned" in row(probe, 2) and "step 30" in row(probe, 2)
    assert "step 0" in row(probe, 3)
    other = next(l for l in lines if l.startswith("sequence 1 other"))
    assert "step 40" in row(other, 0) and "40 (since 10)" in row(other, 1)
    assert cli_main(["learned", str(run_file), "--json", "--seq", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["sequences"][0]["learned_at"] == [20, None, None, 0, None]
    assert cli_main(["learned", str(run_file), "--seq", "5"]) == 2
    assert "no sequence 5" in capsys.readouterr().err


def test_cli_escapes_control_characters_in_tokens(tmp_path, capsys):
    path = tmp_path / "hostile.jsonl"
    with TrainingDataWriter(path, validate=False) as w:
        for step, inside in [(0, False), (1, True)]:
            e = old_format_entry(step, inside)
            e["sequences"][0]["tokens"][0] = "\x1b[31mred\n"
            w.write_step(e)
    assert cli_main(["learned", str(path)]) == 0
    assert cli_main(["diff", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred↵" in out


def test_route_series_thinned_to_points_keeps_the_marked_steps(tmp_path):
    steps = list(range(0, 200, 2))
    ids = [1, 2]
    path = tmp_path / "long.jsonl"
    with TrainingDataWriter(path) as w:  # lost at 64, learned for good at 150
        for step in steps:
            v = TOP1 if 40 <= step < 64 or step >= 150 else FAR
            w.write_step(tensor_to_training_entry(_logits(ids, [v]), torch.tensor([ids]), None, step=step))
    runs = Runs()
    runs.add("long", path)
    full = handle(runs, "series", {"run": "long", "seq": "0", "pos": "0"})[1]
    assert full["steps"] == steps and full["num_steps"] == 100
    body = handle(runs, "series", {"run": "long", "seq": "0", "pos": "0", "points": "10"})[1]
    assert 10 <= len(body["steps"]) <= 13 and body["num_steps"] == 100
    assert {0, 198, 150, 64}.issubset(body["steps"]) and body["steps"] == sorted(body["steps"])
    assert body["learned_at"] == 150 and body["forgotten"] == [{"step": 64, "since": 40, "last_top1": 62}]
    i = body["steps"].index(150)
    assert body["target_rank"][i] == 1 and len(body["target_prob"]) == len(body["steps"])
    assert handle(runs, "series", {"run": "long", "seq": "0", "pos": "0", "points": "1"})[0] == 400


def test_huge_token_ids_do_not_allocate_lookup_tables():
    seq = {"tokens": ["a", "b", "c"], "predictions": [
        {"position": 0, "target_token_id": 2**40, "target_prob": 0.5, "target_rank": 1, "loss": 0.69, "entropy": 1.0,
         "top_k": [[2**40, "big", 0.5]]},
        {"position": 1, "target_token_id": 3, "target_prob": 0.5, "target_rank": 2, "loss": 0.69, "entropy": 1.0,
         "top_k": [[7, "seven", 0.5]]}]}
    dyn = Dynamics()
    dyn.add_entry({"step": 0, "sequences": [seq]})
    assert dyn.vocab == {7: "seven"} and len(dyn._known) < 100
    assert dyn.tracks[0].top1[0, :2].tolist() == [2**40, 7]


def test_ids_and_ranks_past_int64_count_as_malformed(tmp_path):
    seq = {"tokens": ["a", "b", "c"], "predictions": [
        {"position": 0, "target_token_id": 2**70, "target_prob": 0.5, "target_rank": 2**70, "loss": 0.69,
         "entropy": 1.0, "top_k": [[2**70, "huge", 0.5], [7, "seven", 0.2]]},
        {"position": 1, "target_token_id": 3, "target_prob": 0.5, "target_rank": 1, "loss": 0.69, "entropy": 1.0,
         "top_k": [[3, "three", 0.5]]}]}
    entry = {"step": 0, "sequences": [seq]}
    dyn = Dynamics()
    dyn.add_entry(entry)
    track = dyn.tracks[0]
    assert track.top1[0, :2].tolist() == [7, 3] and track.rank[0, :2].tolist() == [0, 1]
    assert track.target[:2].tolist() == [-1, 3]
    assert compare(entry, entry)["summary"]["compared"] == 2
    path = tmp_path / "huge.jsonl"
    with TrainingDataWriter(path, validate=False) as w:
        w.write_step(entry)
    assert learned_json(TrainingDataReader(path))["sequences"][0]["learned_at"][:2] == [None, 0]


def test_evenly_spaced_rows_keep_the_ends_and_the_limit():
    from seqviz_trackers.dynamics import evenly_spaced

    assert evenly_spaced(0, 5) == [] and evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(11, 3) == [0, 5, 10]
    for n in range(2, 60):
        rows = evenly_spaced(n, 7)
        assert rows[0] == 0 and rows[-1] == n - 1 and len(rows) == min(n, 7) and rows == sorted(set(rows))


def test_sig_list_gives_the_floats_sig_gives():
    """The NumPy rounding of :func:`sig_list` against Python's own, value by value: ties,
    float32 values, integers, the extremes of float64 and values it leaves to Python."""
    from seqviz_trackers.dynamics.compare import sig, sig_list

    rng = np.random.default_rng(7)
    odd = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-310, 1e308, -1.7e308, 1e-19, 9.9999e-20, 1e25,
           1.00001e25, 9999.5, 0.99995, 1e22, 123456789.0, 0.00012345]
    for values in (rng.normal(size=20000), np.exp(rng.uniform(-700, 700, 20000)) * rng.choice([-1, 1], 20000),
                   rng.normal(size=20000).astype(np.float32), np.round(rng.uniform(0, 10, 20000), 4) + 0.00005,
                   rng.integers(-10**9, 10**9, 20000).astype(float), np.array(odd)):
        got, want = sig_list(values), [sig(v) for v in values.tolist()]
        assert list(map(repr, got)) == list(map(repr, want))
    assert sig_list([None, 1.23456, None]) == [None, 1.235, None] and sig_list([]) == []
