"""An entry rebuilt from its step view (:func:`~seqviz_trackers.format.view.entry_of_view`): the
training-dynamics tracks and a diff without divergences read from it what they read from the
logged entry, so they can start from the view a columns record holds instead of parsing a line."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from factories import HOSTILE, make_entry
from seed_files import seed_entry
from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.dynamics.cache import light_entry
from seqviz_trackers.dynamics.compare import compare
from seqviz_trackers.dynamics.routes import diff_json, learned_json, sequences_json, series_json
from seqviz_trackers.dynamics.tracks import Dynamics
from seqviz_trackers.format.entry import KnownIds, by_position, columns, facts, targets
from seqviz_trackers.format.view import entry_of_view, step_view
from seqviz_trackers.storage.columns import SUFFIX
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


def test_what_the_tracks_read_of_an_entry_is_the_same_from_its_view():
    light_count = 0
    for i, entry in enumerate(entries()):
        light = entry_of_view(json.loads(json.dumps(step_view(entry))))  # as a record holds it
        if light is None:
            continue
        light_count += 1
        full_seqs = [s for s in entry["sequences"] if isinstance(s, dict)]
        assert len(light["sequences"]) == len(full_seqs), i
        for full, lite in zip(full_seqs, light["sequences"]):
            cols = columns(full)
            same_columns(columns(lite), cols)
            assert targets(lite) == targets(full), i
            assert KnownIds().new_strings(lite, columns(lite)) == KnownIds().new_strings(full, cols), i
            assert {k: v for k, v in lite.items() if k != "predictions"} == \
                {k: v for k, v in full.items() if k != "predictions"}, i
            full_preds = by_position(full)
            assert [a["position"] for a in lite["predictions"]] == list(full_preds), i
            for a in lite["predictions"]:
                fa, fb = facts(a), facts(full_preds[a["position"]])
                assert (fa.prob, fa.rank, fa.loss, fa.entropy, fa.correct, fa.top[:1]) == \
                    (fb.prob, fb.rank, fb.loss, fb.entropy, fb.correct, fb.top[:1]), i
    assert light_count > 40  # the converter's form, and most odd ones


def test_a_view_that_cannot_say_it_all_gives_no_entry():
    assert entry_of_view(step_view(seed_entry(150, 300))) is None  # targets below the top 20: bounds
    e = make_entry(3)
    del e["sequences"][0]["predictions"][1]["entropy"]
    assert entry_of_view(step_view(e)) is None
    e = make_entry(3)
    e["sequences"][0]["predictions"][2]["top_k"] = []
    assert entry_of_view(step_view(e)) is None
    e = make_entry(3)
    e["sequences"].append("not a sequence")
    assert entry_of_view(step_view(e)) is None
    assert entry_of_view({"step": 1}) is None


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
    light = compare(*(entry_of_view(step_view(e)) for e in (a, b)), limit=50, per_token=True, divergence=False)
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
    assert answers[0] == answers[1]
    assert [p for p in parsed if p[0] == "cached.jsonl"] == []  # views and columns only
    assert {s for name, s in parsed if name == "plain.jsonl"} >= {100, 250}

    full = [diff_json(r, 100, 250, limit=30, per_token=True) for r in readers]
    assert full[0] == full[1] and without_divergence(full[0]) == answers[0][-1]
    assert ("cached.jsonl", 100) in parsed  # the divergences need every candidate: the lines


def test_light_entry_falls_back_to_the_line(tmp_path):
    path = tmp_path / "run.jsonl"
    with TrainingDataWriter(path) as w:
        w.write_step(seed_entry(150, 300))  # bounded targets: the view cannot say it all
        w.write_step(learning_entry(200, 300))
    reader = TrainingDataReader(path)
    first, second = reader.steps
    assert light_entry(reader, first) == reader.read(first)
    assert light_entry(reader, second) == entry_of_view(step_view(reader.read(second)))
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
