"""Pages that carry their data (an export, the W&B step panel, the W&B training-batch panel)
pack their columns (candidate probabilities as codes, series as packed integers): in headless
Chromium, opened from disk, they print the logged numbers to the digits the dashboard shows
(each candidate's probability in the detail panel, the target's p and rank, the sparkline's
p and rank at the step shown). W&B runs in offline mode."""

from __future__ import annotations

import json

import pytest

wandb = pytest.importorskip("wandb")

from factories import bpe_tokenizer, make_entry  # noqa: E402
from page_helpers import fmt_pct  # noqa: E402
from playwright.sync_api import expect  # noqa: E402
from seqviz_trackers import SeqVizLogger  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.format.entry import by_position, candidates, facts  # noqa: E402
from seqviz_trackers.serve.export import export_html, page_data  # noqa: E402
from wandb_helpers import html_files, init_run, offline_env, run_folder  # noqa: E402
from wandb_panel import WandbMirror  # noqa: E402
from wandb_panel.mirror import TRAIN_BATCH_KEY  # noqa: E402

pytestmark = pytest.mark.usefixtures("stop_wandb_service")

TEXTS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
STEPS = (100, 200, 300)
BATCH_STEP = 4


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """An offline run: three probe steps (a panel each) and four training steps, the 4th
    captured (its batch panel). Returns (entries, step panels, batch record, batch panel)."""
    import torch

    tmp = tmp_path_factory.mktemp("page-numbers")
    mp = pytest.MonkeyPatch()
    offline_env(mp, tmp)
    entries = [make_entry(step, TEXTS) for step in STEPS]
    tok = bpe_tokenizer()
    gen = torch.Generator().manual_seed(0)
    run = init_run(mode="offline", dir=str(tmp))
    try:
        with SeqVizLogger(tmp / "run.jsonl", mirrors=[WandbMirror(run)]) as logger:
            for step in range(1, BATCH_STEP + 1):
                ids = torch.randint(0, len(tok), (4, 16), generator=gen)
                logits = torch.randn(4, 16, len(tok), generator=gen) * 3
                logger.log_batch(logits, ids, ids, step=step, tokenizer=tok,
                                 capture=CaptureOptions(every=BATCH_STEP, top_rows=1, random_rows=1))
            logger.finish_batch()
            for entry in entries:
                logger.log_step(entry)
    finally:
        run.finish()
        mp.undo()
    records = [json.loads(line) for line in (tmp / "run.jsonl.batches").read_text("utf-8").splitlines()]
    (record,) = [r for r in records if r["step"] == BATCH_STEP]
    (batch_panel,) = html_files(run_folder(run), TRAIN_BATCH_KEY)
    return entries, html_files(run_folder(run)), record, batch_panel


def shown_numbers(page, pred: dict) -> dict:
    """The detail panel's numbers once the clicked token's candidates are in."""
    detail = page.locator(".detail")
    expect(detail.locator(".mini-col")).to_have_count(min(20, len(candidates(pred))), timeout=15_000)
    stats = dict(zip(detail.locator(".stat-l").all_inner_texts(), detail.locator(".stat-v").all_inner_texts()))
    return {"bars": detail.locator(".bar-row .bar-p").all_inner_texts(),
            "titles": detail.locator(".bar-row").evaluate_all("els => els.map((e) => e.title)"),
            "mini": [t.split()[-1] for t in detail.locator(".mini-col").evaluate_all("els => els.map((e) => e.title)")],
            "p": stats["p(target)"], "rank": stats["rank"]}


def logged_numbers(pred: dict) -> dict:
    top, f = candidates(pred), facts(pred)
    return {"bars": [fmt_pct(c[2]) for c in top[:5]],
            # a page's p is kept to a grid: its tooltip gives it as printed, never as an exact number
            "titles": [f"{c[1]} (id {c[0]}): p \u2248 {fmt_pct(c[2])}" for c in top[:5]],
            "mini": [fmt_pct(c[2]) for c in top[:20]],
            "p": fmt_pct(f.prob), "rank": f"#{f.rank}"}


def check_sequence(page, tokens, seq: dict) -> None:
    """Click each predicted token of ``seq`` (its grid's ``.tok`` cells): the numbers logged."""
    for pred in seq["predictions"]:
        tokens.nth(pred["position"] + 1).click()  # a prediction is drawn under the token it predicts
        assert shown_numbers(page, pred) == logged_numbers(pred), pred["position"]


@pytest.mark.browser
def test_an_export_shows_the_logged_numbers(tmp_path, page):
    entries = [make_entry(step, TEXTS) for step in STEPS[:2]]
    path = tmp_path / "page.html"
    path.write_text(export_html(entries, title="numbers"), "utf-8")
    page.goto(path.resolve().as_uri())
    seqs = page.locator(".probe .seq")
    expect(seqs).to_have_count(2, timeout=15_000)
    for i, seq in enumerate(entries[-1]["sequences"]):
        check_sequence(page, seqs.nth(i).locator(".tok"), seq)
    assert page.js_errors == []


@pytest.mark.browser
def test_the_wandb_step_panel_shows_the_logged_numbers_and_series(logged, page):
    entries, panels, _, _ = logged
    entry, path = entries[-1], panels[-1]
    page.goto(path.resolve().as_uri())
    seqs = page.locator(".probe .seq")
    expect(seqs).to_have_count(2, timeout=15_000)
    check_sequence(page, seqs.nth(0).locator(".tok"), entry["sequences"][0])
    # the sparkline of the last token clicked, at the step shown: p (in thousandths) and rank
    dynamics = page_data(path.read_text("utf-8"))["extra"]["dynamics"]
    track = dynamics["tracks"][str(dynamics["at_step"][str(entry["step"])][0])]
    pred = entry["sequences"][0]["predictions"][-1]
    permille = track["p1000"][pred["position"]][-1]
    assert abs(permille / 1000 - facts(pred).prob) <= 0.0005 + 1e-9 and track["target_rank"][pred["position"]][-1] == facts(pred).rank
    spark = page.locator(".detail .spark-canvas")
    expect(spark).to_have_attribute("aria-label", f"target probability and rank over {len(STEPS)} steps", timeout=15_000)
    box = spark.bounding_box()
    x = page.evaluate(f"() => window.seqvizDashboard.detail.spark.frame().x({entry['step']})")
    page.mouse.move(box["x"] + x, box["y"] + box["height"] / 2)
    expect(page.locator(".detail .chart-tip")).to_have_text(
        f"step {entry['step']} \u00b7 p {fmt_pct(permille / 1000)} \u00b7 rank {facts(pred).rank}")
    assert page.js_errors == []


@pytest.mark.browser
def test_the_wandb_batch_panel_shows_the_logged_numbers_and_closes_to_a_message(logged, page):
    _, _, record, path = logged
    page.goto(path.resolve().as_uri())
    view = page.locator(".batchview")
    expect(view.locator(".changes-title")).to_have_text(f"Training batch \u00b7 step {BATCH_STEP}", timeout=15_000)
    rows = view.locator(".batch-row.captured")
    expect(rows).to_have_count(len(record["capture"]["sequences"]))
    batch = page_data(path.read_text("utf-8"))["extra"]["train_batches"]["batch"][str(BATCH_STEP)]
    first = next(r for r in batch["rows"] if r["seq"] is not None)  # rows by loss: the first captured one
    seq = record["capture"]["sequences"][first["seq"]]
    for pred in seq["predictions"][:6]:
        rows.first.locator(".tok").nth(pred["position"] + 1).click()
        kept = {**pred, "top_k": pred["top_k"][:5]}  # the panel keeps the top 5 (batch_top_k)
        assert shown_numbers(page, kept) == logged_numbers(kept), pred["position"]
    # closing the batch: no probe step to go back to, and the page says so
    view.locator(".changes-close").click()
    banner = page.locator(".banner")
    expect(banner).to_have_text("This page holds training batches only, no logged step: "
                                "the Batches button shows them again.")
    assert view.is_hidden()
    page.locator(".batches-btn").click()
    expect(rows).to_have_count(len(record["capture"]["sequences"]))
    expect(banner).to_be_hidden()
    assert page.js_errors == []
