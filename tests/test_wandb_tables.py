"""Entry -> W&B Table rows and scalars (no wandb run needed)."""

from __future__ import annotations

import json
import math

import pytest

from factories import make_entry
from seqviz_trackers import validate_entry
from wandb_panel.tables import COLUMNS, DTYPES, count_rows, entry_rows, step_scalars

ENTRY = {
    "step": 7, "loss": 1.5, "perplexity": math.exp(1.5), "sequences": [
        {"name": "probe", "tokens": ["To", " be", " or"], "token_ids": [1, 2, 3], "predictions": [
            {"position": 0, "target_token_id": 2, "target_token_str": " be", "target_prob": 0.6, "target_rank": 1,
             "loss": 0.51, "correct": True, "entropy": 1.0,
             "top_k": [[2, " be", 0.6], [9, "\"q\"", 0.25]]},
            {"position": 1, "target_token_id": 3, "target_token_str": " or", "target_rank": 3, "entropy": 2.0,
             "top_k": [[4 + i, f"t{i}", 0.1] for i in range(8)]},
        ]},
        {"tokens": ["a"], "predictions": []},
        {"tokens": ["x", "y"], "predictions": [
            {"position": 0, "target_token_id": 5, "target_token_str": "y", "entropy": 3.0, "top_k": []}]},
    ],
}


def test_one_row_per_prediction_in_column_order():
    validate_entry(ENTRY)
    rows = list(entry_rows(ENTRY))
    assert len(rows) == count_rows(ENTRY) == 3
    assert all(len(r) == len(COLUMNS) == len(DTYPES) for r in rows)
    first = dict(zip(COLUMNS, rows[0]))
    assert first == {
        "step": 7, "sequence": 0, "name": "probe", "position": 0, "input_token": "To", "target_token": " be",
        "predicted_token": " be", "correct": True, "target_prob": 0.6, "target_rank": 1, "entropy": 1.0,
        "loss": 0.51, "top5": '" be" 0.6, "\\"q\\"" 0.25', "target_rank_gt": None, "target_prob_lt": None,
    }
    second = dict(zip(COLUMNS, rows[1]))
    assert second["input_token"] == " be" and second["target_token"] == " or"
    assert second["correct"] is False  # derived from target_rank 3
    assert second["target_prob"] is None and second["loss"] is None
    assert second["target_rank_gt"] is None  # its rank was logged: no bound needed
    assert second["top5"].count(", ") == 4  # five candidates kept of eight
    third = dict(zip(COLUMNS, rows[2]))
    assert third["sequence"] == 2 and third["name"] is None
    assert third["predicted_token"] is None and third["correct"] is None and third["top5"] == ""


def test_rows_match_declared_types():
    for row in entry_rows(make_entry(3, ["To be, or not to be", "that is the question"])):
        for value, dtype, col in zip(row, DTYPES, COLUMNS):
            if value is not None:
                assert isinstance(value, dtype) or (dtype is float and isinstance(value, int)), (col, value)
        json.dumps(row)


def test_step_scalars():
    out = step_scalars(ENTRY)
    assert out["seqviz/loss"] == 1.5
    assert out["seqviz/perplexity"] == pytest.approx(math.exp(1.5))
    assert out["seqviz/mean_entropy"] == pytest.approx(2.0)
    assert out["seqviz/top1_accuracy"] == pytest.approx(0.5)  # True, rank 3; the third has neither


def test_step_scalars_leave_out_what_is_missing():
    out = step_scalars({"step": 1, "loss": None, "sequences": [{"tokens": [], "predictions": []}]})
    assert out == {}
