"""The token table: TrainingDataReader.to_arrow()/to_pandas() and ``seqviz export --format parquet``."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from factories import write_run  # noqa: E402
from seqviz_trackers import TrainingDataReader, TrainingDataWriter  # noqa: E402
from seqviz_trackers.cli import main  # noqa: E402
from seqviz_trackers.storage.arrow import token_schema, write_parquet  # noqa: E402

TEXTS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
STEPS = [0, 10, 20, 30]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("arrow") / "run.jsonl"
    return write_run(path, STEPS, texts=TEXTS, names=["soliloquy", "nobler"])


def entries(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def f32(x: float | None) -> float | None:
    return None if x is None else float(np.float32(x))


def test_one_row_per_prediction_with_the_logged_values(run):
    table = TrainingDataReader(run).to_arrow()
    assert table.schema == token_schema(True)
    logged = entries(run)
    assert table.num_rows == sum(len(s["predictions"]) for e in logged for s in e["sequences"])
    rows = table.to_pylist()
    vocab = dict(zip(*TrainingDataReader(run).vocab_table().to_pydict().values()))
    at = 0
    for entry in logged:
        for index, seq in enumerate(entry["sequences"]):
            for pred in seq["predictions"]:
                row = rows[at]
                at += 1
                pos = pred["position"]
                assert (row["step"], row["sequence"], row["name"], row["position"]) == (entry["step"], index, seq["name"], pos)
                assert (row["token"], row["token_id"]) == (seq["tokens"][pos], seq["token_ids"][pos])
                assert (row["target"], row["target_id"]) == (pred["target_token_str"], pred["target_token_id"])
                assert row["target_prob"] == f32(pred["target_prob"]) and row["loss"] == f32(pred["loss"])
                assert row["entropy"] == f32(pred["entropy"]) and row["target_rank"] == pred["target_rank"]
                assert row["correct"] == pred["correct"]
                assert (row["top1_id"], row["top1"]) == tuple(pred["top_k"][0][:2])
                assert [(c["id"], vocab[c["id"]], c["prob"]) for c in row["top_k"]] == [
                    (i, s, f32(p)) for i, s, p in pred["top_k"]]
    # strings are dictionary-encoded, numbers float32
    assert pa.types.is_dictionary(table.schema.field("token").type)
    assert table.schema.field("target_prob").type == pa.float32()
    assert table.schema.field("top_k").type.value_type.field("id").type == pa.int32()


def test_without_top_k_the_columns_file_is_read_and_gives_the_same_table(run, tmp_path, monkeypatch):
    full = TrainingDataReader(run).to_arrow()
    reads = []
    original = TrainingDataReader.read
    monkeypatch.setattr(TrainingDataReader, "read", lambda self, info: reads.append(info.step) or original(self, info))
    fast = TrainingDataReader(run).to_arrow(top_k=False)
    assert reads == [STEPS[0]]  # only the line that introduces the texts is parsed
    assert fast.equals(full.drop_columns(["top_k"]))

    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(run.read_bytes())  # no columns file beside it: every line is parsed
    reads.clear()
    slow = TrainingDataReader(copy).to_arrow(top_k=False)
    assert reads == STEPS and slow.equals(fast)


def test_to_pandas(run):
    pd = pytest.importorskip("pandas")
    df = TrainingDataReader(run).to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == TrainingDataReader(run).to_arrow().num_rows
    assert isinstance(df["token"].dtype, pd.CategoricalDtype)
    per_step = df.groupby("step")["loss"].mean()
    assert per_step.index.tolist() == STEPS and per_step.notna().all()


def test_parquet_read_with_duckdb_matches_the_jsonl(run, tmp_path, capsys):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "tokens.parquet"
    assert main(["export", str(run), "--format", "parquet", "-o", str(out)]) == 0
    assert "rows, 4 steps" in capsys.readouterr().out
    got = duckdb.sql(f"SELECT step, avg(loss) AS loss, count(*) AS n FROM '{out}' GROUP BY step ORDER BY step").fetchall()
    want = []
    for entry in entries(run):
        losses = [p["loss"] for s in entry["sequences"] for p in s["predictions"]]
        want.append((entry["step"], sum(losses) / len(losses), len(losses)))
    assert [(s, n) for s, _, n in got] == [(s, n) for s, _, n in want]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a, _), (_, b, _) in zip(got, want))
    # the top-k list column, as DuckDB sees it, with its strings from the vocabulary beside the file
    vocab = tmp_path / "tokens.vocab.parquet"
    top = duckdb.sql(f"SELECT v.token, t.top1, t.top_k[1].id, t.top1_id FROM '{out}' t "
                     f"JOIN '{vocab}' v ON v.id = t.top_k[1].id").fetchall()
    assert len(top) == sum(n for *_, n in got) and all(a == b and c == d for a, b, c, d in top)
    # the file holds the same table as to_arrow(), zstd-compressed
    assert pq.read_table(out).equals(TrainingDataReader(run).to_arrow())
    meta = pq.ParquetFile(out).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_candidates_joined_with_the_vocabulary_in_duckdb_are_the_logged_ones(run, tmp_path):
    """Every candidate's id, string and p round-trip through the Parquet file and its vocabulary."""
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "tokens.parquet"
    result = write_parquet(TrainingDataReader(run), out)
    assert result.vocab_path == tmp_path / "tokens.vocab.parquet" and result.vocab_rows > 0
    got = duckdb.sql(f"""
        SELECT t.step, t.sequence, t.position, t.k, t.c.id, v.token, t.c.prob
        FROM (SELECT step, sequence, position, unnest(top_k) AS c, generate_subscripts(top_k, 1) AS k
              FROM '{out}') t
        JOIN '{result.vocab_path}' v ON v.id = t.c.id
        ORDER BY t.step, t.sequence, t.position, t.k""").fetchall()
    want = [(entry["step"], index, pred["position"], k, cid, string, f32(p))
            for entry in entries(run) for index, seq in enumerate(entry["sequences"])
            for pred in sorted(seq["predictions"], key=lambda p: p["position"])
            for k, (cid, string, p) in enumerate(pred["top_k"], 1)]
    assert got == want
    vocab = pq.read_table(result.vocab_path)
    assert vocab.schema == pa.schema([("id", pa.int32()), ("token", pa.string())])
    assert vocab.equals(TrainingDataReader(run).vocab_table())
    assert vocab.column("id").to_pylist() == sorted({r[4] for r in want})
    meta = pq.ParquetFile(out).metadata.row_group(0)
    encodings = {meta.column(j).path_in_schema: meta.column(j).encodings for j in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["top_k.list.element.prob"]
    assert "BYTE_STREAM_SPLIT" in encodings["top_k.list.element.id"]


def test_ids_too_large_for_int32_are_null(tmp_path):
    path = tmp_path / "big.jsonl"
    entry = {"step": 1, "sequences": [{"tokens": ["a", "b"], "token_ids": [1, 2**31], "predictions": [
        {"position": 0, "target_token_id": 2**31, "target_token_str": "b", "top_k": [[2**31, "b", 0.75], [7, "c", 0.25]]},
    ]}]}
    with TrainingDataWriter(path, validate=False) as writer:
        writer.write_step(entry)
    row = TrainingDataReader(path).to_arrow().to_pylist()[0]
    assert (row["token_id"], row["target_id"], row["top1_id"]) == (1, None, None)
    assert [c["id"] for c in row["top_k"]] == [None, 7]
    assert TrainingDataReader(path).vocab_table().to_pylist() == [{"id": 7, "token": "c"}]


def test_row_groups_hold_whole_step_ranges(run, tmp_path):
    out = tmp_path / "t.parquet"
    result = write_parquet(TrainingDataReader(run), out, rows_per_group=1)
    assert (result.row_groups, result.steps) == (len(STEPS), len(STEPS))
    meta = pq.ParquetFile(out).metadata
    ranges = [(meta.row_group(g).column(0).statistics.min, meta.row_group(g).column(0).statistics.max)
              for g in range(meta.num_row_groups)]
    assert ranges == [(s, s) for s in STEPS]
    assert main(["export", str(run), "--format", "parquet", "--step", "10", "--no-top-k", "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert set(table.column("step").to_pylist()) == {10} and "top_k" not in table.column_names


def test_bad_lines_are_skipped_and_reported(run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = run.read_bytes().splitlines(keepends=True)
    bad.write_bytes(lines[0] + b"{not json\n" + lines[1] + b'{"step": 99, "sequ')  # a garbled and a partial line
    reader = TrainingDataReader(bad)
    table = reader.to_arrow()
    assert sorted(set(table.column("step").to_pylist())) == STEPS[:2]
    assert [p.line for p in reader.problems] == [2]
    out = tmp_path / "bad.parquet"
    assert main(["export", str(bad), "--format", "parquet", "-o", str(out)]) == 0
    assert f"{bad}:2: skipped: not valid JSON" in capsys.readouterr().err
    assert pq.read_table(out).num_rows == table.num_rows


def test_original_format_and_unknown_values(tmp_path):
    """The original tool's candidate objects; a target outside the candidates has unknown p and rank."""
    path = tmp_path / "old.jsonl"
    cands = [{"token_id": 9, "token_str": " the", "prob": 0.5}, {"token_id": 3, "token_str": " be", "prob": 0.2}]
    entry = {"step": 5, "sequences": [{"tokens": ["To", " be", " or"], "predictions": [
        {"position": 0, "target_token_id": 3, "target_token_str": " be", "top_k": cands[:1], "top_20": cands,
         "entropy": 1.5},
        {"position": 1, "target_token_id": 7, "target_token_str": " or", "top_k": cands, "entropy": 1.0},
    ]}]}
    with TrainingDataWriter(path, validate=False) as writer:
        writer.write_step(entry)
    rows = TrainingDataReader(path).to_arrow().to_pylist()
    assert [r["target_rank"] for r in rows] == [2, None] and [r["correct"] for r in rows] == [False, None]
    assert rows[0]["target_prob"] == f32(0.2) and rows[1]["target_prob"] is None and rows[1]["loss"] is None
    assert rows[0]["token_id"] is None and rows[0]["name"] is None and rows[0]["top1"] == " the"
    assert [c["id"] for c in rows[0]["top_k"]] == [9, 3]  # the longer top_20


def test_empty_file_gives_an_empty_table(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    table = TrainingDataReader(path).to_arrow()
    assert table.num_rows == 0 and table.schema == token_schema(True)
    assert main(["export", str(path), "--format", "parquet", "-o", str(tmp_path / "e.parquet")]) == 1
    assert "no predictions to export" in capsys.readouterr().err


def test_missing_pyarrow_says_how_to_install_it(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(ImportError, match="needs pyarrow: pip install pyarrow"):
        TrainingDataReader(run).to_arrow()
    assert main(["export", str(run), "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs pyarrow" in err and not (tmp_path / "x.parquet").exists()


def test_missing_pandas_says_so(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="to_pandas\\(\\) needs pandas: pip install pandas"):
        TrainingDataReader(run).to_pandas()

