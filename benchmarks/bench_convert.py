"""How much the conversion costs inside a training loop (logits on the CPU).

One case = one shape and one dtype, run in a fresh process (so that one case's heap
does not inflate the next one's memory figure and only one case's logits are in
memory at a time). For each case, all measured in that one process (the machine is
shared, so compare the ratios):

- conversion / one ``torch.topk(logits, 20, dim=-1)`` over the same tensor   (goal <= 3), in wall
  time and in this process's CPU time (which, with ``--threads 1``, other processes' load moves less)
- conversion / one ``torch.log_softmax`` pass over the same tensor, in its own dtype
  (one sequence at a time, so that its output stays small)
- conversion (+ JSON) / a minimal top-k + JSON implementation (``minimal_topk_json``) (goal <= 1.0)
- peak extra memory / size of the logits tensor: resident memory sampled every
  millisecond during the first conversion in the process            (goal <= 0.25)
- JSON bytes per predicted position with top-20                        (goal <= 700)
- write time per step: validate, serialise and append the line (``TrainingDataWriter.write_step``)
- with ``--loops``, on the smallest shape only: speed-up over a per-position loop (softmax + sort per
  position; goal >= 5) and over a tuned per-position loop (top-k + count)

    python benchmarks/bench_convert.py                      # the whole matrix (heavy: 8 x 2048 x 128256 fp32 is 8.4 GB)
    python benchmarks/bench_convert.py --quick              # one repeat per timing
    python benchmarks/bench_convert.py --shapes 4x512x50257,1x2048x256000 --dtypes bf16
    python benchmarks/bench_convert.py --shapes 4x512x50257 --loops    # + the per-position loops
    python benchmarks/bench_convert.py --quick --threads 1  # one thread: what a busy machine moves least
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import torch

SHAPES = [(4, 512, 50257), (4, 2048, 128256), (8, 2048, 128256), (2, 4096, 151936), (1, 2048, 256000)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCALE = 3.0  # logits ~ N(0, 3^2): peaked enough to look like a model's
LOOP_MAX_ELEMENTS = 120_000_000  # per-position loops only on shapes this small (they take minutes beyond)


def best_of(fn: Callable[[], Any], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Shortest time of ``repeat`` calls, in seconds (wall time unless ``clock`` says otherwise)."""
    best = math.inf
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def minimal_topk_json(logits: torch.Tensor, ids: torch.Tensor, tokenizer: Any, k: int = 20, rows: int = 1024) -> bytes:
    """The straightforward vectorised implementation one would write in 20 lines: per
    block of rows, upcast, log_softmax, top-k, gather, count, entropy; then dicts and
    ``json.dumps``. (Blocks of rows only so that it fits in memory at large shapes.)"""
    from seqviz_trackers.format.tokens import token_strings

    sequences = []
    for b in range(logits.shape[0]):
        preds: list[dict[str, Any]] = []
        for start in range(0, logits.shape[1] - 1, rows):
            stop = min(start + rows, logits.shape[1] - 1)
            logp = torch.log_softmax(logits[b, start:stop].float(), -1)
            tgt = ids[b, start + 1:stop + 1]
            top_lp, top_i = torch.topk(logp, k, dim=-1)
            t_lp = logp.gather(1, tgt.unsqueeze(1))
            rank = (logp > t_lp).sum(1) + 1
            entropy = -(logp.exp() * logp).sum(1)
            strings = token_strings(tokenizer, top_i.flatten().tolist())
            for j, (ti, tp, tl, r, h) in enumerate(zip(top_i.tolist(), top_lp.exp().tolist(), t_lp.squeeze(1).tolist(), rank.tolist(), entropy.tolist())):
                preds.append({"position": start + j, "target_token_id": int(tgt[j]), "target_prob": math.exp(tl),
                              "target_rank": r, "loss": -tl, "entropy": h,
                              "top_k": [[i, strings[j * k + n], p] for n, (i, p) in enumerate(zip(ti, tp))]})
        sequences.append({"token_ids": ids[b].tolist(), "predictions": preds})
    return json.dumps({"step": 1, "sequences": sequences}, ensure_ascii=False).encode() + b"\n"


def per_position_loop(logits: torch.Tensor, ids: torch.Tensor, k: int = 20, sort: bool = True) -> list:
    """The obvious implementation: one position at a time, softmax then a sort of the
    vocabulary for the top-k and the target's rank. ``sort=False`` is a tuned loop
    (top-k plus a count for the rank) that isolates the cost of looping itself."""
    out = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            logp = torch.log_softmax(logits[b, t].float(), -1)
            probs = logp.exp()
            target = int(ids[b, t + 1])
            if sort:
                top_p, top_i = torch.sort(probs, descending=True)
                rank = int((top_i == target).nonzero()) + 1
                top_p, top_i = top_p[:k], top_i[:k]
            else:
                top_p, top_i = torch.topk(probs, k)
                rank = int((probs > probs[target]).sum()) + 1
            out.append({
                "position": t, "target_token_id": target, "target_prob": float(probs[target]),
                "target_rank": rank, "loss": -float(logp[target]),
                "entropy": float(torch.special.entr(probs).sum()),
                "top_k": [[int(i), str(int(i)), float(p)] for i, p in zip(top_i, top_p)],
            })
    return out


class ReadableVocabulary:
    """Display strings of realistic length: the pieces of a byte-level BPE trained on
    the bundled text, reused cyclically to cover a large vocabulary."""

    def __init__(self) -> None:
        from importlib import resources

        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        text = resources.files("seqviz_trackers").joinpath("data/hamlet.txt").read_text("utf-8")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=8000, show_progress=False))
        self.backend_tokenizer = tok  # lets the converter see it is byte-level
        self.pieces = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[i % len(self.pieces)] for i in ids]


def resident_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(fn: Callable[[], Any]) -> int:
    """Bytes of resident memory above the level before ``fn``, at its peak during ``fn``
    (a thread samples every millisecond)."""
    base = resident_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], resident_bytes()) - base


def run_case(shape: tuple[int, int, int], dtype_name: str, repeat: int, loops: bool = False) -> dict[str, Any]:
    """Measure one case in this process; the memory figure comes first, from the
    first conversion at this shape."""
    from seqviz_trackers import TrainingDataWriter, encode_entry, tensor_to_training_entry

    dtype = DTYPES[dtype_name]
    vocabulary = ReadableVocabulary()
    tensor_to_training_entry(torch.randn(1, 8, 100), torch.zeros(1, 8, dtype=torch.long), vocabulary, step=0)  # warm up
    torch.manual_seed(0)
    logits = torch.empty(*shape, dtype=dtype)
    for b in range(shape[0]):  # one sequence at a time: no full-size fp32 copy for bf16
        logits[b] = torch.empty(*shape[1:]).normal_(0, SCALE)
    ids = torch.randint(0, shape[2], shape[:2])
    convert = lambda: tensor_to_training_entry(logits, ids, vocabulary, step=1)  # noqa: E731
    mem = peak_growth(convert) / (logits.numel() * logits.element_size())

    def log_softmax_pass() -> None:
        for b in range(shape[0]):
            torch.log_softmax(logits[b], -1)

    out: dict[str, Any] = {"shape": list(shape), "dtype": dtype_name, "mem": mem}
    out["topk"] = best_of(lambda: torch.topk(logits, 20, dim=-1), repeat)
    # the same in this process's CPU time: with --threads 1, other processes' load moves it less
    out["topk_cpu"] = best_of(lambda: torch.topk(logits, 20, dim=-1), repeat, time.process_time)
    out["conversion_cpu"] = best_of(convert, repeat, time.process_time)
    out["log_softmax"] = best_of(log_softmax_pass, repeat)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        entry = convert()
        middle = time.perf_counter()
        encode_entry(entry, validate=False)
        times.append((middle - start, time.perf_counter() - start))
    out["conversion"], out["conversion_json"] = min(times)
    out["minimal"] = best_of(lambda: minimal_topk_json(logits, ids, vocabulary), repeat)
    out["positions"] = sum(len(s["predictions"]) for s in entry["sequences"])
    out["line_bytes"] = len(encode_entry(entry))
    from seqviz_trackers.storage import columns as columns_file

    def anew(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            columns_file._last_view = None  # the step view is made again, as for a new step
            return fn()
        return call

    with tempfile.TemporaryDirectory() as tmp, TrainingDataWriter(os.path.join(tmp, "x.jsonl")) as writer:
        out["write"] = best_of(anew(lambda: writer.write_step(entry)), repeat)
    line = encode_entry(entry)
    out["record_dynamics"] = best_of(lambda: columns_file.encode_record(entry, 0, len(line) - 1), repeat)
    out["record_view"] = best_of(anew(lambda: columns_file.encode_record(entry, 0, len(line) - 1, line=line)), repeat)
    out["record_bytes"] = len(columns_file.encode_record(entry, 0, len(line) - 1, line=line))
    if loops and logits.numel() <= LOOP_MAX_ELEMENTS:
        out["loop_sort"] = best_of(lambda: per_position_loop(logits, ids), 1)
        out["loop_topk"] = best_of(lambda: per_position_loop(logits, ids, sort=False), 1)
    return out


def report(r: dict[str, Any]) -> None:
    """Print one case's figures."""
    b, t, v = r["shape"]
    conv = r["conversion"]
    print(f"\nB,T,V = {b} x {t} x {v}, {r['dtype']}  ({r['positions']} predicted positions)")
    print(f"  conversion {conv * 1e3:9.1f} ms   topk {r['topk'] * 1e3:8.1f} ms   -> conversion/topk        {conv / r['topk']:5.2f}  (goal <= 3)")
    print(f"  CPU time: conversion {r['conversion_cpu'] * 1e3:9.1f} ms   topk {r['topk_cpu'] * 1e3:8.1f} ms"
          f" -> conversion/topk {r['conversion_cpu'] / r['topk_cpu']:5.2f}  (this process; with --threads 1 less moved by load)")
    print(f"  log_softmax pass {r['log_softmax'] * 1e3:9.1f} ms               -> conversion/log_softmax {conv / r['log_softmax']:5.2f}")
    print(f"  conversion+JSON {r['conversion_json'] * 1e3:9.1f} ms   minimal topk+JSON {r['minimal'] * 1e3:9.1f} ms"
          f" -> ratio {r['conversion_json'] / r['minimal']:5.2f}  (goal <= 1.0)")
    print(f"  peak extra memory / logits size                   -> {r['mem']:5.3f}  (goal <= 0.25)")
    print(f"  JSON bytes per predicted position                 -> {r['line_bytes'] / r['positions']:5.0f}  (goal <= 700)"
          f"   ({r['line_bytes'] / 1e6:.1f} MB per step)")
    print(f"  write (validate + serialise + append) per step    -> {r['write'] * 1e3:7.1f} ms")
    if "record_view" in r:
        print(f"  of which the columns record {r['record_view'] * 1e3:7.1f} ms ({r['record_bytes'] / 1e6:.2f} MB; without its "
              f"step view {r['record_dynamics'] * 1e3:.1f} ms) -> record/conversion {r['record_view'] / conv:5.3f}, "
              f"its step view/conversion {(r['record_view'] - r['record_dynamics']) / conv:5.3f}")
    if "loop_sort" in r:
        print(f"  per-position loop, sort {r['loop_sort'] * 1e3:8.1f} ms  -> speed-up {r['loop_sort'] / conv:5.1f}x (goal >= 5)")
        print(f"  per-position loop, topk+count {r['loop_topk'] * 1e3:8.1f} ms -> speed-up {r['loop_topk'] / conv:5.1f}x")
    sys.stdout.flush()


def parse_shape(text: str) -> tuple[int, int, int]:
    """``4x512x50257`` -> (4, 512, 50257)."""
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"a shape is BxTxV, got {text!r}")
    return parts  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat per timing (default 3)")
    parser.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")], default=SHAPES,
                        help="comma-separated BxTxV shapes (default: the whole matrix)")
    parser.add_argument("--dtypes", type=lambda s: s.split(","), default=list(DTYPES), help="comma-separated: fp32,bf16")
    parser.add_argument("--loops", action="store_true", help="also time per-position loops (smallest shape only; minutes)")
    parser.add_argument("--threads", type=int, help="torch threads in each case (default: torch's own); 1 gives "
                        "figures a busy machine moves least (each parallel step waits for its slowest thread)")
    parser.add_argument("--json", metavar="FILE", help="also append each case's figures to FILE as one JSON line")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        shape, dtype = args.case.split(":")
        print(json.dumps(run_case(parse_shape(shape), dtype, repeat, args.loops)))
        return
    for d in args.dtypes:
        if d not in DTYPES:
            parser.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, logits ~ N(0, {SCALE}^2), CPU, "
          f"best of {repeat}; one fresh process per case")
    for shape in args.shapes:
        for d in args.dtypes:
            case = f"{'x'.join(map(str, shape))}:{d}"
            cmd = [sys.executable, os.path.abspath(__file__), "--case", case]
            cmd += (["--quick"] if args.quick else []) + (["--loops"] if args.loops else [])
            cmd += [f"--threads={args.threads}"] if args.threads else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"\n{case}: failed (exit {proc.returncode})\n{proc.stderr.strip()[-2000:]}")
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            report(result)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
