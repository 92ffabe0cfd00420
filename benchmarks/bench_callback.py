"""Overhead of VisualizationCallback with its defaults on the demo configuration.

Trains the ``seqviz demo`` model (same seed, data, evaluations and TensorBoard
reporting) with and without the callback, alternating the two so that load from
other processes hits both alike, and reports the median whole training +
evaluation time of each and their ratio (goal <= 1.10): wall-clock time, and this
process's CPU time, which load from other processes on a shared machine barely
touches (training runs on one thread, as in the demo). It also sums the time spent
inside the callback's event handlers, an estimate of the overhead that other
processes' load does not blur. All timings come from this one run; compare the
ratios, not the seconds.

    python benchmarks/bench_callback.py [--steps 480] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time

import torch

from seqviz_trackers.cli.demo import demo_trainer
from seqviz_trackers.integrations import VisualizationCallback


def time_inside(callback: VisualizationCallback, spent: list[float]) -> None:
    """Add the wall time of each of the callback's event handlers to ``spent[0]``."""
    for name in ("on_init_end", "on_train_begin", "on_step_end", "on_evaluate", "on_train_end"):
        handler = getattr(callback, name)

        def timed(*args, _handler=handler, **kwargs):
            start = time.perf_counter()
            try:
                return _handler(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(callback, name, timed)


def timed_training(out: str, steps: int, visualize: bool, spent: list[float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``trainer.train()``, evaluations included."""
    trainer = demo_trainer(out, steps, quiet=True, visualize=visualize)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, VisualizationCallback):
            time_inside(callback, spent)
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs
        trainer.train()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=480, help="training steps per run (the demo's default)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant, alternated")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the demo does

    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        timed_training(f"{tmp}/warmup", min(args.steps, 20), True, [0.0])  # imports, first-call costs
        spent = [0.0]
        for i in range(args.repeat):
            for visualize in ((False, True) if i % 2 == 0 else (True, False)):
                wall, cpu = timed_training(f"{tmp}/{visualize}-{i}", args.steps, visualize, spent)
                times[visualize].append((wall, cpu))
                print(f"  run {i} {'with' if visualize else 'without'} callback: wall {wall:.2f} s, cpu {cpu:.2f} s",
                      flush=True)
    print(f"demo config, {args.steps} steps, median of {args.repeat} runs each:")
    for k, what in enumerate(("wall", "cpu")):
        base = statistics.median(t[k] for t in times[False])
        viz = statistics.median(t[k] for t in times[True])
        ratio = viz / base
        print(f"  {what:4}  without {base:6.2f} s  with callback {viz:6.2f} s  ratio {ratio:.3f} "
              f"(goal <= 1.10) {'OK' if ratio <= 1.10 else 'OVER'}")
    inside = spent[0] / args.repeat
    base = statistics.median(t[0] for t in times[False])
    print(f"  time inside the callback: {inside:.2f} s per run = {inside / base:.1%} of training without it "
          f"(noise-free estimate of the ratio: {1 + inside / base:.3f})")

if __name__ == "__main__":
    main()
