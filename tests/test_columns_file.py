"""The columns file: dynamics built from it equal dynamics built from the entries, and a
columns file that does not match its JSONL (stale, damaged, deleted) is never trusted."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from factories import HOSTILE, bpe_tokenizer
from seqviz_trackers import TrainingDataReader, TrainingDataWriter, tensor_to_training_entry
from seqviz_trackers.storage import columns as columns_file
from seqviz_trackers.dynamics import Dynamics, dynamics_for
from seqviz_trackers.storage.jsonl import LocalFiles, encode_entry

TEXTS = {"probe": "To be, or not to be, that is the question:",
         "hostile": f"{HOSTILE} \u2014 caf\u00e9 \U0001F600 \"quoted\" \\ back",
         "third": "Whether 'tis nobler in the mind to suffer"}


def entry_at(step: int, names: list[str], named: bool = True, texts: dict[str, str] = TEXTS) -> dict:
    """A real entry in which about half the targets are top-1 at random: many gains and losses."""
    tok = bpe_tokenizer()
    tok.pad_token = tok.eos_token
    enc = tok([texts[n] for n in names], return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    gen = torch.Generator().manual_seed(step)
    logits = torch.randn(*ids.shape, len(tok), generator=gen) * 3
    hit = (torch.rand(ids.shape[0], ids.shape[1] - 1, generator=gen) < 0.5).float() * 20
    logits[:, :-1].scatter_add_(2, ids[:, 1:, None], hit[..., None])
    return tensor_to_training_entry(logits, ids, tok, step=step, attention_mask=enc["attention_mask"],
                                    names=names if named else None, timestamp=1000.0 + step)


def story(named: bool = True) -> list[dict]:
    """12 steps; "hostile" is absent at steps 4 and 5; "third" changes its text at step 7."""
    entries = []
    for step in range(12):
        names = ["probe", "third"] if step in (4, 5) else ["probe", "hostile", "third"]
        texts = dict(TEXTS, third="A different line from step seven on") if step >= 7 else TEXTS
        entries.append(entry_at(step * 10, names, named, texts))
    return entries


def write(path, entries, **kwargs) -> str:
    with TrainingDataWriter(path, **kwargs) as w:
        for e in entries:
            w.write_step(e)
    return str(path)


def from_entries(entries) -> Dynamics:
    dyn = Dynamics()
    for e in entries:
        dyn.add_entry(e)
    return dyn


def assert_same(a: Dynamics, b: Dynamics) -> None:
    assert a.steps.view().tolist() == b.steps.view().tolist()
    assert a.step_seqs == b.step_seqs
    assert a.events().tolist() == b.events().tolist()
    assert {k: v.tolist() for k, v in a.per_step().items()} == {k: v.tolist() for k, v in b.per_step().items()}
    assert a.vocab == b.vocab
    assert len(a.tracks) == len(b.tracks)
    for ta, tb in zip(a.tracks, b.tracks):
        assert (ta.name, ta.tokens, ta.token_ids, ta.target_str, ta.n, ta.width) == \
               (tb.name, tb.tokens, tb.token_ids, tb.target_str, tb.n, tb.width)
        for field in ("prob", "loss", "entropy", "rank", "top1", "present"):
            np.testing.assert_array_equal(getattr(ta, field)[:ta.n], getattr(tb, field)[:tb.n], err_msg=field)
        for field in ("target", "since1", "since5", "last_seen", "times_forgotten"):
            np.testing.assert_array_equal(getattr(ta, field), getattr(tb, field), err_msg=field)


def counting_reads(reader, monkeypatch) -> list[int]:
    reads: list[int] = []
    real = reader.read
    monkeypatch.setattr(reader, "read", lambda info: reads.append(info.step) or real(info))
    return reads


@pytest.mark.parametrize("named", [True, False], ids=["named", "by_token_ids"])
def test_same_dynamics_as_from_the_entries_with_far_fewer_parses(tmp_path, monkeypatch, named):
    entries = story(named)
    path = write(tmp_path / "run.jsonl", entries)
    assert os.path.getsize(path + columns_file.SUFFIX) > 0
    reader = TrainingDataReader(path)
    reads = counting_reads(reader, monkeypatch)
    dyn = dynamics_for(reader)
    expected = from_entries(entries)
    assert_same(dyn, expected)
    assert len(expected.events()) > 10 and (expected.per_step()["gained"] > 0).sum() > 5  # a story worth comparing
    # No line parsed: the first step (new sequences) and the step where "third" got new text
    # (named), or where "third" is a new sequence by its token ids, come from their records' views.
    assert reads == []
    assert "".join(dyn.tracks[1].tokens).startswith(HOSTILE) and dyn.tracks[1].name == ("hostile" if named else None)


def test_a_columns_file_that_does_not_match_is_not_trusted(tmp_path, monkeypatch):
    entries = story()
    other = [entry_at(e["step"], ["probe", "hostile", "third"]) for e in entries]
    for e in other:
        e["timestamp"] += 0.5  # same steps and shapes, another run
    a = write(tmp_path / "a.jsonl", entries)
    b = write(tmp_path / "b.jsonl", other, columns=False)
    assert not os.path.exists(b + columns_file.SUFFIX)
    shutil.copy(a + columns_file.SUFFIX, b + columns_file.SUFFIX)  # stale: a's columns next to b's lines
    reader = TrainingDataReader(b)
    reads = counting_reads(reader, monkeypatch)
    assert_same(dynamics_for(reader), from_entries(other))
    assert reads == [e["step"] for e in other]  # every record rejected, every line parsed


@pytest.mark.parametrize("damage", ["truncated", "garbage", "emptied"])
def test_damaged_columns_file_falls_back_and_the_next_writer_repairs_it(tmp_path, monkeypatch, damage):
    entries = story()
    path = write(tmp_path / "run.jsonl", entries[:8])
    cols = path + columns_file.SUFFIX
    size = os.path.getsize(cols)
    with open(cols, "r+b") as f:
        if damage == "truncated":
            f.truncate(size - 100)          # the last record cut short
        elif damage == "garbage":
            f.seek(size // 2)
            f.write(b"\xff" * 64)           # a record's header or body overwritten
        else:
            f.truncate(0)
    reader = TrainingDataReader(path)
    assert_same(dynamics_for(reader), from_entries(entries[:8]))

    write(path, entries[8:])                # a resumed run appends; its writer cuts off what is damaged
    reader = TrainingDataReader(path)
    reads = counting_reads(reader, monkeypatch)
    assert_same(dynamics_for(reader), from_entries(entries))
    assert set(e["step"] for e in entries[8:]).isdisjoint(reads)  # the new records are used
    assert set(reads) <= {e["step"] for e in entries[:8]}  # lines parsed: only where a record was damaged


def test_a_new_file_in_the_same_place_starts_a_new_columns_file(tmp_path):
    entries = story()
    path = write(tmp_path / "run.jsonl", entries)
    old = os.path.getsize(path + columns_file.SUFFIX)
    os.remove(path)
    write(path, entries[:2])
    assert 0 < os.path.getsize(path + columns_file.SUFFIX) < old / 3
    assert_same(dynamics_for(TrainingDataReader(path)), from_entries(entries[:2]))


def test_a_failing_columns_file_loses_no_line(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(columns_file, "encode_record", broken)
    entries = story()[:4]
    with caplog.at_level(logging.WARNING):
        path = write(tmp_path / "run.jsonl", entries)
    assert [s.step for s in TrainingDataReader(path).steps] == [e["step"] for e in entries]
    warnings = [r.getMessage() for r in caplog.records if "columns file switched off" in r.getMessage()]
    assert len(warnings) == 1 and "disk quota exceeded" in warnings[0]
    monkeypatch.undo()
    assert_same(dynamics_for(TrainingDataReader(path)), from_entries(entries))


def test_record_round_trip_keeps_keys_positions_and_strings():
    entry = entry_at(5, ["probe", "hostile"], named=False)
    entry["sequences"][1]["predictions"] = entry["sequences"][1]["predictions"][::2]  # positions 0, 2, 4, ...
    raw = columns_file.encode_record(entry, 123, 456)
    header_len = int.from_bytes(raw[4:8], "little")
    import json

    start = columns_file._PREFIX.size
    header = json.loads(raw[start:start + header_len])
    assert (header["step"], header["offset"], header["length"]) == (5, 123, 456)
    step, seqs, vocab = columns_file.decode_record(header, raw[start + header_len:])
    assert step == 5 and [k[0] for k, _t, _c in seqs] == ["ids", "ids"]
    assert seqs[0][0][1] == tuple(entry["sequences"][0]["token_ids"])
    c0, c1 = seqs[0][2], seqs[1][2]
    assert c0.contiguous and not c1.contiguous and c1.pos.tolist() == list(range(0, 2 * len(c1), 2))
    preds = entry["sequences"][1]["predictions"]
    np.testing.assert_array_equal(c1.prob, np.array([p["target_prob"] for p in preds], dtype=np.float32))
    assert c1.rank.tolist() == [p["target_rank"] for p in preds]
    assert c1.top1.tolist() == [p["top_k"][0][0] for p in preds]
    firsts = {p["top_k"][0][0]: p["top_k"][0][1] for s in entry["sequences"] for p in s["predictions"]}
    assert vocab == firsts


def test_the_logger_keeps_a_columns_file_beside_the_file_and_the_tensorboard_assets(tmp_path, monkeypatch):
    from seqviz_trackers import SeqVizLogger
    from seqviz_trackers.format.view import step_view
    from tb_plugin.writer import asset_path

    made = []
    real = columns_file._make_view_section
    monkeypatch.setattr(columns_file, "_make_view_section", lambda entry: made.append(entry["step"]) or real(entry))
    entries = story()[:3]
    with SeqVizLogger(tmp_path / "steps.jsonl", tensorboard=tmp_path / "tb") as logger:
        for e in entries:
            logger.log_step(e)
    assert made == [e["step"] for e in entries]  # one view per step, for both files
    for path in (str(tmp_path / "steps.jsonl"), str(asset_path(tmp_path / "tb"))):
        reader = TrainingDataReader(path)
        cols = columns_file.ColumnsReader(path, reader.files)
        records = [cols.get(info) for info in reader.steps]
        assert [r[0] for r in records if r is not None] == [e["step"] for e in entries], path
        assert all(cols.view(info) is not None for info in reader.steps)
        assert [reader.read_view(info) for info in reader.steps] == [step_view(reader.read(info)) for info in reader.steps]


def one_record_at_a_time(reader) -> Dynamics:
    """Dynamics built one step at a time: each step's record on its own, or else its entry."""
    cols = columns_file.ColumnsReader(reader.path, reader.files)
    dyn = Dynamics()
    for info in reader.steps:
        record = cols.get(info)
        if record is None or not dyn.add_columns(*record):
            dyn.add_entry(reader.read(info))
    return dyn


def test_blocks_of_records_build_the_same_dynamics_as_one_record_at_a_time(tmp_path, monkeypatch):
    entries = []
    for step in range(40):
        entry = entry_at(step * 3, ["probe", "third"] if 10 <= step < 14 else ["probe", "hostile", "third"])
        if step in (20, 21):  # gaps in the positions: these records are decoded one by one
            entry["sequences"][0]["predictions"] = entry["sequences"][0]["predictions"][::2]
        for pred in entry["sequences"][-1]["predictions"] if step >= 25 else ():
            if pred["target_rank"] > 20:  # a target outside the candidates, rank not logged: a bound
                del pred["target_rank"]
        entries.append(entry)
    path = write(tmp_path / "run.jsonl", entries[:17])
    reader = TrainingDataReader(path)
    assert_same(dynamics_for(reader), from_entries(entries[:17]))
    write(path, entries[17:])  # appended later: blocks continue the state built so far
    reads = counting_reads(reader, monkeypatch)
    dyn = dynamics_for(reader)
    assert reads == []
    for expected in (from_entries(entries), one_record_at_a_time(TrainingDataReader(path))):
        assert_same(dyn, expected)
        for ta, tb in zip(dyn.tracks, expected.tracks):
            for field in ("rank_gt", "p_lt"):
                a, b = getattr(ta, field), getattr(tb, field)
                assert (a is None) == (b is None), field
                if a is not None:
                    np.testing.assert_array_equal(a[:ta.n], b[:tb.n], err_msg=field)
    assert any(t.p_lt is not None for t in dyn.tracks)  # targets outside the candidates: bounds kept
    assert len(dyn.events()) > 50

    items = list(columns_file.ColumnsReader(path, reader.files).records(reader.steps))
    blocks = [len(i) for i in items if isinstance(i, columns_file.Block)]
    singles = [i[0] for i in items if isinstance(i, tuple)]
    assert singles == [60, 63] and sum(blocks) + len(singles) == 40 and max(blocks) >= 10


def test_blocks_reject_records_that_do_not_match(tmp_path):
    entries = story()
    path = write(tmp_path / "run.jsonl", entries)
    reader = TrainingDataReader(path)
    cols = path + columns_file.SUFFIX
    with open(cols, "r+b") as f:  # one byte of the fourth record's body changed
        size = os.path.getsize(cols)
        f.seek(size * 4 // 12 - 40)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    items = list(columns_file.ColumnsReader(path, reader.files).records(reader.steps))
    assert sum(1 if not isinstance(i, columns_file.Block) else len(i) for i in items) == 12
    assert items.count(None) == 1
    assert_same(dynamics_for(reader), from_entries(entries))


class WholeFiles(LocalFiles):
    """Local files a reader must read whole (as on a remote file system): the index without the columns file."""

    small_reads = False


class CountingFiles(LocalFiles):
    """Local files that count the bytes read from the JSONL file."""

    def __init__(self) -> None:
        self.read = 0

    def open(self, path: str):
        raw, files = super().open(path), self

        class Counted:
            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                raw.close()

            def seek(self, *a):
                return raw.seek(*a)

            def read(self, n: int = -1) -> bytes:
                data = raw.read(n)
                files.read += len(data) if path.endswith(".jsonl") else 0
                return data

        return Counted()


def same_index(path: str, files=None) -> TrainingDataReader:
    """A reader of ``path`` (indexing with the columns file), checked against one that reads the file whole."""
    reader, whole = TrainingDataReader(path, files=files), TrainingDataReader(path, files=WholeFiles())
    assert reader.steps == whole.steps
    assert reader.problems == whole.problems
    return reader


def test_the_index_comes_from_the_columns_file_reading_only_the_start_and_end_of_each_line(tmp_path):
    entries = story()
    path = write(tmp_path / "run.jsonl", entries[:5])
    files = CountingFiles()
    reader = same_index(path, files)
    assert [s.step for s in reader.steps] == [e["step"] for e in entries[:5]]
    assert files.read < os.path.getsize(path) / 4
    # lines without records (a writer without the columns file), a blank and a broken line, then records again
    write(path, entries[5:7], columns=False)
    with open(path, "ab") as f:
        f.write(b"\n{not json}\n")
    write(path, entries[7:])
    before = files.read
    assert [s.step for s in reader.refresh().new] == [e["step"] for e in entries[5:]]
    between = sum(len(encode_entry(e)) for e in entries[5:7]) + 12
    assert files.read - before < between + os.path.getsize(path) / 4
    assert reader.steps == TrainingDataReader(path, files=WholeFiles()).steps
    assert [p.line for p in reader.problems] == [9]
    same_index(path)


@pytest.mark.parametrize("change", ["other run", "rewritten in place", "truncated jsonl", "truncated columns",
                                    "garbage columns", "lines inserted"])
def test_the_index_is_right_whatever_the_columns_file_holds(tmp_path, change):
    entries = story()
    path = write(tmp_path / "run.jsonl", entries)
    cols = path + columns_file.SUFFIX
    data = open(path, "rb").read()
    if change == "other run":  # another run's lines with the same steps and shapes, beside these records
        other = [dict(e, timestamp=e["timestamp"] + 0.5, loss=1.25) for e in entries]
        write(tmp_path / "b.jsonl", other, columns=False)
        shutil.copy(tmp_path / "b.jsonl", path)
    elif change == "rewritten in place":  # same size, lines moved: records point into the middle of lines
        lines = data.splitlines(keepends=True)
        with open(path, "r+b") as f:
            f.write(b"".join(lines[1:] + lines[:1]))
    elif change == "truncated jsonl":
        with open(path, "r+b") as f:
            f.truncate(len(data) - 1000)
    elif change == "truncated columns":
        with open(cols, "r+b") as f:
            f.truncate(os.path.getsize(cols) // 2)
    elif change == "garbage columns":
        with open(cols, "r+b") as f:
            f.seek(os.path.getsize(cols) // 3)
            f.write(b"\xff" * 64)
    else:
        with open(path, "wb") as f:
            f.write(b"\n\n" + data)
    reader = same_index(path)
    assert_same(dynamics_for(reader), from_entries([reader.read(s) for s in reader.steps]))
    if change == "other run":
        assert {s.loss for s in reader.steps} == {1.25}


# -- the step view in the record ----------------------------------------------------------

def odd_entries() -> list[dict]:
    """Entries of every form a writer may get: the converter's, the original tool's (bounded
    targets, ``top_20``), fields missing or of odd types, hostile and non-ASCII text,
    sequences that are not objects, keys that JSON turns into strings, tuples."""
    import copy

    from factories import make_entry
    from seed_files import seed_entry
    from test_step_view import mutations, odd_entry

    base = entry_at(3, ["probe", "hostile"])
    hostile = copy.deepcopy(base)
    hostile["metadata"]["note"] = HOSTILE + " \u2028 \U0001F600"
    hostile["sequences"][0]["name"] = HOSTILE
    for pred in hostile["sequences"][0]["predictions"][:3]:
        pred["target_token_str"] = HOSTILE
        pred["top_k"][0][1] = "\u00e9\u0000" + HOSTILE
    shapes = copy.deepcopy(base)
    shapes["sequences"].append("not a sequence")
    shapes["sequences"][0]["view"] = "a field named view"  # replaced by the view, where it was
    shapes["sequences"][1]["predictions"].append({"target_token_id": 1})  # no position: left out
    keys = copy.deepcopy(base)
    keys["metadata"][7] = "an int key"
    keys["metadata"]["7"] = "the same key once written"
    keys["sequences"].append([{1: "in a sequence that is not an object"}])
    odd_seqs = {**base, "sequences": {1: "not a list", "1": "of sequences"}}
    shapes["extra"] = {"nested": [1, 2.5, None, True]}
    no_preds = copy.deepcopy(base)
    del no_preds["sequences"][0]["predictions"]
    no_preds["sequences"][1]["predictions"] = []
    tuples = copy.deepcopy(base)
    tuples["sequences"][0]["predictions"][0]["top_k"] = tuple(tuples["sequences"][0]["predictions"][0]["top_k"])
    tuple_preds = copy.deepcopy(base)
    tuple_preds["sequences"][1]["predictions"] = tuple(tuple_preds["sequences"][1]["predictions"])
    tuple_seqs = copy.deepcopy(base)
    tuple_seqs["sequences"] = tuple(tuple_seqs["sequences"])
    no_seqs = {k: v for k, v in base.items() if k != "sequences"}
    reordered = {"sequences": base["sequences"], "metadata": base["metadata"], **base}  # header fields first in the line
    entries = [base, hostile, shapes, no_preds, tuples, tuple_preds, tuple_seqs, no_seqs, reordered, keys, odd_seqs, odd_entry(),
               make_entry(4, [HOSTILE + " text"]), seed_entry(0), seed_entry(150, with_loss=True)]
    entries += [m for m in mutations(base, 7) if writable(m)][:25]
    return [{**e, "step": i, "timestamp": 1000.0 + i} for i, e in enumerate(entries)]


def writable(entry: dict) -> bool:
    try:
        encode_entry(entry, validate=False)
    except ValueError:  # SchemaValidationError: infinite, say
        return False
    return True


def holds_tuple(value) -> bool:
    if isinstance(value, tuple):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(holds_tuple(v) for v in items)


def views_of(path: str) -> tuple[list[dict], list[dict], list[int]]:
    """(read_view of each step, step_view of each parsed line, the steps whose view parsed
    its line); the views encoded (what the step route sends) are client_json's of the parsed."""
    from seqviz_trackers.format.view import step_view
    from seqviz_trackers.storage.jsonl import EncodedJSON, client_json

    reader = TrainingDataReader(path)
    parsed: list[int] = []
    real = reader.read
    reader.read = lambda info: parsed.append(info.step) or real(info)
    views = [reader.read_view(info) for info in reader.steps]
    encoded = [reader.read_view(info, encoded=True) for info in reader.steps]
    plain = TrainingDataReader(path)
    expected = [step_view(plain.read(info)) for info in plain.steps]
    assert all(type(e) is EncodedJSON for e in encoded)
    assert [bytes(e) for e in encoded] == [client_json(v) for v in expected]
    assert parsed[:len(parsed) // 2] == parsed[len(parsed) // 2:]  # the same lines parsed both times
    return views, expected, parsed[:len(parsed) // 2]


def test_the_record_holds_the_step_view_of_its_line_whatever_the_entry(tmp_path):
    from seqviz_trackers.storage.jsonl import client_json

    entries = odd_entries()
    path = write(tmp_path / "run.jsonl", entries, validate=False)
    views, expected, parsed = views_of(path)
    assert len(views) == len(entries)
    for got, want in zip(views, expected):
        assert got == want and client_json(got) == client_json(want)  # the same values, keys in the same order
    # parsed: only entries with tuples where the view reads lists or keys that are not
    # strings (JSON makes them lists and strings)
    assert {4, 5, 6, 9, 10} <= set(parsed) <= {e["step"] for e in entries if holds_tuple(e)} | {9, 10}
    assert len(parsed) < len(entries) / 4


def test_an_entry_the_writer_refuses_leaves_no_record_and_an_odd_line_is_parsed(tmp_path):
    import json
    import math

    from seqviz_trackers.format.schema import SchemaValidationError
    from seqviz_trackers.storage.jsonl import client_json

    path = tmp_path / "run.jsonl"
    good = entry_at(1, ["probe"])
    nan = entry_at(2, ["probe"])
    nan["sequences"][0]["predictions"][1]["entropy"] = float("nan")  # the view reads it as unknown
    nan["metadata"]["lr"] = float("nan")  # the view keeps it: JSON cannot hold it, the line is parsed
    with TrainingDataWriter(path, validate=False) as w:
        w.write_step(good)
        size = os.path.getsize(str(path) + columns_file.SUFFIX)
        with pytest.raises(SchemaValidationError):
            w.write_step(nan)
        assert os.path.getsize(str(path) + columns_file.SUFFIX) == size
        w.write_line(json.dumps(nan).encode() + b"\n", nan)  # a line made elsewhere, with its NaN
    views, expected, parsed = views_of(str(path))
    assert [client_json(v) for v in views] == [client_json(v) for v in expected] and parsed == [2]
    assert views[1]["sequences"][0]["view"]["entropy"][1] is None and math.isnan(views[1]["metadata"]["lr"])


@pytest.mark.parametrize("damage", ["view", "line", "stale", "svc2"])
def test_a_view_that_may_not_be_its_lines_is_not_used(tmp_path, damage):
    from seqviz_trackers.storage.jsonl import client_json

    entries = [entry_at(s, ["probe", "hostile"]) for s in (10, 20, 30)]
    path = write(tmp_path / "run.jsonl", entries)
    cols = path + columns_file.SUFFIX
    if damage == "view":  # a byte of the second record's compressed view
        reader = columns_file.ColumnsReader(path, LocalFiles())
        info = TrainingDataReader(path).steps[1]
        header, body, blen, vlen = reader._lookup(info)
        with open(cols, "r+b") as f:
            f.seek(body + blen + vlen // 2)
            byte = f.read(1)
            f.seek(body + blen + vlen // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "line":  # the second line changed in place, same length and header
        data = open(path, "rb").read()
        token = entries[1]["sequences"][0]["tokens"][1].encode()
        at = data.index(b'"tokens":[', data.index(b'{"step":20'))
        where = data.index(token, at)
        data = data[:where] + b"X" * len(token) + data[where + len(token):]
        open(path, "wb").write(data)
    elif damage == "stale":  # the records of another run with the same steps and shapes
        other = [entry_at(s, ["probe", "third"], texts={"probe": TEXTS["probe"], "third": TEXTS["hostile"]}) for s in (10, 20, 30)]
        write(tmp_path / "other.jsonl", other)
        shutil.copy(str(tmp_path / "other.jsonl") + columns_file.SUFFIX, cols)
    else:  # records of the layout before: no view, but the dynamics and the index still read them
        reader = TrainingDataReader(path)
        records = []
        for e, info in zip(entries, reader.steps):
            raw = columns_file.encode_record(e, info.offset, info.length)  # no line: no view
            hlen, blen = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little")
            records.append(b"SVC2" + raw[4:12] + raw[16:16 + hlen + blen])
        open(cols, "wb").write(b"".join(records))
        assert all(r is not None for r in (columns_file.ColumnsReader(path, LocalFiles()).get(i) for i in reader.steps))
    views, expected, parsed = views_of(path)
    assert [client_json(v) for v in views] == [client_json(v) for v in expected]
    assert parsed == {"view": [20], "line": [20], "stale": [10, 20, 30], "svc2": [10, 20, 30]}[damage]
    if damage == "line":
        assert views[1]["sequences"][0]["tokens"][1] == "X" * len(entries[1]["sequences"][0]["tokens"][1])


def test_a_resumed_writer_appends_records_with_views_after_those_of_the_layout_before(tmp_path):
    entries = [entry_at(s, ["probe"]) for s in (1, 2, 3, 4)]
    path = write(tmp_path / "run.jsonl", entries[:2])
    reader = TrainingDataReader(path)
    old = []
    for e, info in zip(entries, reader.steps):
        raw = columns_file.encode_record(e, info.offset, info.length)
        hlen, blen = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little")
        old.append(b"SVC2" + raw[4:12] + raw[16:16 + hlen + blen])
    open(path + columns_file.SUFFIX, "wb").write(b"".join(old))
    write(path, entries[2:])
    views, expected, parsed = views_of(path)
    assert views == expected and parsed == [1, 2]
    assert_same(dynamics_for(TrainingDataReader(path)), from_entries(entries))
