"""``seqviz/train_batch`` in W&B (offline, real wandb): the run with corrupted rows injected
at known steps (tests/spike_run.py) logs, at each capture step, the dashboard opened on
that step's training batch; opened from disk in headless Chromium, the panel of a spike
step shows its rows sorted by loss with the corrupted rows on top."""

from __future__ import annotations

import json
import re

import pytest

from seqviz_trackers.serve.export import page_data
from playwright.sync_api import expect

wandb = pytest.importorskip("wandb")
pytest.importorskip("transformers")
pytest.importorskip("seqviz_trackers.serve.export")

from factories import bpe_tokenizer, make_entry  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from spike_run import CORRUPT_ROWS, INJECTED_STEPS, write_spike_run  # noqa: E402
from seqviz_trackers.storage.batches import batches_path  # noqa: E402
from wandb_helpers import artifacts, html_files, init_run, manifest, offline_env, run_folder, table_rows  # noqa: E402
from wandb_panel import WandbMirror  # noqa: E402
from wandb_panel.mirror import TRAIN_BATCH_KEY, TRAIN_BATCHES_KEY  # noqa: E402

pytestmark = pytest.mark.usefixtures("stop_wandb_service")


def log_random_batches(tmp_path, mirror, steps: int = 12) -> None:
    """``steps`` optimizer steps of random logits (4 rows x 16 tokens), full capture every 4."""
    import torch

    tok = bpe_tokenizer()
    gen = torch.Generator().manual_seed(0)
    with SeqVizLogger(tmp_path / "run.jsonl", mirrors=[mirror]) as logger:
        for step in range(1, steps + 1):
            ids = torch.randint(0, len(tok), (4, 16), generator=gen)
            logits = torch.randn(4, 16, len(tok), generator=gen)
            logger.log_batch(logits, ids, ids, step=step, tokenizer=tok, capture=CaptureOptions(every=4, top_rows=1, random_rows=1))
        logger.finish_batch()
        logger.log_step(make_entry(steps))


def test_the_panel_thins_the_loss_line_and_the_artifact_keeps_the_batches(tmp_path, monkeypatch):
    offline_env(monkeypatch, tmp_path)
    run = init_run(mode="offline", dir=str(tmp_path))
    try:
        mirror = WandbMirror(run, history_points=5)
        log_random_batches(tmp_path, mirror)
    finally:
        run.finish()
    files = html_files(run_folder(run), TRAIN_BATCH_KEY)
    assert [inlined(p)["extra"]["open"] for p in files] == ["batch=4", "batch=8", "batch=12"]
    line = inlined(files[-1])["extra"]["train_batches"]["summary"]["steps"]
    assert len(line) == 5 and line[0]["step"] == 1 and line[-1]["step"] == 12
    assert mirror.last_batch_html_bytes == files[-1].stat().st_size
    (artifact,) = artifacts(run_folder(run), "seqviz")
    stored = manifest(artifact)
    assert stored["steps.jsonl.batches"].read_bytes() == (tmp_path / "run.jsonl.batches").read_bytes()


def test_without_html_the_table_is_still_logged(tmp_path, monkeypatch):
    offline_env(monkeypatch, tmp_path)
    run = init_run(mode="offline", dir=str(tmp_path))
    try:
        log_random_batches(tmp_path, WandbMirror(run, html=False, artifact_on_close=False))
    finally:
        run.finish()
    assert html_files(run_folder(run), TRAIN_BATCH_KEY) == []
    records = [json.loads(line) for line in (tmp_path / "run.jsonl.batches").read_text("utf-8").splitlines()]
    captured = [r for r in records if r["capture"]]
    assert [r["step"] for r in captured] == [4, 8, 12]
    assert len(table_rows(run_folder(run), TRAIN_BATCHES_KEY)) == sum(len(r["capture"]["sequences"]) for r in captured)


@pytest.fixture(scope="module")
def logged(tmp_path_factory, one_torch_thread):
    """The spike run mirrored to an offline W&B run: (its batch records, the panels wandb wrote)."""
    tmp = tmp_path_factory.mktemp("wandb-train-batch")
    mp = pytest.MonkeyPatch()
    offline_env(mp, tmp)
    run = init_run(mode="offline", dir=str(tmp))
    try:
        path = write_spike_run(tmp, wandb=run)
    finally:
        run.finish()
        mp.undo()
    lines = open(batches_path(path), encoding="utf-8").read().splitlines()
    records = [json.loads(line) for line in lines]
    copy = run_folder(run) / "seqviz" / "steps.jsonl.batches"
    assert copy.read_text("utf-8").splitlines() == lines  # the run folder keeps every record
    return records, html_files(run_folder(run), TRAIN_BATCH_KEY)


def inlined(path) -> dict:
    return page_data(path.read_text("utf-8"))


@pytest.mark.slow
def test_a_panel_per_capture_step_holding_that_batch(logged):
    records, files = logged
    captured = [r["step"] for r in records if r["capture"]]
    assert set(INJECTED_STEPS) <= set(captured) and len(captured) >= 12 + len(INJECTED_STEPS)
    assert len(files) == len(captured)
    for step, path in zip(captured, files):
        data = inlined(path)
        batches = data["extra"]["train_batches"]
        assert data["extra"]["open"] == f"batch={step}" and data["entries"] == []
        assert list(batches["batch"]) == [str(step)] and batches["summary"]["available"] == [step]
        known = [r["step"] for r in records if r["spike"] and r["step"] <= step]
        assert batches["summary"]["spikes"] == known  # the marks found so far
        assert batches["summary"]["steps"][-1]["step"] == step
        batch = batches["batch"][str(step)]
        record = next(r for r in records if r["step"] == step)
        assert [r["row"] for r in batch["rows"]] == sorted(range(len(record["rows"]["loss"])),
                                                          key=lambda i: -record["rows"]["loss"][i])
        seqs = batch["capture"]["sequences"]  # the captured rows as a step view, candidates in columns
        assert len(seqs) == len(record["capture"]["sequences"])
        assert all("predictions" not in s and 1 <= n <= 5 for s in seqs for n in s["candidates"]["n"])  # batch_top_k
        for got, logged in zip(seqs, record["capture"]["sequences"]):
            assert got["view"]["position"] == [p["position"] for p in logged["predictions"]]
            first = got["candidates"]["n"][0]
            assert got["candidates"]["id"][:first] == [c[0] for c in logged["predictions"][0]["top_k"][:first]]
        assert "http://" not in path.read_text("utf-8") and "https://" not in path.read_text("utf-8")


@pytest.mark.slow
@pytest.mark.browser
def test_the_panel_of_a_spike_step_shows_the_corrupted_rows_on_top(logged, page):
    records, files = logged
    captured = [r["step"] for r in records if r["capture"]]
    step = INJECTED_STEPS[1]
    url = files[captured.index(step)].resolve().as_uri()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    view = page.locator(".batchview")
    expect(view.locator(".changes-title")).to_have_text(f"Training batch \u00b7 step {step}", timeout=15_000)
    expect(view.locator(".batch-badge.spike")).to_be_visible()
    assert page.locator(".probe").is_hidden()
    rows = view.locator(".batch-row")
    top = [int(r) for r in rows.evaluate_all("els => els.map(e => e.dataset.row)")]
    assert sorted(top[:len(CORRUPT_ROWS)]) == sorted(CORRUPT_ROWS)
    losses = [float(re.search(r"loss ([\d.]+)", t)[1]) for t in view.locator(".batch-row-loss").all_inner_texts()]
    assert losses == sorted(losses, reverse=True)
    assert page.locator(".chart-mark").count() == sum(1 for r in records if r["spike"] and r["step"] <= step)
    rows.first.locator(".tok").nth(3).click()
    detail = page.locator(".detail")
    expect(detail.locator(".bar-row").first).to_be_visible(timeout=10_000)
    assert f"row {top[0]}" in detail.inner_text() and detail.locator(".bar-row").count() == 5
    assert "Waiting for the first step" not in page.inner_text("body")  # a page of one batch, no probe step
    assert requests == [url], "the panel must load nothing but itself"
    assert page.js_errors == [], page.js_errors
