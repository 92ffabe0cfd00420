"""Loss spikes on a real run with corrupted rows injected at known steps: online detection,
``seqviz spikes``, the batch routes, and the served dashboard (click the spike)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from spike_run import CORRUPT_ROWS, INJECTED_STEPS, write_spike_run  # noqa: E402
from seqviz_trackers.cli.main import main  # noqa: E402
from seqviz_trackers.runs import Runs  # noqa: E402
from seqviz_trackers.serve.api import handle  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory):
    return write_spike_run(tmp_path_factory.mktemp("spikes"))


def test_every_injected_step_is_flagged_and_its_corrupted_rows_rank_first(spike_run, capsys):
    assert main(["spikes", str(spike_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_steps"] == 1200
    flagged = [s["step"] for s in result["spikes"]]
    assert set(INJECTED_STEPS) <= set(flagged)
    clean = result["num_steps"] - len(INJECTED_STEPS)
    assert len(set(flagged) - set(INJECTED_STEPS)) <= clean / 1000  # at most 1 false spike per 1,000 clean steps
    for s in result["spikes"]:
        if s["step"] in INJECTED_STEPS:
            assert s["captured"] and s["loss"] > s["before"] and s["loss"] > s["after"]
            assert sorted(r["row"] for r in s["rows"]) == sorted(CORRUPT_ROWS)
            assert all(r["text"] and r["worst_tokens"] for r in s["rows"])


def test_the_step_after_a_spike_is_captured_and_the_routes_answer(spike_run):
    runs = Runs()
    runs.add("run", spike_run)
    status, summary = handle(runs, "batches", {"run": "run"})
    assert status == 200 and set(INJECTED_STEPS) <= set(summary["spikes"])
    captured = {s["step"] for s in summary["steps"] if s["captured"]}
    assert {s + 1 for s in INJECTED_STEPS} <= captured and {100, 200, 1200} <= captured
    status, batch = handle(runs, "batch", {"run": "run", "step": str(INJECTED_STEPS[0])})
    assert status == 200
    assert [r["row"] for r in batch["rows"][:3]] == sorted(CORRUPT_ROWS, key=lambda r: -next(
        x["loss"] for x in batch["rows"] if x["row"] == r))
    assert batch["capture"]["sequences"][batch["rows"][0]["seq"]]["name"] == f"row {batch['rows'][0]['row']}"
    hist = batch["histogram"]
    assert len(hist["edges"]) == len(hist["step"]) + 1 and hist["typical_steps"] > 0
    assert handle(runs, "batch", {"run": "run", "step": "5000"})[0] == 404


def test_the_command_prints_each_spike_with_its_rows(spike_run, capsys):
    assert main(["spikes", str(spike_run)]) == 0
    out = capsys.readouterr().out
    for step in INJECTED_STEPS:
        assert f"step {step}: loss " in out
    assert main(["spikes", str(spike_run.with_name("missing.jsonl"))]) == 2
