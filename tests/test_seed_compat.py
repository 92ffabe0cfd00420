"""Files of the original seq-viz tool (built by :mod:`seed_files`: candidate objects,
``top_k`` of 5 beside ``top_20``, no ``target_prob`` / ``target_rank``, special tokens as
text, a 128,256-token vocabulary) on every surface outside the browser: the real CLI,
the writer and reader, W&B table rows, the TensorBoard plugin, the root websocket feed,
and a script written against the original API. The browser half is in
``test_seed_browser.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seed_files import EOS, VOCAB, in_top20, seed_entry, seed_line, write_seed_file
from seqviz_trackers.cli.main import main as seqviz
from seqviz_trackers.format.entry import facts
from seqviz_trackers.storage.jsonl import TrainingDataReader

ROOT = Path(__file__).resolve().parent.parent
STEPS = [0, 100, 200, 300]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real ``seqviz`` command in its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> Path:
    return write_seed_file(tmp_path_factory.mktemp("seed") / "training_data.jsonl", STEPS)


@pytest.fixture(scope="module")
def entries(seed_file) -> list[dict]:
    return [json.loads(line) for line in seed_file.read_text("utf-8").splitlines()]


def predictions(entry: dict):
    """(sequence index, prediction) of every prediction of ``entry``."""
    return [(s, p) for s, seq in enumerate(entry["sequences"]) for p in seq["predictions"]]


def test_the_files_are_in_the_original_form(entries):
    """What the rest of this module relies on: the seed files really are in the original form."""
    for entry in entries:
        assert set(entry) == {"timestamp", "step", "loss", "perplexity", "sequences", "metadata"}
        assert entry["metadata"]["vocab_size"] == VOCAB
        assert entry["sequences"][0]["tokens"][0] == "<|begin_of_text|>"
        assert entry["sequences"][0]["tokens"][-1] == "<|end_of_text|>"
        for _, pred in predictions(entry):
            assert set(pred) == {"position", "target_token_id", "target_token_str", "top_k", "top_20", "entropy"}
            assert len(pred["top_k"]) == 5 and len(pred["top_20"]) == 20
            assert pred["top_k"] == pred["top_20"][:5]
            assert all(set(c) == {"token_id", "token_str", "prob"} for c in pred["top_20"])
    preds = [p for e in entries for _, p in predictions(e)]
    assert any(not in_top20(p) for p in preds) and any(in_top20(p) for p in preds)
    assert any(p["target_token_id"] == EOS for p in preds)
    assert any(len(repr(c["prob"])) > 12 for p in preds for c in p["top_20"])  # full-precision floats


# -- 1. seqviz validate ----------------------------------------------------------------------------

@pytest.mark.slow
def test_validate_accepts_a_seed_file(seed_file):
    proc = cli("validate", str(seed_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"OK, {len(STEPS)} valid entries" in proc.stdout


@pytest.mark.slow
def test_validate_names_a_broken_middle_line_and_a_partial_last_line_and_no_step_is_lost(tmp_path, entries):
    lines = [seed_line(e) for e in entries]
    broken = lines[1][: len(lines[1]) // 2] + "\n"  # a line cut in the middle, then the next one
    path = tmp_path / "damaged.jsonl"
    path.write_text("".join(lines[:2] + [broken] + lines[2:] + [lines[3][:200]]), encoding="utf-8")
    proc = cli("validate", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{path}:3: not valid JSON" in proc.stdout
    assert f"{path}:6: incomplete last line" in proc.stdout
    assert proc.stdout.count(f"{path}:") == 2  # no good line is reported
    assert "2 problem(s), 4 valid entries" in proc.stderr and proc.stderr.startswith("seqviz validate: ")

    reader = TrainingDataReader(path)
    assert reader.read_all() == entries  # every good step, exactly as written
    assert [s.step for s in reader.steps] == STEPS
    assert [reader.get_step(s) for s in STEPS] == entries
    assert [p.line for p in reader.problems] == [3, 6]


# -- 2. summary, diff, learned -------------------------------------------------------------------

def test_summary_prints_the_original_figures(seed_file, entries, capsys):
    assert seqviz(["summary", str(seed_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    losses = [e["loss"] for e in entries]
    assert summary["total_steps"] == summary["num_steps"] == len(STEPS)
    assert summary["avg_loss"] == pytest.approx(sum(losses) / len(losses))
    assert summary["min_loss"] == min(losses) and summary["max_loss"] == max(losses)
    assert summary["min_perplexity"] == min(e["perplexity"] for e in entries)
    assert seqviz(["summary", str(seed_file)]) == 0
    text = capsys.readouterr().out
    assert "—" not in text and "None" not in text
    assert f"{'avg_loss':<15}" in text


def diff_rows(result: dict) -> list[dict]:
    return [r for key in ("learned", "forgotten", "worsened", "improved") for r in result[key]]


def test_diff_derives_p_and_rank_and_bounds_an_absent_target(seed_file, entries, capsys):
    assert seqviz(["diff", str(seed_file), "--from", "0", "--to", "300", "--limit", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    a, b = entries[0], entries[-1]
    by = {(s, p["position"]): (pa, p) for (s, pa), (_, p) in zip(predictions(a), predictions(b))}
    rows = diff_rows(result)
    bounded = 0
    for r in rows:
        pa, pb = by[(r["seq"], r["pos"])]
        for side, pred in (("a", pa), ("b", pb)):
            f = facts(pred)
            if in_top20(pred):
                rank = [c["token_id"] for c in pred["top_20"]].index(pred["target_token_id"]) + 1
                assert r[f"rank_{side}"] == rank == f.rank
                assert r[f"p_{side}"] == pytest.approx(pred["top_20"][rank - 1]["prob"], rel=1e-3)
                assert r[f"rank_gt_{side}"] is None and r[f"p_lt_{side}"] is None
            else:
                bounded += 1
                assert r[f"rank_{side}"] is None and r[f"p_{side}"] is None
                assert r[f"rank_gt_{side}"] == 20
                assert r[f"p_lt_{side}"] == pytest.approx(pred["top_20"][-1]["prob"], rel=1e-3)
    assert bounded and result["summary"]["compared"] == len(by)

    assert seqviz(["diff", str(seed_file), "--from", "0", "--to", "300", "--limit", "100"]) == 0
    text = capsys.readouterr().out
    learned = text.split("Learned (wrong → right)")[1].split("Forgotten")[0]
    shown = [line for line in learned.splitlines() if line.startswith("  #")]
    assert len(shown) == len(result["learned"])
    for line, r in zip(shown, result["learned"]):
        if r["rank_a"] is None:  # the target was below the top 20 at step 0
            assert f">20 → {r['rank_b']}" in line and f"<{r['p_lt_a']:.4f}" in line
        else:
            assert f"{r['rank_a']} → {r['rank_b']}" in line and f"{r['p_a']:.4f}" in line
    assert any(r["rank_a"] is None for r in result["learned"])
    assert " ? → " not in text and "—" not in text


def test_learned_reads_the_ranks_off_the_candidates(seed_file, entries, capsys):
    assert seqviz(["learned", str(seed_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_steps"] == len(STEPS)
    for seq in result["sequences"]:
        s = seq["seq"]
        for pos, at in enumerate(seq["learned_at"]):
            ranks = [facts(e["sequences"][s]["predictions"][pos]).rank for e in entries]
            top1 = [r == 1 for r in ranks]
            expected = next((STEPS[i] for i in range(len(STEPS)) if all(top1[i:])), None)
            assert at == expected, (s, pos, ranks)
            if all(r is None for r in ranks):  # never among the top 20: honestly not learned
                assert at is None and seq["learned_at_top5"][pos] is None
    assert any(at is not None for seq in result["sequences"] for at in seq["learned_at"])
    assert seqviz(["learned", str(seed_file)]) == 0
    text = capsys.readouterr().out
    assert "step 100" in text and "not learned" in text and "<|end_of_" in text
