"""One prediction's candidates read alone (``TrainingDataReader.prediction_at``, the
``candidates`` route): where the columns record maps the line's prediction objects to its
rows, the object is parsed by itself instead of the whole line, and the answer is the one
parsing the line gives, for every kind of entry; otherwise, or when the line changed, the
line is parsed as before."""

from __future__ import annotations

import json

import pytest

from factories import HOSTILE, make_entry
from seed_files import seed_entry
from seqviz_trackers import TrainingDataReader, TrainingDataWriter
from seqviz_trackers.format.view import candidates_at
from seqviz_trackers.runs import NotFound
from seqviz_trackers.serve import api
from seqviz_trackers.serve.server import make_runs
from test_step_view import mutations, odd_entry
from web_data import learning_entry


def answers(path, entry, monkeypatch) -> tuple[int, int]:
    """Ask the route for every prediction of ``entry`` (and for some that are not there),
    check each answer against the line parsed whole; (answers read alone, answers in all)."""
    parsed = []
    whole_line = api._with_candidates

    def counting(runs, run, step):
        parsed.append(step)
        return whole_line(runs, run, step)

    monkeypatch.setattr(api, "_with_candidates", counting)
    api._CANDIDATES.clear()
    runs = make_runs(file=path)
    logged = TrainingDataReader(path).latest()
    asked = 0
    for s, seq in enumerate(logged.get("sequences") or []):
        preds = seq.get("predictions") if isinstance(seq, dict) else None
        positions = {p.get("position") for p in preds if isinstance(p, dict)} if isinstance(preds, list) else set()
        for pos in sorted(p for p in positions if isinstance(p, int) and not isinstance(p, bool)) + [10 ** 6]:
            want = candidates_at(logged, s, pos)
            try:
                query = {"run": path.stem, "step": str(logged["step"]), "seq": str(s), "pos": str(pos)}
                got = api.candidates_impl(runs, query)
            except NotFound:
                got = None
            assert (got and got["top_k"]) == want, (s, pos)
            asked += 1
    return asked - len(parsed), asked


def write(path, entry) -> None:
    with TrainingDataWriter(path, validate=False) as w:
        w.write_step(entry)


@pytest.mark.parametrize("kind", ["converter", "hostile", "learning", "seed"])
def test_a_prediction_is_read_alone_and_answers_as_the_line_parsed(tmp_path, monkeypatch, kind):
    entry = {"converter": lambda: make_entry(3),
             "hostile": lambda: make_entry(7, [HOSTILE + " caf\u00e9", "\U0001F600 \u202e"]),
             "learning": lambda: learning_entry(100, 300),
             "seed": lambda: seed_entry(150, 300, with_loss=True)}[kind]()
    path = tmp_path / "run.jsonl"
    write(path, entry)
    alone, asked = answers(path, entry, monkeypatch)
    assert alone == asked > 10  # absent positions too: the record lists every prediction


def test_odd_entries_answer_as_the_line_parsed(tmp_path, monkeypatch):
    """Entries whose rows are not their predictions (left out, repeated positions, odd
    fields) are not read alone, or read alone only where the object read is the row's."""
    alone = asked = 0
    for i, entry in enumerate([odd_entry()] + mutations(make_entry(3), 3)[:30]):
        path = tmp_path / f"run{i}.jsonl"
        try:
            write(path, entry)
        except (TypeError, ValueError):
            continue  # (an entry the writer refuses)
        counts = answers(path, entry, monkeypatch)
        alone, asked = alone + counts[0], asked + counts[1]
    assert 0 < alone < asked


def test_a_line_changed_since_its_record_is_parsed_whole(tmp_path, monkeypatch):
    """A digit of a probability changed in place (same length, same step): the object read
    alone no longer matches its row, and the answer comes from the line as it is now."""
    entry = make_entry(3)
    path = tmp_path / "run.jsonl"
    write(path, entry)
    raw = path.read_bytes()
    prob = entry["sequences"][0]["predictions"][2]["target_prob"]
    old = b'"target_prob":' + json.dumps(prob).encode()
    assert raw.count(old) == 1
    new = old[:-1] + (b"1" if old[-1:] != b"1" else b"2")
    path.write_bytes(raw.replace(old, new))
    changed = TrainingDataReader(path).latest()
    assert changed["sequences"][0]["predictions"][2]["target_prob"] != prob
    alone, asked = answers(path, changed, monkeypatch)
    assert 0 < alone < asked  # that one prediction, at least, from the line parsed whole


def test_an_object_that_looks_like_a_prediction_elsewhere_in_the_line(tmp_path, monkeypatch):
    """Metadata holding ``{"position": ...}`` objects: more objects than rows, so the line
    is parsed whole, and the answers are still those of the line."""
    entry = make_entry(3)
    entry["metadata"] = {"marks": [{"position": 1, "note": "x"}]}
    path = tmp_path / "run.jsonl"
    write(path, entry)
    alone, asked = answers(path, entry, monkeypatch)
    assert alone == 0 and asked > 10
