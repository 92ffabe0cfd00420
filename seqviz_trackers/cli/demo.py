"""``seqviz demo``: train a tiny GPT-2 on Hamlet on the CPU and watch it learn.

Everything is built on the spot, nothing is downloaded: a byte-level BPE tokenizer is
trained on the play bundled with the package, a small GPT-2 is made from a config and
trained with the Hugging Face ``Trainer`` and :class:`VisualizationCallback` on Act III,
scene 1 (the "To be, or not to be" soliloquy). The probe set is the first lines of the
soliloquy, so you can see them go from noise to recited text.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from importlib import resources, util
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "demo_trainer", "train_demo", "probe_accuracy", "PROBE_LINES"]

#: The evaluation set starts with these lines, so they are the probe set.
PROBE_LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune",
    "Or to take arms against a sea of troubles,",
]
SEED = 1234
LEARNING_RATE = 5e-3
JSONL_NAME = "seqviz.jsonl"
BLOCK = 48
EVALS = 16  # evaluations across training, plus one before the first step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--steps", type=int, default=480, help="training steps (default: 480)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed of the model and the data order (default: {SEED})")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE, help=f"peak learning rate (default: {LEARNING_RATE:g})")
    parser.add_argument("--serve", action="store_true", help="start the live dashboard while it trains")
    parser.add_argument("--port", type=int, default=8765, help="port of the live dashboard (default: 8765)")
    parser.add_argument("--no-wandb", action="store_true", help="no W&B offline run even when wandb is installed")


def _text() -> str:
    return resources.files("seqviz_trackers").joinpath("data/hamlet.txt").read_text("utf-8")


def _scene(text: str) -> str:
    """Act III, scene 1, with this edition's dashes turned into plain punctuation."""
    start = text.index("ACT III.")
    end = text.index("Scene II.", start)
    scene = text[start:end].replace(",--", ", ").replace("--", " ")
    return "\n".join(line.rstrip() for line in scene.splitlines()) + "\n"


def _tokenizer(text: str, vocab_size: int = 1024) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text[i:i + 4096] for i in range(0, len(text), 4096)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _windows(tok: Any, text: str) -> list[list[int]]:
    """One training example per line of ``text``: its tokens and the following lines', up to BLOCK.

    Starting every example at a line start lets the model recite a line given on its own.
    """
    lines = [tok(line)["input_ids"] for line in text.splitlines(keepends=True)]
    examples = []
    for i in range(len(lines)):
        ids: list[int] = []
        for line in lines[i:]:
            if len(ids) >= BLOCK:
                break
            ids += line
        if len(ids) >= BLOCK // 2:
            examples.append(ids[:BLOCK])
    return examples


def demo_trainer(out: str | os.PathLike[str], steps: int = 480, *, wandb: bool = False, quiet: bool = False,
                 visualize: bool = True, seed: int = SEED, lr: float = LEARNING_RATE) -> Any:
    """The demo's ``Trainer``, ready to train (``visualize=False``: without the callback).

    ``seed`` and ``lr`` change the model's initialisation and data order, and the peak
    learning rate; the tokenizer and the probe texts stay the same, so two demo runs can be
    compared token by token (``seqviz compare-runs``)."""
    from transformers import (DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, PrinterCallback,
                              ProgressCallback, Trainer, TrainerCallback, TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    from ..integrations import VisualizationCallback

    hf_logging.set_verbosity_error()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / JSONL_NAME
    jsonl.unlink(missing_ok=True)  # a fresh file each run; TensorBoard keeps runs apart itself
    set_seed(seed)

    text = _text()
    tok = _tokenizer(text)
    train = [{"input_ids": ids} for ids in _windows(tok, _scene(text))]
    evals = [{"input_ids": tok(line)["input_ids"]} for line in PROBE_LINES] + train[::40]
    config = GPT2Config(vocab_size=len(tok), n_positions=BLOCK, n_embd=128, n_layer=2, n_head=4,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    every = max(1, steps // EVALS)
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=lr, warmup_steps=max(1, steps // 20), lr_scheduler_type="cosine", weight_decay=0.01,
        eval_strategy="steps", eval_steps=every, eval_on_start=True, logging_steps=every,
        save_strategy="no", report_to=["tensorboard"] + (["wandb"] if wandb else []), run_name="seqviz-demo",
        use_cpu=True, seed=seed, dataloader_num_workers=0, disable_tqdm=quiet,
    )

    class EvaluateAtEnd(TrainerCallback):
        """Evaluate after the last step too, whatever ``eval_steps`` is."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_evaluate = True
            return control

    callbacks: list[Any] = [EvaluateAtEnd()]
    if visualize:
        callbacks.insert(0, VisualizationCallback(jsonl, max_sequences_per_eval=len(PROBE_LINES),
                                                  model_name="tiny-gpt2-hamlet"))
    trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=train, eval_dataset=evals,
                      processing_class=tok, data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=callbacks)
    # The Trainer's own progress output prints every metric dict and a bar per evaluation: keep one bar.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not quiet:
        trainer.add_callback(_OneProgressBar())
    return trainer


def _OneProgressBar() -> Any:
    """A callback showing one progress bar over the training steps, with the latest losses."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class OneProgressBar(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.losses: dict[str, str] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            for key, label in (("loss", "loss"), ("eval_loss", "eval loss")):
                try:
                    self.losses[label] = f"{float((logs or {})[key]):.3f}"
                except (KeyError, TypeError, ValueError):
                    pass
            if self.bar is not None and self.losses:
                self.bar.set_postfix({k: self.losses[k] for k in ("loss", "eval loss") if k in self.losses}, refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return OneProgressBar()


def train_demo(out: str | os.PathLike[str], steps: int = 480, *, wandb: bool = False, quiet: bool = False,
               seed: int = SEED, lr: float = LEARNING_RATE) -> dict[str, Any]:
    """Build, train and log the demo run. Returns paths and timings.

    The run lands in ``out``: ``seqviz.jsonl`` (the seqviz file) and, beside the
    Trainer's scalars, its TensorBoard run under ``out/runs/`` (+ ``out/wandb/``).
    """
    import torch

    started = time.perf_counter()
    out = Path(out)
    trainer = demo_trainer(out, steps, wandb=wandb, quiet=quiet, seed=seed, lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread, and leaves a core free
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
        if wandb:
            import wandb as wandb_lib

            wandb_lib.finish()
    return {"jsonl": out / JSONL_NAME, "seconds": time.perf_counter() - started, "steps": steps}


def probe_accuracy(path: str | os.PathLike[str], name: str = "eval[0]") -> dict[int, tuple[int, int]]:
    """``{step: (correct, predicted)}`` for one probe sequence of a seqviz file."""
    result: dict[int, tuple[int, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            for seq in entry["sequences"]:
                if seq.get("name") == name:
                    preds = seq["predictions"]
                    result[entry["step"]] = (sum(bool(p.get("correct")) for p in preds), len(preds))
    return result


def _logged_losses(path: str | os.PathLike[str]) -> list[tuple[int, float]]:
    """(step, loss) of each logged step that has a loss, by step."""
    from ..storage.jsonl import TrainingDataReader

    return [(s.step, s.loss) for s in TrainingDataReader(path).steps if s.loss is not None]


def _command(name: str) -> str:
    """``name`` as the user can type it: bare when on PATH, else the path beside this Python."""
    here = Path(sys.executable).parent / name
    if shutil.which(name) == str(here) or not here.exists():
        return name
    relative = os.path.relpath(here) if Path(here).is_relative_to(Path.cwd()) else None
    return relative or str(here)


def run(args: argparse.Namespace) -> int:
    from .main import CommandError

    if args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    if not args.lr > 0:
        raise CommandError(f"--lr must be a positive number, got {args.lr}")
    missing = [m for m in ("transformers", "tokenizers", "accelerate", "tensorboard") if util.find_spec(m) is None]
    if missing:
        raise CommandError(f"needs {', '.join(missing)}: pip install transformers tokenizers tensorboard (the hf and tensorboard extras)")
    out = Path(args.out)
    use_wandb = not args.no_wandb and util.find_spec("wandb") is not None and util.find_spec("wandb_panel") is not None
    if use_wandb:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(out))
        os.environ.setdefault("WANDB_PROJECT", "seqviz-demo")
        os.environ.setdefault("WANDB_SILENT", "true")
    jsonl = out / JSONL_NAME
    server = None
    if args.serve:
        from ..serve.server import start_in_thread

        jsonl.unlink(missing_ok=True)  # the dashboard follows the new run from its first step
        try:
            server = start_in_thread(file=str(jsonl), port=args.port)
        except OSError as exc:
            raise CommandError(f"cannot serve the dashboard on port {args.port} ({exc}); try --port") from None
        print(f"Live dashboard: {server.url}", flush=True)
    try:
        result = train_demo(out, args.steps, wandb=use_wandb, seed=args.seed, lr=args.lr)
        acc = probe_accuracy(result["jsonl"])
        first, last = min(acc), max(acc)
        print(f"\nTrained {result['steps']} steps in {result['seconds']:.0f} s; logged {len(acc)} steps to {result['jsonl']}")
        losses = _logged_losses(result["jsonl"])
        if losses:
            print(f"Evaluation loss: {losses[0][1]:.2f} at step {losses[0][0]}, "
                  f"{losses[-1][1]:.2f} at step {losses[-1][0]}")
        print(f'Probe "{PROBE_LINES[0]}": {acc[first][0]}/{acc[first][1]} tokens predicted right at step {first}, '
              f"{acc[last][0]}/{acc[last][1]} at step {last}")
        print("\nLook at it:")
        print(f"  {_command('tensorboard')} --logdir {out}        # then open the SEQVIZ tab")
        print(f"  {_command('seqviz')} serve --file {result['jsonl']}")
        if use_wandb:
            runs = Path(os.environ["WANDB_DIR"]) / "wandb"
            print(f"  {_command('wandb')} sync {runs}/offline-run-*        # upload the offline W&B run")
        if server is not None:
            print(f"\nThe live dashboard stays up at {server.url}; press Ctrl+C to stop.", flush=True)
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        return 130 if server is None else 0
    finally:
        if server is not None:
            server.stop()
    return 0
