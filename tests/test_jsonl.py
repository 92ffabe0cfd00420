"""Schema, writer, reader, validator CLI and the fan-out logger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from factories import HOSTILE, make_entry, write_run
from seqviz_trackers import (SchemaValidationError, SeqVizLogger, TrainingDataReader, TrainingDataWriter,
                             validate_entry)
from seqviz_trackers.cli import main as cli_main
from seqviz_trackers.format.schema import load_schema

SEED_EXAMPLE = {
    "timestamp": 1234567890.123,
    "step": 1000,
    "loss": 2.345,
    "perplexity": 10.44,
    "sequences": [{
        "tokens": ["To", " be", " or", " not", " to", " be"],
        "predictions": [{
            "position": 0,
            "target_token_id": 387,
            "target_token_str": " be",
            "top_k": [[387, " be", 0.4], [12, " the", 0.1]],
            "top_20": [[387, " be", 0.4]],
            "entropy": 1.234,
        }],
    }],
    "metadata": {"model_name": "meta-llama/Llama-3.2-1B-Instruct", "vocab_size": 128256, "batch_size": 4,
                 "sequence_length": 64},
}


def test_schema_is_2020_12_and_seed_example_validates():
    assert load_schema()["$schema"].endswith("2020-12/schema")
    validate_entry(SEED_EXAMPLE)
    validate_entry(make_entry(3, ["hello there", HOSTILE]))


def test_schema_agrees_with_reference_validator():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(load_schema())
    assert not list(validator.iter_errors(SEED_EXAMPLE))
    assert not list(validator.iter_errors(make_entry(1)))
    bad = json.loads(json.dumps(SEED_EXAMPLE))
    del bad["sequences"][0]["predictions"][0]["entropy"]
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("mutate, path", [
    (lambda e: e["sequences"][0]["predictions"][0].update(entropy="high"), "$.sequences[0].predictions[0].entropy"),
    (lambda e: e["sequences"][0]["predictions"][0]["top_k"][1].pop(), "$.sequences[0].predictions[0].top_k[1]"),
    (lambda e: e["sequences"][0]["predictions"][0]["top_k"][0].__setitem__(1, 7), "$.sequences[0].predictions[0].top_k[0][1]"),
    (lambda e: e.update(step=-1), "$.step"),
    (lambda e: e.pop("sequences"), "$"),
    (lambda e: e["sequences"][0]["tokens"].append(5), "$.sequences[0].tokens[6]"),
    (lambda e: e["sequences"][0]["predictions"][0].update(target_prob=1.5), "$.sequences[0].predictions[0].target_prob"),
])
def test_broken_entries_name_the_field(mutate, path):
    entry = json.loads(json.dumps(SEED_EXAMPLE))
    mutate(entry)
    with pytest.raises(SchemaValidationError) as info:
        validate_entry(entry)
    assert info.value.path == path
    assert str(info.value).startswith(path + ":")


def test_a_candidate_of_neither_form_is_named_with_both_forms():
    entry = json.loads(json.dumps(SEED_EXAMPLE))
    entry["sequences"][0]["predictions"][0]["top_k"][1] = 5
    with pytest.raises(SchemaValidationError) as info:
        validate_entry(entry)
    assert info.value.path == "$.sequences[0].predictions[0].top_k[1]"
    assert "triple or a" in info.value.reason


def test_writer_refuses_bad_entries_and_writes_nothing(tmp_path):
    path = tmp_path / "deep" / "dir" / "run.jsonl"
    entry = make_entry(1)
    with TrainingDataWriter(path) as w:
        w.write_step(entry)
        bad = json.loads(json.dumps(entry))
        bad["sequences"][0]["predictions"][2]["entropy"] = float("nan")
        with pytest.raises(SchemaValidationError, match=r"\$\.sequences\[0\]\.predictions\[2\]\.entropy: is NaN"):
            w.write_step(bad)
        bad["sequences"][0]["predictions"][2]["entropy"] = "x"
        with pytest.raises(SchemaValidationError, match="entropy"):
            w.write_step(bad)
        with pytest.raises(SchemaValidationError, match="dict"):
            w.write_step([entry])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == entry


def test_round_trip_one_line_per_step_hostile_text_intact(tmp_path):
    path = tmp_path / "run.jsonl"
    entries = [make_entry(s, [HOSTILE + " to be\nor not"]) for s in (0, 10, 20)]
    with TrainingDataWriter(path) as w:
        for e in entries:
            w.write_step(e)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 3 and raw.endswith(b"\n")
    reader = TrainingDataReader(path)
    assert list(reader) == entries
    assert [s.step for s in reader.steps] == [0, 10, 20]
    assert reader.get_step(10) == entries[1]
    assert reader.get_step(11) is None
    assert reader.latest() == entries[2]
    assert HOSTILE in "".join(reader.get_step(0)["sequences"][0]["tokens"])


def test_partial_last_line_waits_for_newline(tmp_path):
    path = write_run(tmp_path / "run.jsonl", [1, 2])
    line = (json.dumps(make_entry(3)) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line[:500])
    reader = TrainingDataReader(path)
    assert [e["step"] for e in reader] == [1, 2]
    assert "incomplete last line" in reader.problems[-1].message
    assert [s.step for s in reader.steps] == [1, 2]
    with open(path, "ab") as f:
        f.write(line[500:])
    update = reader.refresh()
    assert [s.step for s in update.new] == [3]
    assert reader.get_step(3)["step"] == 3


def test_malformed_middle_line_skipped_and_reported(tmp_path):
    path = tmp_path / "run.jsonl"
    good = [json.dumps(make_entry(s)) for s in (1, 2, 3)]
    path.write_text("\n".join([good[0], '{"step": 2, "sequences": [tru', "[1, 2]", good[1], "", good[2]]) + "\n")
    reader = TrainingDataReader(path)
    assert [e["step"] for e in reader] == [1, 2, 3]
    assert [p.line for p in reader.problems] == [2, 3]
    fresh = TrainingDataReader(path)
    assert [s.step for s in fresh.steps] == [1, 2, 3]
    assert [p.line for p in fresh.problems] == [2, 3]
    assert "not valid JSON" in fresh.problems[0].message


def test_writer_removes_incomplete_tail_left_by_a_crash(tmp_path, caplog):
    path = write_run(tmp_path / "run.jsonl", [1])
    with open(path, "ab") as f:
        f.write(b'{"step":2,"timestamp":1,"lo')
    with TrainingDataWriter(path) as w:
        w.write_step(make_entry(3))
    assert "incomplete last line" in caplog.text
    reader = TrainingDataReader(path)
    assert [e["step"] for e in reader] == [1, 3]
    assert reader.problems == []


def test_get_step_on_thousands_of_steps_uses_the_index(tmp_path):
    path = tmp_path / "big.jsonl"
    template = make_entry(0)
    with TrainingDataWriter(path, validate=False) as w:
        for step in range(3000):
            w.write_step({**template, "step": step, "loss": step / 1000})
    reader = TrainingDataReader(path)
    assert len(reader.steps) == 3000
    started = time.perf_counter()
    for step in (0, 1234, 2999, 1500):
        entry = reader.get_step(step)
        assert entry["step"] == step and entry["loss"] == step / 1000
    per_call = (time.perf_counter() - started) / 4
    assert per_call < 0.05, f"get_step took {per_call:.3f}s: not served from the offset index?"
    # The file grows: only the new line is read.
    with TrainingDataWriter(path) as w:
        w.write_step({**template, "step": 5000})
    update = reader.refresh()
    assert [s.step for s in update.new] == [5000] and not update.reset
    summary = reader.get_summary()
    assert summary["num_steps"] == 3001 and summary["first_step"] == 0 and summary["last_step"] == 5000
    assert summary["min_loss"] == 0.0 and summary["min_loss_step"] == 0


def test_truncated_or_replaced_file_is_read_anew(tmp_path):
    path = write_run(tmp_path / "run.jsonl", [1, 2, 3])
    reader = TrainingDataReader(path)
    assert len(reader.steps) == 3
    write_run(tmp_path / "other.jsonl", [7])
    os.replace(tmp_path / "other.jsonl", path)
    update = reader.refresh()
    assert update.reset and [s.step for s in update.new] == [7]
    path.write_bytes(b"")
    assert reader.refresh().reset and reader.steps == []


def test_missing_file(tmp_path):
    reader = TrainingDataReader(tmp_path / "nope.jsonl")
    assert reader.steps == [] and reader.get_step(1) is None
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(reader)


def test_cli_validate_and_summary(tmp_path, capsys):
    clean = write_run(tmp_path / "clean.jsonl", [1, 2])
    assert cli_main(["validate", str(clean)]) == 0
    assert "OK, 2 valid entries" in capsys.readouterr().out

    bad = tmp_path / "bad.jsonl"
    entry = make_entry(1)
    broken = json.loads(json.dumps(entry))
    broken["sequences"][0]["predictions"][0]["target_rank"] = 0
    bad.write_text(json.dumps(entry) + "\nnot json\n" + json.dumps(broken) + "\n" + json.dumps(entry) + "\n{\"step\"")
    assert cli_main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{bad}:2: not valid JSON")
    assert out[1].startswith(f"{bad}:3: $.sequences[0].predictions[0].target_rank:")
    assert out[2] == f"{bad}:4: step 1 was already logged on line 1"
    assert out[3] == f"{bad}:5: incomplete last line (no newline at end of file)"

    assert cli_main(["summary", str(clean)]) == 0
    text = capsys.readouterr().out
    assert "num_steps" in text and "2" in text
    assert cli_main(["summary", "--json", str(clean)]) == 0
    assert json.loads(capsys.readouterr().out)["last_step"] == 2
    assert cli_main(["validate", str(tmp_path / "missing.jsonl")]) == 2


def test_module_and_console_script(tmp_path):
    clean = write_run(tmp_path / "clean.jsonl", [1])
    result = subprocess.run([sys.executable, "-m", "seqviz_trackers.validate", str(clean)], capture_output=True, text=True)
    assert result.returncode == 0 and "OK, 1 valid entries" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    result = subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "validate", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and f"{bad}:1:" in result.stdout and "Traceback" not in result.stderr


def test_importing_core_does_not_import_trackers():
    code = ("import sys, seqviz_trackers, seqviz_trackers.cli; "
            "bad = [m for m in ('tensorboard', 'wandb', 'transformers') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class Recorder:
    def __init__(self, fail: bool = False):
        self.fail, self.lines, self.closed = fail, [], False

    def log_step(self, entry, line):
        if self.fail:
            raise ConnectionError("tracker unreachable")
        self.lines.append(line)

    def close(self):
        self.closed = True


def test_logger_fans_out_and_survives_a_failing_mirror(tmp_path, caplog):
    good, bad = Recorder(), Recorder(fail=True)
    path = tmp_path / "run.jsonl"
    with SeqVizLogger(path, mirrors=[bad, good]) as logger:
        for step in (1, 2):
            logger.log_step(make_entry(step))
        with pytest.raises(SchemaValidationError):
            logger.log_step({"step": "x", "sequences": []})
    assert caplog.text.count("Recorder failed") == 1
    assert [json.loads(line)["step"] for line in good.lines] == [1, 2]
    assert good.lines == path.read_bytes().splitlines(keepends=True)
    assert good.closed


def test_logger_writes_only_on_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    mirror = Recorder()
    logger = SeqVizLogger(tmp_path / "r1.jsonl", mirrors=[mirror])
    logger.log_step(make_entry(1))
    logger.close()
    assert not (tmp_path / "r1.jsonl").exists() and mirror.lines == []


def test_logger_asks_for_missing_tracker_extras(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb_panel", None)
    with pytest.raises(ImportError, match=r"pip install wandb \(the 'wandb' extra\)"):
        SeqVizLogger(tmp_path / "x.jsonl", wandb=True)
