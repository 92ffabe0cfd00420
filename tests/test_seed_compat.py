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

from proc_helpers import cli_process
from seed_files import EOS, HARD_EVERY, LENGTH, VOCAB, in_top20, seed_line, write_seed_file
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


# -- 3. TrainingDataWriter.write_step takes the original form ---------------------------------------

def compact(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_write_step_stores_an_original_entry_as_given(tmp_path, entries):
    from seqviz_trackers import TrainingDataWriter

    path = tmp_path / "written.jsonl"
    with TrainingDataWriter(path) as writer:
        for entry in entries:
            writer.write_step(entry)
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(entries)
    for line, entry in zip(lines, entries):
        for _, pred in predictions(entry):
            # each candidate list byte for byte as given: objects, key order, full-precision floats
            assert b'"top_k":' + compact(pred["top_k"]) in line
            assert b'"top_20":' + compact(pred["top_20"]) in line
        assert b"target_prob" not in line and b"target_rank" not in line and b'"top_k":[[' not in line
    reader = TrainingDataReader(path)
    back = reader.read_all()
    assert back == entries
    for got, entry in zip(back, entries):
        for (_, p), (_, q) in zip(predictions(got), predictions(entry)):
            assert facts(p) == facts(q)
            f = facts(p)
            if in_top20(p):
                i = [c["token_id"] for c in p["top_20"]].index(p["target_token_id"])
                assert (f.prob, f.rank, f.rank_gt, f.p_lt) == (p["top_20"][i]["prob"], i + 1, None, None)
            else:
                assert (f.prob, f.rank, f.rank_gt, f.p_lt) == (None, None, 20, p["top_20"][-1]["prob"])
                assert f.correct is False and f.loss is None
    assert reader.get_latest() == entries[-1] and not reader.problems


# -- 4. W&B table rows ------------------------------------------------------------------------------

@pytest.mark.slow
def test_wandb_table_rows_of_a_seed_entry(tmp_path, monkeypatch, entries):
    wandb = pytest.importorskip("wandb")
    from seqviz_trackers import SeqVizLogger
    from wandb_helpers import init_run, offline_env, run_folder, table_rows
    from wandb_panel.tables import COLUMNS, entry_rows

    offline_env(monkeypatch, tmp_path)
    run = init_run(mode="offline", dir=str(tmp_path))
    try:
        with SeqVizLogger(tmp_path / "steps.jsonl", wandb=run) as logger:
            for entry in entries:
                logger.log_step(entry)
    finally:
        run.finish()
        wandb.teardown()  # the service process this test started
    rows = [dict(zip(COLUMNS, r)) for r in table_rows(run_folder(run))]
    expected = [(e, s, p) for e in entries for s, p in predictions(e)]
    assert len(rows) == len(expected)
    assert table_rows(run_folder(run)) == json.loads(json.dumps([r for e in entries for r in entry_rows(e)]))
    absent = present = 0
    for row, (entry, s, pred) in zip(rows, expected):
        assert (row["step"], row["sequence"], row["position"]) == (entry["step"], s, pred["position"])
        assert row["target_token"] == pred["target_token_str"]
        assert row["predicted_token"] == pred["top_20"][0]["token_str"]
        if in_top20(pred):
            present += 1
            i = [c["token_id"] for c in pred["top_20"]].index(pred["target_token_id"])
            assert row["target_prob"] == pred["top_20"][i]["prob"] and row["target_rank"] == i + 1
            assert row["correct"] is (i == 0)
            assert row["target_rank_gt"] is None and row["target_prob_lt"] is None
        else:
            absent += 1
            assert row["target_prob"] is None and row["target_rank"] is None and row["loss"] is None
            assert row["target_rank_gt"] == 20 and row["target_prob_lt"] == pred["top_20"][-1]["prob"]
            assert row["correct"] is False
    assert absent and present
    # the JSONL the logger wrote beside the run holds the entries as given
    assert TrainingDataReader(tmp_path / "steps.jsonl").read_all() == entries


# -- 5. the TensorBoard plugin ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tb_app(tmp_path_factory, entries):
    pytest.importorskip("tensorboard")
    from seqviz_trackers import SeqVizLogger
    from tb_helpers import wsgi_app

    root = tmp_path_factory.mktemp("tb")
    with SeqVizLogger(tensorboard=root / "seed") as logger:
        for entry in entries:
            logger.log_step(entry)
    client, _, _ = wsgi_app(root)
    return client


def test_tensorboard_plugin_serves_seed_steps(tb_app, entries):
    p = "/data/plugin/seqviz"
    assert tb_app.get(f"{p}/runs").json == {"runs": [{"run": "seed", "num_steps": 4, "last_step": 300}]}
    steps = tb_app.get(f"{p}/steps?run=seed").json
    assert [s["step"] for s in steps["steps"]] == STEPS and steps["problems"] == []
    for entry in entries:
        r = tb_app.get(f"{p}/step?run=seed&step={entry['step']}")
        assert r.status_code == 200 and r.json == entry


def test_tensorboard_dynamics_routes_derive_p_and_rank(tb_app, entries):
    p = "/data/plugin/seqviz"
    seqs = tb_app.get(f"{p}/sequences?run=seed").json["sequences"]
    assert [s["num_steps"] for s in seqs] == [4, 4]
    for seq in (0, 1):
        for pos in range(len(entries[0]["sequences"][seq]["predictions"])):
            series = tb_app.get(f"{p}/series?run=seed&seq={seq}&pos={pos}").json
            assert series["steps"] == STEPS
            preds = [e["sequences"][seq]["predictions"][pos] for e in entries]
            ranks = [facts(q).rank for q in preds]
            assert series["target_rank"] == ranks  # null where the target is below the top 20
            for got, q in zip(series["target_prob"], preds):
                f = facts(q)
                assert (got is None) == (f.prob is None)
                if f.prob is not None:
                    assert got == pytest.approx(f.prob, rel=1e-3)
            assert series["top1"] == [q["top_20"][0]["token_id"] for q in preds]
            assert series["rank_gt"] == [facts(q).rank_gt for q in preds]  # 20 where the rank is null
            assert [x is None for x in series["p_lt"]] == [facts(q).p_lt is None for q in preds]
    learned = tb_app.get(f"{p}/learned?run=seed").json
    assert learned["num_steps"] == 4 and any(a is not None for s in learned["sequences"] for a in s["learned_at"])
    diff = tb_app.get(f"{p}/diff?run=seed&a=0&b=300&limit=100").json
    assert any(r["rank_gt_a"] == 20 and r["p_lt_a"] for r in diff["learned"])


def series_of_every_token(path: Path) -> dict[tuple[int, int], dict]:
    from seqviz_trackers.serve.api import Runs, handle

    runs = Runs()
    runs.add("seed", path)
    out = {}
    for track in handle(runs, "sequences", {"run": "seed"})[1]["sequences"]:
        seq = track["seq"]
        for pos in range(track["num_positions"]):
            status, body = handle(runs, "series", {"run": "seed", "seq": str(seq), "pos": str(pos)})
            assert status == 200, body
            out[seq, pos] = body
    return out


def test_series_carries_the_bound_of_an_absent_target(tmp_path, entries):
    """``series`` of a target outside the top 20: p and rank stay null (unknown), and
    ``rank_gt`` / ``p_lt`` say what is known, the same read from the JSONL, from the columns
    cache, and when an old-layout cache lies beside the file (it is not used)."""
    from seqviz_trackers.format.entry import facts
    from seqviz_trackers.storage import columns as columns_file
    from seqviz_trackers.storage.jsonl import TrainingDataWriter

    plain = write_seed_file(tmp_path / "plain.jsonl", STEPS)
    cached = tmp_path / "cached.jsonl"
    with TrainingDataWriter(cached) as writer:
        for entry in entries:
            writer.write_step(entry)
    reader = TrainingDataReader(cached)
    cache = columns_file.ColumnsReader(str(cached), reader.files)
    records = [cache.get(info) for info in reader.steps]
    assert all(r is not None for r in records)
    assert any(cols.rank_gt is not None for r in records for _, _, cols in r[1])
    old = tmp_path / "old.jsonl"
    old.write_bytes(cached.read_bytes())
    (tmp_path / "old.jsonl.cols").write_bytes(Path(f"{cached}.cols").read_bytes().replace(b"SVC3", b"SVC1"))
    assert columns_file.ColumnsReader(str(old), TrainingDataReader(old).files).get(reader.steps[1]) is None

    absent = 0
    for path in (plain, cached, old):
        for (seq, pos), body in series_of_every_token(path).items():
            fs = [facts(e["sequences"][seq]["predictions"][pos]) for e in entries]
            assert body["target_rank"] == [f.rank for f in fs]
            assert body["rank_gt"] == [f.rank_gt for f in fs]
            for got, f in zip(body["p_lt"], fs):
                assert (got is None) == (f.p_lt is None) and (got is None or got == pytest.approx(f.p_lt, rel=1e-3))
            for got, f in zip(body["target_prob"], fs):
                assert (got is None) == (f.prob is None)
            if all(f.prob is None for f in fs):
                absent += 1
                assert all(r == 20 for r in body["rank_gt"]) and all(0 < p < 0.05 for p in body["p_lt"])
    assert absent == 3 * 2 * ((LENGTH - 1) // HARD_EVERY)


def test_series_of_our_own_files_has_no_bound(tmp_path):
    from factories import write_run
    from seed_files import TEXTS

    path = write_run(tmp_path / "ours.jsonl", [0, 10, 20], texts=TEXTS)
    for body in series_of_every_token(path).values():
        assert set(body["rank_gt"]) == {None} and set(body["p_lt"]) == {None}


# -- 7. the original websocket feed at the root path ------------------------------------------------

def serve_process(path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``seqviz serve --file PATH --port 0`` in its own process, and the URL it prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = cli_process("serve", "--file", str(path), "--port", "0", *extra,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    first, url_line = proc.stdout.readline(), proc.stdout.readline()
    assert "serving" in first and "open http://127.0.0.1:" in url_line, first + url_line + proc.stderr.read()
    return proc, url_line.split()[1]


def stop(proc: subprocess.Popen) -> str:
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err


@pytest.mark.slow
def test_original_websocket_client_gets_updates_and_steps(tmp_path, entries):
    """A client written as the original dashboard's: ``ws://host:port/``, ``training_update``
    messages, ``{"type": "get_step", "step": N}`` requests."""
    from websockets.sync.client import connect  # (a browser test's event loop may be running in this thread)

    path = tmp_path / "training_data.jsonl"
    path.write_text("".join(seed_line(e) for e in entries[:3]), encoding="utf-8")
    proc, url = serve_process(path)
    try:
        with connect(url.replace("http://", "ws://")) as ws:
            latest = json.loads(ws.recv(timeout=10))                                   # the latest step, on connect
            ws.send(json.dumps({"type": "get_step", "step": 0}))
            step0 = json.loads(ws.recv(timeout=10))                                    # step 0, on request
            ws.send(json.dumps({"type": "get_step", "step": 12345}))
            error = json.loads(ws.recv(timeout=10))                                    # an error
            with open(path, "a", encoding="utf-8") as f:                               # the trainer logs a step
                f.write(seed_line(entries[3]))
            pushed = json.loads(ws.recv(timeout=20))                                   # pushed as it comes
    finally:
        err = stop(proc)
    assert latest == {**entries[2], "type": "training_update"}
    assert step0 == {**entries[0], "type": "training_update"}
    assert step0["sequences"][0]["predictions"][0]["top_20"] == entries[0]["sequences"][0]["predictions"][0]["top_20"]
    assert error["type"] == "error" and error["step"] == 12345 and "no step 12345" in error["message"]
    assert pushed == {**entries[3], "type": "training_update"}
    assert "Traceback" not in err


def test_a_page_opened_from_a_file_needs_allow_origin_null(tmp_path, entries):
    """The original dashboard is an HTML file opened from disk: its websocket sends ``Origin: null``."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from seqviz_trackers.serve.server import start_in_thread

    path = tmp_path / "training_data.jsonl"
    path.write_text("".join(seed_line(e) for e in entries), encoding="utf-8")
    with start_in_thread(file=path, port=0, interval=0.1) as h:
        with pytest.raises(InvalidStatus) as refused:
            connect(h.url.replace("http://", "ws://"), origin="null", open_timeout=10)
        assert refused.value.response.status_code == 403
        assert b"--allow-origin null" in refused.value.response.body
    with start_in_thread(file=path, port=0, interval=0.1, allow_origins=["null"]) as h:
        with connect(h.url.replace("http://", "ws://"), origin="null", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10)) == {**entries[-1], "type": "training_update"}


# -- 8. a script written against the original API --------------------------------------------------

ORIGINAL_SCRIPT = '''\
import sys

import torch

from seqviz_trackers import TrainingDataReader, TrainingDataWriter, extract_batch_sample
from factories import bpe_tokenizer  # stands in for AutoTokenizer.from_pretrained(model_name)

reader = TrainingDataReader(sys.argv[1])

# Get summary statistics
summary = reader.get_summary()
print(f"Average loss: {summary['avg_loss']:.4f}")
print(f"Min perplexity: {summary['min_perplexity']:.2f}")
print(f"Total steps: {summary['total_steps']}, loss {summary['min_loss']:.4f}..{summary['max_loss']:.4f}, "
      f"perplexity {summary['avg_perplexity']:.2f} avg, {summary['max_perplexity']:.2f} max")

# Analyze specific step
step_100 = reader.get_step(100)
if step_100:
    print(f"Loss at step 100: {step_100['loss']:.4f}")

latest = reader.get_latest()
print(f"Latest step: {latest['step']}")
print(f"All steps: {[data['step'] for data in reader.read_all()]}")
for data in reader.iter_steps():
    for seq in data["sequences"]:
        entropy = sum(p["entropy"] for p in seq["predictions"]) / len(seq["predictions"])
        print(f"step {data['step']}: {len(seq['tokens'])} tokens, first target {seq['predictions'][0]['target_token_str']!r}, "
              f"mean entropy {entropy:.4f}")

# In your training loop
tokenizer = bpe_tokenizer()
batch = {"input_ids": torch.tensor([tokenizer("To be, or not to be")["input_ids"]] * 2)}
logits = torch.randn(2, batch["input_ids"].shape[1], len(tokenizer), generator=torch.Generator().manual_seed(0))
entry = extract_batch_sample(logits, batch["input_ids"], tokenizer, 7, 2.5, "my-model", num_sequences=1)
writer = TrainingDataWriter(sys.argv[2])
writer.write_step(entry)
writer.close()
written = TrainingDataReader(sys.argv[2]).get_latest()
print(f"Wrote step {written['step']}: {len(written['sequences'])} sequence of a batch of {written['metadata']['batch_size']}, "
      f"loss {written['loss']}")
'''


def original_script_output(path: Path, tmp_path: Path) -> str:
    script = tmp_path / "analyze.py"
    script.write_text(ORIGINAL_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "sample.jsonl")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return "\n".join(line for line in proc.stdout.splitlines() if line)  # the tokenizer trainer prints blank lines


def expected_output(entries: list[dict]) -> list[str]:
    losses, ppl = [e["loss"] for e in entries], [e["perplexity"] for e in entries]
    by_step = {e["step"]: e for e in entries}
    lines = [f"Average loss: {sum(losses) / len(losses):.4f}", f"Min perplexity: {min(ppl):.2f}",
             f"Total steps: {len(entries)}, loss {min(losses):.4f}..{max(losses):.4f}, "
             f"perplexity {sum(ppl) / len(ppl):.2f} avg, {max(ppl):.2f} max"]
    if 100 in by_step:
        lines.append(f"Loss at step 100: {by_step[100]['loss']:.4f}")
    lines += [f"Latest step: {max(by_step)}", f"All steps: {[e['step'] for e in entries]}"]
    for e in entries:
        for seq in e["sequences"]:
            entropy = sum(p["entropy"] for p in seq["predictions"]) / len(seq["predictions"])
            lines.append(f"step {e['step']}: {len(seq['tokens'])} tokens, first target "
                         f"{seq['predictions'][0]['target_token_str']!r}, mean entropy {entropy:.4f}")
    return lines + ["Wrote step 7: 1 sequence of a batch of 2, loss 2.5"]


@pytest.mark.slow
def test_an_original_script_runs_on_a_seed_file_and_on_ours(tmp_path, seed_file, entries):
    from factories import make_entry
    from seqviz_trackers import SeqVizLogger

    assert original_script_output(seed_file, tmp_path).splitlines() == expected_output(entries)

    ours = tmp_path / "ours.jsonl"
    logged = [make_entry(s, ["To be, or not to be, that is the question:", "The slings and arrows"]) for s in STEPS]
    for e in logged:
        e["loss"] = 3.0 - e["step"] / 200
    with SeqVizLogger(ours) as logger:
        for e in logged:
            logger.log_step(e)
    assert original_script_output(ours, tmp_path).splitlines() == expected_output(TrainingDataReader(ours).read_all())
