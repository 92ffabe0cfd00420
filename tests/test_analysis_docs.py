"""The recipes of docs/analysis.md, run as written on a real file, checked against the dynamics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from seqviz_trackers import TrainingDataReader, TrainingDataWriter, tensor_to_training_entry
from seqviz_trackers.dynamics import Dynamics

from factories import bpe_tokenizer

pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysis.md"
TEXTS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer the question"]
STEPS = list(range(0, 200, 10))


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text("utf-8"), re.S)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """Targets gain logit at a per-position rate, so positions are learned at different steps."""
    tok = bpe_tokenizer()
    tok.pad_token = tok.eos_token
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    rate = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) * 0.12
    folder = tmp_path_factory.mktemp("analysis")
    path = folder / "run.jsonl"
    with TrainingDataWriter(path) as writer:
        for step in STEPS:
            logits = torch.randn(*ids.shape, len(tok), generator=torch.Generator().manual_seed(step)) * 2
            target = torch.roll(ids, -1, dims=1)
            logits.scatter_add_(2, target[..., None], (rate * step)[..., None])
            writer.write_step(tensor_to_training_entry(logits, ids, tok, step=step, attention_mask=enc["attention_mask"],
                                                       names=["hamlet", "nobler"]))
    from seqviz_trackers.cli import main
    assert main(["export", str(path), "--format", "parquet", "-o", str(folder / "tokens.parquet")]) == 0
    return path, folder


def run_python(path: Path, folder: Path, monkeypatch) -> dict:
    """The Python blocks in ``folder`` (which holds the export), after the first (which shows how to load df)."""
    monkeypatch.chdir(folder)
    scope = {"df": TrainingDataReader(path).to_pandas(), "pd": pd}
    for code in blocks("python")[1:]:
        exec(code, scope)
    return scope


def run_sql(folder: Path) -> list:
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{folder}'")
    return [con.execute(sql).fetchall() for sql in blocks("sql")]


def test_the_doc_has_three_recipes_in_both_languages():
    assert len(blocks("python")) == 5 and len(blocks("sql")) == 4


def test_learning_curve_of_one_token(run, monkeypatch):
    path, folder = run
    scope = run_python(path, folder, monkeypatch)
    curve = scope["curve"]
    expected = {}
    for entry in TrainingDataReader(path).read_all():
        for s, seq in enumerate(entry["sequences"]):
            for p in seq["predictions"]:
                if p["target_token_str"] == " the":
                    expected[(entry["step"], s, p["position"])] = p["target_prob"]
    assert len(expected) >= 2 * len(STEPS)
    got_py = {(step, s, pos): curve.loc[step, (s, pos)] for step in curve.index for (s, pos) in curve.columns}
    got_sql = {(step, s, pos): prob for s, pos, prob, step in
               [(r[1], r[2], r[3], r[0]) for r in run_sql(folder)[0]]}
    for key, prob in expected.items():
        assert got_py[key] == pytest.approx(prob, rel=1e-6)
        assert got_sql[key] == pytest.approx(prob, rel=1e-6)


def test_tokens_by_learned_at_agree_with_the_dynamics(run, monkeypatch):
    path, folder = run
    dyn = Dynamics()
    for entry in TrainingDataReader(path).read_all():
        dyn.add_entry(entry)
    expected = {}
    for s in range(2):
        for pos, at in enumerate(dyn.learned_at(s)):
            if at >= 0:
                expected[(s, int(pos))] = int(at)
    assert 5 < len(expected) and len(set(expected.values())) > 3      # positions learned at several steps
    final = run_python(path, folder, monkeypatch)["final"]
    got_py = {(s, p): int(v) for (s, p), v in final.learned_at.items()}
    got_sql = {(r[0], r[1]): r[4] for r in run_sql(folder)[1]}
    assert got_py == expected
    assert got_sql == expected
    assert list(final.learned_at) == sorted(final.learned_at)


def test_loss_by_token_frequency(run, monkeypatch):
    path, folder = run
    last = TrainingDataReader(path).get_latest()
    preds = [p for seq in last["sequences"] for p in seq["predictions"]]
    count = {}
    for p in preds:
        count[p["target_token_str"]] = count.get(p["target_token_str"], 0) + 1
    expected = {}
    for p in preds:
        expected.setdefault(count[p["target_token_str"]], []).append(-np.log(p["target_prob"]))
    by_freq = run_python(path, folder, monkeypatch)["by_freq"]
    sql = {r[0]: (r[1], r[2]) for r in run_sql(folder)[2]}
    assert sorted(by_freq.index) == sorted(expected) == sorted(sql)
    for freq, losses in expected.items():
        assert by_freq.loc[freq, "mean"] == pytest.approx(np.mean(losses), rel=1e-4, abs=1e-4)
        assert by_freq.loc[freq, "size"] == len(losses) == sql[freq][1]
        assert sql[freq][0] == pytest.approx(np.mean(losses), rel=1e-4, abs=1e-4)


def test_candidates_as_text_from_the_vocabulary(run, monkeypatch):
    path, folder = run
    last = TrainingDataReader(path).get_latest()
    expected = [(s, p["position"], p["target_token_str"], k, string, prob)
                for s, seq in enumerate(last["sequences"]) for p in sorted(seq["predictions"], key=lambda p: p["position"])
                for k, (_id, string, prob) in enumerate(p["top_k"][:5], 1)]
    top5 = run_python(path, folder, monkeypatch)["top5"]
    got_py = [(r.sequence, r.position, r.target, r.k, r.candidate, r.prob) for r in top5.itertuples()]
    got_py.sort(key=lambda r: r[:2] + (r[3],))
    got_sql = run_sql(folder)[3]
    assert len(expected) > 20
    for got in (got_py, got_sql):
        assert [r[:5] for r in got] == [r[:5] for r in expected]
        assert all(g[5] == pytest.approx(e[5], rel=1e-6) for g, e in zip(got, expected))
