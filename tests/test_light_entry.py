"""A step read from its step view (:func:`~seqviz_trackers.format.view.view_columns`): the
training-dynamics tracks and a diff without divergences read from it what they read from the
logged entry, so they can start from the view a columns record holds instead of parsing a line."""

from __future__ import annotations

import copy
import json
import os
import struct

import numpy as np
import pytest

from factories import HOSTILE, make_entry
from seed_files import seed_entry
from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.dynamics.cache import light_entry
from seqviz_trackers.dynamics.compare import compare, compare_logged, record_sequences
from seqviz_trackers.dynamics.routes import diff_json, learned_json, sequences_json, series_json
from seqviz_trackers.dynamics.tracks import Dynamics
from seqviz_trackers.format.entry import columns, facts
from seqviz_trackers.format.view import sequence_columns, step_view, view_columns
from seqviz_trackers.storage.columns import SUFFIX, decode_record, encode_record
from seqviz_trackers.storage.jsonl import TrainingDataReader
from test_step_view import mutations, odd_entry
from web_data import learning_entry

DIVERGENCE_FIELDS = ("divergence",)


def entries() -> list[dict]:
    hostile = make_entry(7, [HOSTILE + " caf\u00e9", "\U0001F600 \u202e"])
    out = [make_entry(3), learning_entry(100, 300), learning_entry(200, 300), hostile, odd_entry(),
           seed_entry(150, 300, with_loss=True)]
    return out + [m for j, b in enumerate(out[:2]) for m in mutations(b, j)]


def same_columns(a, b) -> None:
    for field in ("pos", "prob", "rank", "loss", "entropy", "top1", "rank_gt", "p_lt"):  # (index: into its own list)
        x, y = getattr(a, field), getattr(b, field)
        if x is None or y is None:
            assert x is None and y is None, field
        else:
            np.testing.assert_array_equal(x, y, err_msg=field)
    assert a.width == b.width  # (``contiguous`` only says which reading found it)


def as_stored(entry: dict) -> dict:
    return json.loads(json.dumps(step_view(entry)))  # as a columns record holds it


def same_tracks(a: Dynamics, b: Dynamics, i) -> None:
    assert len(a.tracks) == len(b.tracks) and a.vocab == b.vocab, i
    for x, y in zip(a.tracks, b.tracks):
        assert (x.name, x.tokens, x.token_ids, x.text, x.target_str, x.n, x.width) == \
            (y.name, y.tokens, y.token_ids, y.text, y.target_str, y.n, y.width), i
        for field in [*x.ARRAYS, *x.STATE, *x.BOUND, "steps"]:
            u, v = getattr(x, field), getattr(y, field)
            assert (u is None) == (v is None), (i, field)
            if u is not None:
                np.testing.assert_array_equal(u, v, err_msg=f"{i} {field}")


def test_the_tracks_of_a_step_are_the_same_from_its_view():
    """Each of the odd entries (and seed files with bounded targets) alone, and steps one after
    another: the same tracks, top-1 strings and targets from the entries as from their views."""
    singles = entries() + [seed_entry(150, 300)]
    for i, entry in enumerate(singles):
        full, light = Dynamics(), Dynamics()
        full.add_entry(entry)
        light.add_entry(as_stored(entry))
        same_tracks(full, light, i)
    runs = [[learning_entry(s, 300) for s in (0, 100, 200, 250)], [seed_entry(s, 300) for s in (150, 250)]]
    for i, run in enumerate(runs):
        full, light = Dynamics(), Dynamics()
        for k, entry in enumerate(run):
            full.add_entry(entry)
            light.add_entry(as_stored(entry) if k % 2 == 0 else entry)  # views and lines mixed
        same_tracks(full, light, ("run", i))
        assert full.events().tolist() == light.events().tolist()


def test_a_view_that_is_not_well_formed_gives_no_columns():
    seq = as_stored(make_entry(3))["sequences"][0]
    assert len(sequence_columns(seq)) > 0
    for field, value in [("position", "x"), ("target_prob", ["p"]), ("top1_str", None)]:
        bad = {**seq, "view": {**seq["view"], field: value}}
        assert view_columns(bad) is None and len(sequence_columns(bad)) == 0, field
    short = {**seq, "view": {**seq["view"], "loss": seq["view"]["loss"][:-1]}}
    assert view_columns(short) is None
    assert view_columns({"tokens": ["a"]}) is None


def same_numbers(x, y, where="") -> None:
    """``x == y``, but floats need only agree to a float32 columns record's precision, as
    seen through 4 significant digits (a difference of two float32 losses: 1e-6 at most)."""
    if isinstance(x, float) and isinstance(y, float):
        assert x == pytest.approx(y, rel=1e-3, abs=1e-6), where
    elif isinstance(x, dict) and isinstance(y, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            same_numbers(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list) and isinstance(y, list):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            same_numbers(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


def without_divergence(diff: dict) -> dict:
    out = copy.deepcopy(diff)
    out["summary"]["mean_divergence"] = None
    for name in ("learned", "forgotten", "worsened", "improved"):
        for row in out[name]:
            row["divergence"] = None
    for part in out.get("per_token", ()):
        part["divergence"] = [None] * len(part["divergence"])
    return out


@pytest.mark.parametrize("pair", [(100, 200), (0, 250)])
def test_a_diff_without_divergences_is_the_diff_of_the_views(pair):
    a, b = (learning_entry(step, 300) for step in pair)
    full = compare(a, b, limit=50, per_token=True)
    assert full["summary"]["mean_divergence"] is not None
    light = compare(*(as_stored(e) for e in (a, b)), limit=50, per_token=True, divergence=False)
    assert light == without_divergence(full)
    assert compare(a, b, limit=50, per_token=True, divergence=False) == light


def write_run(path, steps):
    with TrainingDataWriter(path) as w:
        for step in steps:
            w.write_step(learning_entry(step, 300, long_tokens=24 if step == 200 else 0))


def test_a_run_read_from_its_stored_views_answers_as_from_its_lines(tmp_path, monkeypatch):
    """The same run with and without its columns file: the dynamics (whose first steps come
    from the records' views) and the diffs answer the same; without divergences no line is parsed."""
    import shutil

    steps = [0, 50, 100, 150, 200, 250]
    cached, plain = tmp_path / "cached.jsonl", tmp_path / "plain.jsonl"
    write_run(cached, steps)
    shutil.copy(cached, plain)
    readers = [TrainingDataReader(cached), TrainingDataReader(plain)]
    assert (tmp_path / ("cached.jsonl" + SUFFIX)).exists() and not (tmp_path / ("plain.jsonl" + SUFFIX)).exists()

    parsed = []
    original = TrainingDataReader.read

    def counting(self, info):
        parsed.append((os.path.basename(self.path), info.step))
        return original(self, info)

    monkeypatch.setattr(TrainingDataReader, "read", counting)
    answers = []
    for reader in readers:
        answers.append([sequences_json(reader), learned_json(reader), series_json(reader, 0, 3),
                        series_json(reader, 1, 5, points=4), sequences_json(reader, 200),
                        diff_json(reader, 100, 250, limit=30, per_token=True, divergence=False)])
    assert answers[0][:-1] == answers[1][:-1]
    same_numbers(answers[0][-1], answers[1][-1])  # the cached run's diff: from its columns records
    assert [p for p in parsed if p[0] == "cached.jsonl"] == []  # views and columns only
    assert {s for name, s in parsed if name == "plain.jsonl"} >= {100, 250}

    views = []
    original_view = TrainingDataReader.read_view
    monkeypatch.setattr(TrainingDataReader, "read_view", lambda self, *a, **k: views.append(1) or original_view(self, *a, **k))
    colours = diff_json(readers[0], 50, 200, limit=0, per_token=True, divergence=False)  # what the page colours with
    assert views == [] and colours["per_token"] and colours["learned"] == []
    same_numbers(colours, diff_json(readers[1], 50, 200, limit=0, per_token=True, divergence=False))

    full = [diff_json(r, 100, 250, limit=30, per_token=True) for r in readers]
    assert full[0] == full[1] and without_divergence(full[0]) == answers[1][-1]
    assert ("cached.jsonl", 100) in parsed  # the divergences need every candidate: the lines


def test_light_entry_falls_back_to_the_line(tmp_path):
    path = tmp_path / "run.jsonl"
    with TrainingDataWriter(path) as w:
        w.write_step(seed_entry(150, 300))  # bounded targets: in the view too
        w.write_step(learning_entry(200, 300))
    reader = TrainingDataReader(path)
    for info in reader.steps:
        assert light_entry(reader, info) == as_stored(reader.read(info))
    (tmp_path / ("run.jsonl" + SUFFIX)).unlink()
    reader = TrainingDataReader(path)
    assert light_entry(reader, reader.steps[1]) == reader.read(reader.steps[1])


def test_columns_read_the_longer_candidate_list_as_facts_does():
    """top_k beside a longer top_20 (both written by some of the original tool's users):
    the top-1 of the columns is facts()' (the longer list's), not top_k's first."""
    e = make_entry(3)
    pred = e["sequences"][0]["predictions"][0]
    pred["top_20"] = [{"token_id": 999, "token_str": "x", "prob": 0.9}] + \
        [{"token_id": c[0], "token_str": c[1], "prob": c[2]} for c in pred["top_k"]]
    assert columns(e["sequences"][0]).top1[0] == facts(pred).top[0][0] == 999


def test_the_columns_of_a_view_are_those_of_its_sequence():
    for i, entry in enumerate(entries() + [seed_entry(150, 300)]):  # the last with bounded targets
        view = as_stored(entry)
        full_seqs = [s for s in entry["sequences"] if isinstance(s, dict)]
        for full, seq in zip(full_seqs, [s for s in view["sequences"] if isinstance(s, dict)]):
            cols = view_columns(seq)
            assert cols is not None, i
            same_columns(cols, columns(full))
    assert view_columns({"tokens": ["a"]}) is None
    assert view_columns({"tokens": ["a"], "view": {"position": ["x"]}}) is None


def test_a_diff_of_two_views_is_the_diff_of_their_entries():
    """Every pair of the odd entries with the one they were made from (and one after another),
    seed files with bounded targets among them: the same diff whether the steps are their
    entries or their views."""
    all_entries = entries() + [seed_entry(150, 300), seed_entry(250, 300)]
    pairs = list(zip(all_entries, all_entries[1:])) + [(all_entries[0], e) for e in all_entries[6:]] + \
        [(e, all_entries[1]) for e in all_entries[6:]]
    seen_rows = 0
    for i, (a, b) in enumerate(pairs):
        views = [json.loads(json.dumps(step_view(e))) for e in (a, b)]
        want = compare(a, b, limit=50, per_token=True, divergence=False)
        assert compare(*views, limit=50, per_token=True, divergence=False) == want, i
        seen_rows += sum(len(want[k]) for k in ("learned", "forgotten", "worsened", "improved"))
    assert seen_rows > 100


def record_side(entry: dict, read: list) -> tuple:
    """A step as a diff reads it from its columns record (the entry read, into ``read``, only for rows)."""
    raw = encode_record(entry, 0, 1)
    _magic, hlen, blen, _vlen = struct.unpack_from("<4sIII", raw)
    _step, seqs, _vocab = decode_record(json.loads(raw[16:16 + hlen]), raw[16 + hlen:16 + hlen + blen])
    return entry["step"], entry.get("loss"), record_sequences([(k, cols) for k, _text, cols in seqs],
                                                               lambda: read.append(id(entry)) or as_stored(entry))


def test_a_diff_of_two_columns_records_is_the_diff_of_their_entries():
    """The same pairs: the numbers from the records (float32), the rows' strings from the
    views, each read once and only when a row is listed."""
    all_entries = entries() + [seed_entry(150, 300), seed_entry(250, 300)]
    pairs = list(zip(all_entries, all_entries[1:])) + [(all_entries[0], e) for e in all_entries[6:]]
    for i, (a, b) in enumerate(pairs):
        want = compare(a, b, limit=50, per_token=True, divergence=False)
        read: list = []
        got = compare_logged(record_side(a, read), record_side(b, read), limit=50, per_token=True, divergence=False)
        same_numbers(got, want, str(i))
        assert len(read) == len(set(read)), i
        read.clear()
        got = compare_logged(record_side(a, read), record_side(b, read), limit=0, per_token=True, divergence=False)
        assert read == [], i
        same_numbers(got["per_token"], want["per_token"], str(i))


def test_a_sequence_with_an_odd_view_and_no_predictions_adds_nothing_and_does_not_raise():
    """A logged sequence (a hostile file) that carries a ``view`` of its own, not well-formed."""
    dyn = Dynamics()
    seq = {"name": "odd", "tokens": ["a", "b"], "view": {"position": "x"}}
    dyn.add_entry({"step": 1, "sequences": [seq]})
    dyn.add_entry({"step": 2, "sequences": [{**seq, "view": {"position": [0], "target_token_id": 5}}]})
    assert dyn.tracks[0].n == 2 and not dyn.tracks[0].present[:2].any()
