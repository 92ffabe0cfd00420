"""``seqviz index``: the columns file of a JSONL file written without one (the original
tool's files, ``columns=False``), so its steps' views and dynamics come from it."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from factories import HOSTILE, make_entry
from seed_files import seed_entry
from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.storage.columns import SUFFIX, WriterActive, build
from seqviz_trackers.storage.jsonl import TrainingDataReader, encode_entry
from web_data import learning_entry


def entries() -> list[dict]:
    return [learning_entry(0, 300), make_entry(100, [HOSTILE + " caf\u00e9 \U0001F600"]), seed_entry(200, 300),
            learning_entry(300, 300)]


def seqviz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", *args], capture_output=True, text=True, timeout=300)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_index_gives_a_file_without_columns_the_views_and_records_its_writer_would_have(tmp_path):
    cached, plain = tmp_path / "cached.jsonl", tmp_path / "plain.jsonl"
    logged = entries()
    with TrainingDataWriter(cached) as w:
        for e in logged:
            w.write_step(e)
    lines = [encode_entry(e) for e in logged]
    # a broken line and a blank one between good ones, and an incomplete last line
    plain.write_bytes(lines[0] + b"{not json\n" + lines[1] + b"\n" + lines[2] + lines[3] + b'{"step": 400, "tok')
    before = digest(plain)

    out = seqviz("index", str(plain))
    assert out.returncode == 1, out.stderr  # a line that is not a step
    assert f"{plain}:2: not valid JSON" in out.stderr
    assert "incomplete last line" in out.stderr
    assert f"{plain}: 4 steps" in out.stdout and f"wrote {plain}{SUFFIX}" in out.stdout
    assert digest(plain) == before  # the JSONL file is only read

    ours, theirs = TrainingDataReader(plain), TrainingDataReader(cached)
    assert [i.step for i in ours.steps] == [i.step for i in theirs.steps] == [0, 100, 200, 300]
    for mine, written in zip(ours.steps, theirs.steps):
        stored = ours.read_view(mine, encoded=True, stored_only=True)
        assert stored is not None, mine.step  # from the new columns file, without parsing the line
        assert stored == theirs.read_view(written, encoded=True, stored_only=True)
        assert ours.columns.get(mine) is not None  # the dynamics' numbers too
    assert ours.problems[0].line == 2


def test_index_of_a_folder_replaces_a_damaged_columns_file_and_a_writer_can_go_on(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    runs = [tmp_path / "a" / "run1.jsonl", tmp_path / "a" / "b" / "run2.jsonl"]
    for run in runs:
        with TrainingDataWriter(run, columns=False) as w:
            for e in entries()[:2]:
                w.write_step(e)
    (tmp_path / "notes.txt").write_text("not a run")
    cols = runs[0].with_name(runs[0].name + SUFFIX)
    cols.write_bytes(b"SVC3 damaged")

    out = seqviz("index", str(tmp_path), "--quiet")
    assert out.returncode == 0, out.stderr
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == sorted(str(r) for r in runs)
    for run in runs:
        reader = TrainingDataReader(run)
        assert all(reader.read_view(i, stored_only=True) is not None for i in reader.steps)

    with TrainingDataWriter(runs[0]) as w:  # a writer resuming the run appends after the built records
        w.write_step(entries()[2])
    reader = TrainingDataReader(runs[0])
    assert [i.step for i in reader.steps] == [0, 100, 200]
    assert all(reader.read_view(i, stored_only=True) is not None for i in reader.steps)


def test_index_leaves_a_file_alone_while_a_writer_appends_to_it(tmp_path):
    path = tmp_path / "live.jsonl"
    with TrainingDataWriter(path, columns=False) as w:
        w.write_step(entries()[0])
        with pytest.raises(WriterActive, match="a writer is appending"):
            build(path)
        out = seqviz("index", str(path))
        assert "a writer is appending to this file" in out.stderr and "left alone" in out.stderr
        assert not path.with_name(path.name + SUFFIX).exists()
    assert build(path).records == 1


def test_index_says_what_is_wrong_with_its_arguments(tmp_path):
    out = seqviz("index", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "no such file or folder" in out.stderr
    out = seqviz("index", str(tmp_path))
    assert out.returncode == 2 and "no *.jsonl file below this folder" in out.stderr
