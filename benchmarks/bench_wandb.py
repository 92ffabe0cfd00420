"""What mirroring into W&B costs per logged step, next to the JSONL write alone.

Steps of 4 sequences x 512 tokens (top-20 candidates, the converter's default) are
logged twice in this one run (the machine may be shared, so compare the ratio):

- ``SeqVizLogger(jsonl)``: validate, serialise and append the line (the baseline);
- ``SeqVizLogger(jsonl, wandb=run)`` with an offline run: the same, plus the token
  table increment, the HTML panel and the scalars.

It prints milliseconds per step for each, the mirror's cost relative to the JSONL
write, where the mirror's time goes, the bytes of each step's HTML panel and table
file, and the time of the closing artifact.

    .venv/bin/python benchmarks/bench_wandb.py [--steps 8] [--seqs 4] [--tokens 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from seqviz_trackers import SeqVizLogger, tensor_to_training_entry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def make_entries(steps: int, seqs: int, tokens: int) -> list[dict]:
    """Real entries from random, peaked logits over a BPE tokenizer trained in-process."""
    from factories import bpe_tokenizer, corpus

    tok = bpe_tokenizer()
    ids = tok(corpus()[:200_000])["input_ids"]
    assert len(ids) >= seqs * tokens, "the bundled text is too short for that shape"
    batch = torch.tensor(ids[: seqs * tokens]).view(seqs, tokens)
    out = []
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)
        logits = torch.randn(seqs, tokens, len(tok), generator=gen) * 3.0
        out.append(tensor_to_training_entry(logits, batch, tok, step=(step + 1) * 100, model_name="bench"))
    return out


def time_steps(logger: SeqVizLogger, entries: list[dict]) -> list[float]:
    times = []
    for entry in entries:
        start = time.perf_counter()
        logger.log_step(entry)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seqs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="seqviz-bench-wandb-") as tmp:
        tmp_path = Path(tmp)
        for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                            "WANDB_DISABLE_GIT": "true", "WANDB_DIR": tmp, "WANDB_DATA_DIR": f"{tmp}/data",
                            "WANDB_CACHE_DIR": f"{tmp}/cache", "WANDB_CONFIG_DIR": f"{tmp}/config"}.items():
            os.environ[name] = value
        import wandb

        from wandb_panel import mirror as mirror_module
        from wandb_panel.tables import entry_rows

        entries = make_entries(args.steps + 1, args.seqs, args.tokens)
        warm, entries = entries[0], entries[1:]
        rows = sum(len(s["predictions"]) for s in entries[0]["sequences"])
        print(f"{args.steps} steps of {args.seqs} x {args.tokens} tokens ({rows} token rows a step), offline run")

        with SeqVizLogger(tmp_path / "alone.jsonl") as logger:
            time_steps(logger, [warm])
            alone = time_steps(logger, entries)

        run = wandb.init(project="seqviz-bench", dir=tmp, settings=wandb.Settings(
            x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, console="off"))
        parts = {"mirror": 0.0, "table rows": 0.0, "dynamics": 0.0, "HTML export": 0.0, "wandb run.log": 0.0}

        def timed(name, fn):
            def wrapper(*a, **kw):
                start = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    parts[name] += time.perf_counter() - start
            return wrapper

        export = mirror_module._export_html()
        mirror_module.entry_rows = timed("table rows", lambda e: list(entry_rows(e)))
        if export is not None:
            mirror_module._export_html = lambda: timed("HTML export", export)
        run.log = timed("wandb run.log", run.log)
        logger = SeqVizLogger(tmp_path / "mirrored.jsonl", wandb=run)
        mirror = logger.mirrors[0]
        mirror.log_step = timed("mirror", mirror.log_step)
        mirror._step_dynamics = timed("dynamics", mirror._step_dynamics)
        time_steps(logger, [warm])
        parts.update(dict.fromkeys(parts, 0.0))  # count the measured steps only
        html_bytes = []
        total = 0.0
        for entry in entries:
            total += sum(time_steps(logger, [entry]))
            html_bytes.append(mirror.last_html_bytes)
        start = time.perf_counter()
        logger.close()
        close_s = time.perf_counter() - start
        run.finish()
        wandb.teardown()

        folder = Path(run.dir)
        tables = sorted(folder.glob("media/table/seqviz/tokens_*.table.json"))
        n = len(entries)
        own = parts.pop("mirror") / n
        write = total / n - own
        print(f"JSONL write alone          {statistics.median(alone) * 1e3:8.1f} ms/step "
              "(median, logger without mirror)")
        print(f"with the mirror: JSONL part {write * 1e3:7.1f} ms/step, mirror {own * 1e3:.1f} ms/step "
              f"(mean, same steps)")
        print(f"mirror's cost per step     {own / write:8.2f} x the JSONL write")
        for name, spent in parts.items():
            print(f"  of which {name:<15} {spent / n * 1e3:8.1f} ms/step")
        if html_bytes[-1] is not None:
            print(f"HTML panel per step        {html_bytes[-1]:,} bytes "
                  f"(first step {html_bytes[0]:,}, last {html_bytes[-1]:,})")
        else:
            print("HTML panel per step        not logged (seqviz_trackers.serve.export unavailable)")
        if tables:
            print(f"table file per step        {tables[-1].stat().st_size:,} bytes")
        print(f"JSONL line per step        {(tmp_path / 'alone.jsonl').stat().st_size // (len(entries) + 1):,} bytes")
        print(f"close (seqviz artifact)    {close_s:8.2f} s for {mirror.rows_logged:,} rows")


if __name__ == "__main__":
    main()
