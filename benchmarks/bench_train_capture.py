"""Cost of training-batch capture (``capture_train=``), measured in one run.

For two models it trains with plain optimizer steps (forward with labels, backward, AdamW)
in four modes, alternated so that load from other processes hits each alike:

- ``base``: no capture;
- ``rows``: every step's row losses (``CaptureOptions(every=0)``: the per-row loss, hash and
  the per-micro-batch spike check; no per-token capture unless a spike), through the same
  forward hooks as the Hugging Face callback (``integrations._capture.ForwardCapture``), the
  token losses taken from the model's own loss computation;
- ``rows_logits``: the same, the row losses computed from the logits (``reuse_loss=False``:
  what a model whose loss the capture cannot take gets: one more cross-entropy pass);
- ``capture``: a full per-token capture at every step (``every=1``: 4 top + 4 random rows
  through the converter), to price one capture step.

It prints the median CPU seconds per step of each mode (this process's CPU time: training
runs on one thread, and other processes' load barely touches it; wall time beside it) and
the ratios: ``rows / base`` (goal <= 1.03; ``rows_logits / base`` beside it) and, with a full capture every 100 steps,
``(99 * rows + capture) / (100 * base)`` (goal <= 1.05), made from the same measured steps.
The same ratios are also given from the CPU time spent inside the capture itself (its
``add`` and ``finish``, timed around the calls), which the load of other processes and the
step-to-step noise of a whole training step do not blur.

Memory: the peak extra memory of capture (rows, and a capture step) over the logits' own
size (goal <= 0.25), in a fresh process per case: on CUDA ``max_memory_allocated``; on a
CPU the growth of the process's peak resident size (``VmHWM``) across ``add`` +
``finish`` on logits made beforehand (with glibc's mmap threshold fixed at 64 KiB, so
every large block counts; the largest of three processes).

Cases: the ``seqviz demo`` model (GPT-2, 2 layers, n_embd 128, its own BPE vocabulary,
batch 16 x 48 tokens) and a 2-layer GPT-2 (n_embd 128) at B=8, T=512, V=50257.

    python benchmarks/bench_train_capture.py [--quick] [--repeat 3] [--steps-large 2] [--steps-demo 30]

Default: a few minutes on a CPU; ``--quick`` about a minute (fewer, shorter rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from seqviz_trackers.capture import BatchCapture, CaptureOptions
from seqviz_trackers.integrations._capture import ForwardCapture

# mode -> (options, take the token losses from the model's loss, run the capture's ``add``); None: no capture
Mode = tuple[CaptureOptions, bool, bool]
MODES: dict[str, Mode | None] = {
    "base": None, "rows": (CaptureOptions(every=0), True, True), "rows_logits": (CaptureOptions(every=0), False, True),
    "capture": (CaptureOptions(every=1), True, True)}
# --parts: the hooks alone (``add`` a no-op), then with the loss taken over (reduction="none")
PARTS: dict[str, Mode | None] = {"hooks": (CaptureOptions(every=0), False, False),
                                 "hooks_loss": (CaptureOptions(every=0), True, False)}


def demo_vocab() -> tuple[int, int, int]:
    """(vocabulary size, batch, length) of the ``seqviz demo`` training."""
    from seqviz_trackers.cli import demo

    return len(demo._tokenizer(demo._text())), 16, demo.BLOCK


def model_for(vocab: int, length: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=length, n_embd=128, n_layer=2, n_head=4))


def timed(fn: Any, spent: list[float]) -> Any:
    """``fn``, adding the CPU seconds of each call to ``spent``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.process_time() - start)
    return wrapper


def time_steps(model: Any, opt: Any, ids: torch.Tensor, mode: Mode | None, steps: int,
               first_step: int, inside: list[float] | None = None) -> list[tuple[float, float]]:
    """(CPU s, wall s) of each of ``steps`` optimizer steps in one mode; ``inside`` gets the
    CPU seconds spent in the capture itself (``add`` and ``finish``)."""
    hooks = None
    if mode is not None:
        step = [first_step]
        hooks = ForwardCapture(mode[0], None, lambda: step[0], reuse_loss=mode[1])
        if not mode[2]:
            hooks.capture.add = lambda *args, **kwargs: None
        if inside is not None:
            hooks.capture.add = timed(hooks.capture.add, inside)
            hooks.capture.finish = timed(hooks.capture.finish, inside)
        hooks.attach(model)
    out = []
    try:
        for k in range(steps):
            c, w = time.process_time(), time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if hooks is not None:
                hooks.finish(step[0])
                step[0] += 1
            out.append((time.process_time() - c, time.perf_counter() - w))
    finally:
        if hooks is not None:
            hooks.detach()
    return out


def time_case(vocab: int, batch: int, length: int, steps: int, repeat: int,
              modes: dict[str, Mode | None] = MODES) -> dict[str, Any]:
    model = model_for(vocab, length)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    time_steps(model, opt, ids, MODES["rows"], 1, 1)  # warm up (allocator, kernels), capture included
    time_steps(model, opt, ids, MODES["rows_logits"], 1, 1)
    time_steps(model, opt, ids, None, 1, 1)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    inside: dict[str, list[float]] = {m: [] for m in modes}
    at = 1_000
    for _ in range(repeat):
        for mode, options in modes.items():
            times[mode] += time_steps(model, opt, ids, options, steps, at, inside[mode])
            at += steps
    med = {m: (statistics.median(c for c, _ in t), statistics.median(w for _, w in t)) for m, t in times.items()}
    n = steps * repeat
    out = {"vocab": vocab, "batch": batch, "length": length, "steps_per_mode": steps * repeat,
           "cpu_s": {m: round(v[0], 5) for m, v in med.items()}, "wall_s": {m: round(v[1], 5) for m, v in med.items()},
           "inside_s": {m: round(sum(inside[m]) / n, 5) for m in modes if modes[m] is not None}}
    base, rows = med["base"][0], med["rows"][0]
    rows_in = sum(inside["rows"]) / n
    out.update(rows_ratio=rows / base, inside_rows_ratio=1 + rows_in / base)
    if "capture" in modes:
        rows_logits, cap = med["rows_logits"][0], med["capture"][0]
        logits_in, cap_in = (sum(inside[m]) / n for m in ("rows_logits", "capture"))
        out.update(rows_logits_ratio=rows_logits / base, every100_ratio=(99 * rows + cap) / (100 * base),
                   capture_step_ratio=cap / base, inside_rows_logits_ratio=1 + logits_in / base,
                   inside_every100_ratio=1 + (99 * rows_in + cap_in) / (100 * base))
    return out


def peak_rss() -> int:
    """This process's peak resident size in bytes (``VmHWM``: unlike ``ru_maxrss``, it does not
    start from the peak of the process that forked this one)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(batch: int, length: int, vocab: int, mode: str) -> dict[str, Any]:
    """Peak extra memory of ``add`` + ``finish`` over logits made beforehand (run in a fresh process)."""
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    logits = torch.empty(batch, length, vocab, device=device).normal_()  # in place: randn would peak higher first
    ids = torch.randint(0, vocab, (batch, length), device=device)
    size = logits.numel() * logits.element_size()
    options = MODES[mode][0]
    warm = BatchCapture(options)  # the code paths once, on one row (a view): library pages, lazy set-up
    warm.add(logits[:1], ids[:1], ids[:1], step=1)
    warm.finish(1)
    cap = BatchCapture(options)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = peak_rss()
    cap.add(logits, ids, ids, step=1)
    record = cap.finish(1)
    if cuda:
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        extra = peak_rss() - before
    assert record is not None and (mode != "capture" or record["capture"] is not None)
    return {"mode": mode, "device": device, "logits_bytes": size, "extra_bytes": int(extra), "ratio": extra / size,
            "record_bytes": deep_size(record)}


def deep_size(obj: Any) -> int:
    """Bytes of the Python objects ``obj`` is made of (each object once; shared strings once)."""
    seen: set[int] = set()
    todo, total = [obj], 0
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            todo += [*o.keys(), *o.values()]
        elif isinstance(o, (list, tuple)):
            todo += o
    return total


def memory(batch: int, length: int, vocab: int, mode: str) -> dict[str, Any]:
    # a fixed mmap threshold: every block of 64 KiB or more is mapped when allocated and unmapped
    # when freed, so the peak resident size follows them (glibc would otherwise raise the
    # threshold and serve them from memory freed earlier, e.g. by imports)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    runs = []
    for _ in range(3):  # the largest of three: pages the kernel reclaims meanwhile (shared libraries) only lower it
        out = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps([batch, length, vocab, mode])],
                             capture_output=True, text=True, check=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return max(runs, key=lambda r: r["extra_bytes"])


def parts(case: tuple[int, int, int], steps: int, repeat: int) -> None:
    """Where the whole-step difference of ``rows`` goes on the demo model: the forward hooks
    alone (``add`` a no-op), the hooks with the loss taken over (``reduction="none"``), the
    capture's own work; all alternated in one run, and ``base`` twice (its spread is the noise)."""
    vocab, batch, length = case
    modes = {"base": None, "hooks": PARTS["hooks"], "hooks_loss": PARTS["hooks_loss"], "rows": MODES["rows"],
             "base2": None}
    r = time_case(vocab, batch, length, steps, repeat, modes)
    c = r["cpu_s"]
    print(f"demo model, CPU seconds per optimizer step (median of {r['steps_per_mode']} steps a mode, alternated):")
    for m in modes:
        print(f"  {m:11} {c[m]:.5f}  / base {c[m] / c['base']:.4f}")
    print(f"  inside add + finish (rows): {r['inside_s']['rows']:.5f} s/step -> {r['inside_rows_ratio']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three modes, alternated")
    parser.add_argument("--steps-large", type=int, default=2, help="steps per mode and round at B=8, T=512, V=50257")
    parser.add_argument("--steps-demo", type=int, default=30, help="steps per mode and round on the demo model")
    parser.add_argument("--parts", action="store_true",
                        help="only the demo model: the hooks alone and with the loss taken over, beside base and rows")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(*json.loads(args.memory_child))))
        return
    if args.quick:
        args.repeat, args.steps_large, args.steps_demo = 2, 1, 10
    torch.set_num_threads(1)
    demo = demo_vocab()
    if args.parts:
        parts(demo, args.steps_demo, args.repeat)
        return
    cases = [("demo model", demo, args.steps_demo), ("2-layer, B=8 T=512 V=50257", (50257, 8, 512), args.steps_large)]
    print("CPU seconds per optimizer step (median), and the ratios to no capture:")
    print(f"{'case':28} {'base s/step':>11} {'rows':>9} {'rows_log':>9} {'capture':>9}   rows/base  "
          "rows_logits/base  every-100/base  capture-step/base")
    results = []
    for name, (vocab, batch, length), steps in cases:
        r = time_case(vocab, batch, length, steps, args.repeat)
        results.append((name, r))
        c = r["cpu_s"]
        print(f"{name:28} {c['base']:11.4f} {c['rows']:9.4f} {c['rows_logits']:9.4f} {c['capture']:9.4f}   "
              f"{r['rows_ratio']:9.4f}  {r['rows_logits_ratio']:16.4f}  {r['every100_ratio']:14.4f}  "
              f"{r['capture_step_ratio']:17.3f}   (median of {r['steps_per_mode']} steps)")
    print("\nthe same from the CPU time spent inside the capture (add + finish), which other processes' load does not blur:")
    print(f"{'case':28} {'rows s/step':>11} {'rows_log':>9} {'capture':>9}   rows/base  rows_logits/base  every-100/base")
    for name, r in results:
        i = r["inside_s"]
        print(f"{name:28} {i['rows']:11.4f} {i['rows_logits']:9.4f} {i['capture']:9.4f}   {r['inside_rows_ratio']:9.4f}  "
              f"{r['inside_rows_logits_ratio']:16.4f}  {r['inside_every100_ratio']:14.4f}")
    print("\npeak extra memory of capture / size of the logits (row losses computed from the logits: the larger case)")
    for name, (vocab, batch, length), _steps in cases:
        for mode in ("rows", "capture"):
            m = memory(batch, length, vocab, mode)
            print(f"{name:28} {mode:8} logits {m['logits_bytes'] / 2**20:8.1f} MiB  extra {m['extra_bytes'] / 2**20:7.2f} MiB"
                  f"  ratio {m['ratio']:.4f}  ({m['device']}; the record itself, Python objects: {m['record_bytes'] / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
