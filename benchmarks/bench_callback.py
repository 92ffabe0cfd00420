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

``--case lightning`` trains the same model, data and batch size with a Lightning
``Trainer`` and :class:`~seqviz_trackers.integrations.lightning.SeqVizCallback` probing the
demo's probe lines every ``--every`` steps (default 50), and reports the time inside the
callback's hooks as a share of the training time (goal <= 2 %).

    python benchmarks/bench_callback.py [--case hf|lightning|all] [--steps 480] [--repeat 2] [--every 50]
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


HF_EVENTS = ("on_init_end", "on_train_begin", "on_step_end", "on_evaluate", "on_train_end")


def time_inside(callback: object, spent: list[float], names: tuple[str, ...] = HF_EVENTS) -> None:
    """Add the wall time of each of the callback's event handlers ``names`` to ``spent[0]``."""
    for name in names:
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


def lightning_training(out: str, steps: int, every: int | None, spent: list[float]) -> float:
    """Wall seconds of a Lightning fit of the demo model (``every=None``: without the callback)."""
    import lightning.pytorch as L

    from seqviz_trackers.cli.demo import BLOCK, PROBE_LINES, SEED, _scene, _text, _tokenizer, _windows
    from seqviz_trackers.integrations.lightning import SeqVizCallback
    from transformers import DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel

    class DemoLM(L.LightningModule):
        def __init__(self, config: GPT2Config):
            super().__init__()
            self.model = GPT2LMHeadModel(config)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
            return self.model(input_ids=input_ids, attention_mask=attention_mask)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            return self.model(**batch).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=5e-3, weight_decay=0.01)

    L.seed_everything(SEED, verbose=False)
    text = _text()
    tok = _tokenizer(text)
    train = [{"input_ids": ids} for ids in _windows(tok, _scene(text))]
    config = GPT2Config(vocab_size=len(tok), n_positions=BLOCK, n_embd=128, n_layer=2, n_head=4,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True,
                                         collate_fn=DataCollatorForLanguageModeling(tok, mlm=False))
    callbacks = []
    if every is not None:
        viz = SeqVizCallback(probe_texts=PROBE_LINES, tokenizer=tok, every_n_steps=every, on_validation_end=False,
                             output_file=f"{out}/seqviz.jsonl", model_name="tiny-gpt2-hamlet")
        time_inside(viz, spent, ("setup", "on_fit_start", "on_train_batch_end", "teardown"))
        callbacks.append(viz)
    trainer = L.Trainer(default_root_dir=out, accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks)
    wall = time.perf_counter()
    trainer.fit(DemoLM(config), loader)
    return time.perf_counter() - wall


def lightning_case(steps: int, repeat: int, every: int) -> None:
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    times: dict[bool, list[float]] = {False: [], True: []}
    spent = [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        lightning_training(f"{tmp}/warmup", min(steps, 20), every, [0.0])
        for i in range(repeat):
            for visualize in ((False, True) if i % 2 == 0 else (True, False)):
                wall = lightning_training(f"{tmp}/{visualize}-{i}", steps, every if visualize else None, spent)
                times[visualize].append(wall)
                print(f"  run {i} {'with' if visualize else 'without'} callback: wall {wall:.2f} s", flush=True)
    inside = spent[0] / repeat
    with_cb = statistics.median(times[True])
    base = statistics.median(times[False])
    share = inside / with_cb
    print(f"lightning, demo model, {steps} steps, every_n_steps={every}, median of {repeat} runs each:")
    print(f"  wall  without {base:6.2f} s  with callback {with_cb:6.2f} s  ratio {with_cb / base:.3f}")
    print(f"  time inside the callback: {inside:.2f} s per run = {share:.1%} of training time "
          f"(goal <= 2 %) {'OK' if share <= 0.02 else 'OVER'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=480, help="training steps per run (the demo's default)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant, alternated")
    parser.add_argument("--case", choices=("hf", "lightning", "all"), default="all",
                        help="the Hugging Face Trainer, Lightning, or both (default)")
    parser.add_argument("--every", type=int, default=50, help="Lightning: probe every N steps (default: 50)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the demo does
    if args.case in ("lightning", "all"):
        lightning_case(args.steps, args.repeat, args.every)
    if args.case == "lightning":
        return

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
