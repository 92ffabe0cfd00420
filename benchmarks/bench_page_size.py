"""Bytes of the pages that carry their data, and where they go.

- the W&B step panel (``seqviz/dashboard``) at 4 sequences x 512 tokens (top-20) after
  ``--panel-steps`` logged steps, its training dynamics included;
- the W&B training-batch panel (``seqviz/train_batch``) of a capture step of 8 rows x 512
  tokens, all 8 captured (the defaults: 4 highest-loss + 4 random rows, ``batch_top_k=5``);
- ``export_html`` of 2 steps at 4 x 512 and at 8 x 2,048 tokens, and (unless ``--no-browser``)
  the time the 8 x 2,048 page takes to open and draw in headless Chromium, beside the same
  page holding its data as before (plain columns, base64), in the same run.

Both panels are logged by a real ``WandbMirror`` into an offline run, the pages are read
from the files wandb wrote. Each page is split into the dashboard's code, style and markup,
and its data's parts, each compressed on its own as the page holds it (gzip, then base85, or
base64 before): their sum is a little more than the data.

    python benchmarks/bench_page_size.py [--panel-steps 25] [--no-browser] [--batch-top-k 5]

It uses only ``export_html`` and ``WandbMirror``, so run it from another checkout
(``PYTHONPATH=<checkout>``) for the figures before a change.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CHROMIUM = "/usr/bin/chromium"
DATA = re.compile(r'<script type="application/json" id="seqviz-data">(.*?)</script>', re.S)


def mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


def parts(page: str) -> dict[str, int]:
    """Where the page's bytes go (the data's parts as it holds them, before they are read)."""
    found = DATA.search(page)
    wrapper = json.loads(found.group(1))
    base85 = wrapper["encoding"] == "gzip+base85"
    raw = (base64.b85decode(wrapper["data"].encode().translate(bytes.maketrans(b",.[", b"<>&"))) if base85
           else base64.b64decode(wrapper["data"]))
    data = json.loads(gzip.decompress(raw))
    out = {"code, style, markup": len(page.encode()) - len(found.group(1))}

    def packed(obj) -> int:  # as the page holds it: JSON, gzip-compressed, in base85 (or base64)
        n = len(gzip.compress(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), 6, mtime=0))
        return -(-n * 5 // 4) if base85 else -(-n // 3) * 4

    def seqs(entry):
        return [s for s in entry.get("sequences") or () if isinstance(s, dict)]

    def entry_parts(entries, prefix):
        cand = [s.get("candidates") or {} for e in entries for s in seqs(e)]
        views = [{**e, "sequences": [{k: v for k, v in s.items() if k != "candidates"} for s in seqs(e)]} for e in entries]
        if any("predictions" in s for e in entries for s in seqs(e)):  # the logged form (before step views)
            out[f"{prefix}entries (logged form)"] = packed(entries)
            return
        out[f"{prefix}step views"] = packed(views)
        out[f"{prefix}candidate ids"] = packed([c.get("id") for c in cand])
        out[f"{prefix}candidate p"] = packed([c.get("p") for c in cand])

    entry_parts(data.get("entries") or [], "")
    extra = data.get("extra") or {}
    if "dynamics" in extra:
        out["dynamics"] = packed(extra["dynamics"])
    batches = extra.get("train_batches")
    if batches:
        captures = [b["capture"] for b in batches["batch"].values() if b.get("capture")]
        entry_parts(captures, "batch: ")
        out["batch: rows, histogram, loss line"] = packed(
            {**batches, "batch": {k: {**b, "capture": None} for k, b in batches["batch"].items()}})
    return out


def show(name: str, page: str) -> None:
    print(f"{name}: {mb(len(page.encode()))}")
    for part, n in parts(page).items():
        if n > 100:  # not an empty list
            print(f"    {part:<36} {mb(n)}")


def wandb_panels(tmp: Path, panel_steps: int, batch_top_k: int | None) -> tuple[str, str]:
    """(the last step panel, the batch panel) of an offline run."""
    import torch
    from factories import bpe_tokenizer
    from web_data import long_entry

    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_DISABLE_GIT": "true", "WANDB_DIR": str(tmp), "WANDB_DATA_DIR": f"{tmp}/data",
                        "WANDB_CACHE_DIR": f"{tmp}/cache", "WANDB_CONFIG_DIR": f"{tmp}/config"}.items():
        os.environ[name] = value
    import wandb

    from seqviz_trackers import SeqVizLogger
    from seqviz_trackers.capture import CaptureOptions
    from wandb_panel import WandbMirror

    tok = bpe_tokenizer()
    gen = torch.Generator().manual_seed(0)
    run = wandb.init(project="seqviz-bench", dir=str(tmp), settings=wandb.Settings(
        x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, console="off"))
    with SeqVizLogger(tmp / "run.jsonl", mirrors=[WandbMirror(run, batch_top_k=batch_top_k)]) as logger:
        for step in range(1, 3):  # step 2 is a capture step: its batch panel
            ids = torch.randint(0, len(tok), (8, 512), generator=gen)
            logits = torch.randn(8, 512, len(tok), generator=gen) * 3
            logger.log_batch(logits, ids, ids, step=step, tokenizer=tok, capture=CaptureOptions(every=2))
        logger.finish_batch()
        for step in range(panel_steps):
            logger.log_step(long_entry(step, 4, 512, seed=1))
    run.finish()
    wandb.teardown()
    media = Path(run.dir) / "media" / "html" / "seqviz"
    newest = lambda stem: max(media.glob(f"{stem}_*.html"), key=lambda p: int(p.name[len(stem) + 1:].split("_")[0]))  # noqa: E731
    return newest("dashboard").read_text("utf-8"), newest("train_batch").read_text("utf-8")


def unpacked_page(page: str) -> str:
    """The same page with its data as before packing: plain columns, base64 (the dashboard reads both)."""
    from seqviz_trackers.serve.export import page_data

    found = DATA.search(page)
    wrapper = json.loads(found.group(1))
    text = json.dumps(page_data(page), ensure_ascii=False, separators=(",", ":")).encode()
    old = {**wrapper, "encoding": "gzip+base64", "data": base64.b64encode(gzip.compress(text, 6, mtime=0)).decode()}
    return page[:found.start(1)] + json.dumps(old) + page[found.end(1):]


def open_times(pages: dict[str, str], repeat: int = 3) -> dict[str, float]:
    """Median seconds from navigation to the dashboard's first drawn step, in headless Chromium,
    the pages taken in turn."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {name: [] for name in pages}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        files = {}
        for i, (name, text) in enumerate(pages.items()):
            files[name] = Path(tmp) / f"page{i}.html"
            files[name].write_text(text, "utf-8")
        for _ in range(repeat):
            for name in pages:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                start = time.perf_counter()
                page.goto(files[name].as_uri())
                page.wait_for_selector(".probe .seq .tok", timeout=120_000)
                times[name].append(time.perf_counter() - start)
                page.close()
        browser.close()
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel-steps", type=int, default=25)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--batch-top-k", type=int, default=5, help="WandbMirror(batch_top_k=...); 0: None (all)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    from web_data import long_entry

    from seqviz_trackers.serve.export import export_html

    with tempfile.TemporaryDirectory(prefix="seqviz-bench-pages-") as tmp:
        step_panel, batch_panel = wandb_panels(Path(tmp), args.panel_steps, args.batch_top_k or None)
    show(f"W&B step panel, 4 x 512, after {args.panel_steps} steps (goal <= 0.5 MB)", step_panel)
    show(f"W&B training-batch panel, 8 rows x 512, all captured, batch_top_k={args.batch_top_k or None}", batch_panel)
    show("export of 2 steps at 4 x 512", export_html([long_entry(s, 4, 512, seed=1) for s in (100, 200)], title="bench"))
    big = export_html([long_entry(s, 8, 2048) for s in (100, 200)], title="bench")
    show("export of 2 steps at 8 x 2,048", big)
    if not args.no_browser:
        times = open_times({"packed": big, "plain": unpacked_page(big)})
        print(f"8 x 2,048 export, open, unpack and first render in headless Chromium (median of 3, wall): "
              f"{times['packed'] * 1000:.0f} ms; the same page with plain columns in base64 "
              f"{times['plain'] * 1000:.0f} ms (ratio {times['packed'] / times['plain']:.2f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
