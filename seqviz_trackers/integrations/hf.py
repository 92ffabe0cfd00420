"""Hugging Face ``Trainer`` integration: :class:`VisualizationCallback`.

A ``TrainerCallback`` is never handed the trainer or the evaluation logits, so the
callback keeps a fixed *probe set* (the first ``max_sequences_per_eval`` examples of
the evaluation set, or texts you give) and runs one extra forward pass on it at each
evaluation, under ``torch.no_grad()``, with the model's train/eval mode restored after.
The same sequences at every step make steps comparable in the dashboard.

For predictions from the real evaluation loop instead, :meth:`VisualizationCallback.metric_hooks`
returns a ``compute_metrics`` / ``preprocess_logits_for_metrics`` pair for the
``Trainer``: the logits are reduced on the device, so evaluation no longer keeps every
batch's full logits, and your own metric functions keep working.

Only the main process writes; every process joins the probe forward pass, which
sharded models (FSDP, ZeRO-3) need.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..capture import capture_options
from ..convert import perplexity, tensor_to_training_entry
from ..logger import SeqVizLogger, global_rank
from ._capture import ForwardCapture
from ._probe import examples, mirror_target, probe_entry, probe_forward, probe_from_batch, probe_from_texts, tokenizer_of

__all__ = ["VisualizationCallback", "tensorboard_run_dir"]

log = logging.getLogger("seqviz_trackers")

#: A TensorBoard run directory whose event file changed this recently (seconds) is
#: taken to be the one ``TensorBoardCallback`` just opened for this training.
FRESH_RUN_SECONDS = 120.0


def tensorboard_run_dir(args: TrainingArguments) -> str:
    """The run directory ``transformers``' ``TensorBoardCallback`` writes to for ``args``.

    ``$TENSORBOARD_LOGGING_DIR`` when set; else the ``output_dir/runs/<time>_<host>``
    directory that callback opened at train begin (the one with the most recently
    written event file, if that was within :data:`FRESH_RUN_SECONDS`); else a new
    directory named the same way.
    """
    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if env:
        return os.path.expanduser(env)
    runs = Path(args.output_dir) / "runs"
    events = list(runs.glob("*/events.out.tfevents.*")) if runs.is_dir() else []
    if events:
        newest = max(events, key=lambda p: p.stat().st_mtime)
        if time.time() - newest.stat().st_mtime < FRESH_RUN_SECONDS:
            return str(newest.parent)
    from transformers.integrations.integration_utils import default_logdir

    return os.path.join(args.output_dir, default_logdir())


def _eval_loss(metrics: dict[str, float]) -> float | None:
    """The evaluation loss in ``metrics`` when it is a finite number, else None."""
    value = metrics.get("eval_loss")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class VisualizationCallback(TrainerCallback):
    """Log the model's token-by-token predictions on a fixed probe set while it trains.

    >>> viz = VisualizationCallback(output_file="training_viz.jsonl", max_sequences_per_eval=4)
    >>> trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evals, callbacks=[viz])

    Args:
        output_file: the JSONL file (the source of truth for every viewer).
        max_sequences_per_eval: size of the probe set: the first examples of the
            evaluation set (collated by the evaluation data collator, so padding and
            ``-100`` labels are as in evaluation).
        probe_texts: texts to probe instead of evaluation examples.
        every_n_steps: also probe every N optimizer steps (None: at evaluations only).
            Before the first evaluation the probe set comes from ``probe_texts``, the
            evaluation set if one was already seen, else the training set.
        tokenizer: used when neither the ``Trainer``'s ``processing_class`` nor its
            data collator holds one; takes precedence over both when given.
        top_k: candidates kept per position.
        tensorboard: None follows ``args.report_to``; True / False forces the mirror
            on / off (on: the run directory of ``TensorBoardCallback``, see
            :func:`tensorboard_run_dir`); a directory or ``SummaryWriter`` is used as is.
        wandb: None follows ``args.report_to``; True / False forces the mirror on / off
            (on: the active ``wandb.run``); a run object is used as is.
        model_name: stored in each entry's metadata (default: the model's name or class).
        capture_train: also keep the training batches, from the logits of the training
            forward (no second forward; see ``docs/spikes.md``): every optimizer step the loss
            of every row, and at capture steps the per-token view of the highest-loss and
            some random rows, in ``<output_file>.batches``. True, an int (full capture every
            N steps), a dict or :class:`~seqviz_trackers.capture.CaptureOptions`.

    Attributes:
        probe_forwards: forward passes run on the probe set by this process.
    """

    def __init__(
        self,
        output_file: str | os.PathLike[str] = "training_viz.jsonl",
        max_sequences_per_eval: int = 4,
        *,
        probe_texts: Sequence[str] | None = None,
        every_n_steps: int | None = None,
        tokenizer: Any = None,
        top_k: int = 20,
        tensorboard: Any = None,
        wandb: Any = None,
        model_name: str | None = None,
        capture_train: Any = None,
    ):
        if max_sequences_per_eval < 1:
            raise ValueError(f"max_sequences_per_eval must be at least 1, got {max_sequences_per_eval}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer or None, got {every_n_steps}")
        if probe_texts is not None and (isinstance(probe_texts, str) or not probe_texts):
            raise ValueError("probe_texts must be a non-empty list of strings")
        self.output_file = Path(output_file)
        self.max_sequences_per_eval = max_sequences_per_eval
        self.probe_texts = list(probe_texts) if probe_texts is not None else None
        self.every_n_steps = every_n_steps
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.tensorboard = tensorboard
        self.wandb = wandb
        self.model_name = model_name
        self.probe_forwards = 0
        self.capture_train = capture_options(capture_train)
        self._train_capture: ForwardCapture | None = None
        self._tokenizer: Any = tokenizer
        self._probe: dict[str, Any] | None = None
        self._logger: SeqVizLogger | None = None
        self._last_step: int | None = None
        self._warned = False
        # Filled by metric_hooks() during an evaluation loop, consumed in on_evaluate.
        self._eval_loop_seen = False
        self._captured: list[dict[str, Any]] = []
        self._pending_rows: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._captured_count = 0

    # ---- Trainer events -------------------------------------------------------------

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._find_tokenizer(kwargs)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._find_tokenizer(kwargs) is None:
            raise ValueError(
                "VisualizationCallback needs a tokenizer to show tokens: none found in the Trainer's "
                "processing_class or its data collator. Pass Trainer(processing_class=tokenizer) or "
                "VisualizationCallback(tokenizer=tokenizer)."
            )
        if self.probe_texts is not None and self._probe is None:
            self._probe = self._probe_from_texts(self.probe_texts)  # bad texts stop here, not mid-training
        self._open(args, state)
        if self.capture_train is not None and kwargs.get("model") is not None:
            self._train_capture = ForwardCapture(self.capture_train, self._tokenizer, lambda: state.global_step + 1)
            self._train_capture.attach(kwargs["model"])

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._train_capture is not None:
            record = self._train_capture.finish(state.global_step)  # every rank: the rows are gathered
            if record is not None and state.is_world_process_zero:
                self._open(args, state)
                self._logger.log_batch_record(record)
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self._log_probe(args, state, kwargs, source="train_step")

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        self._find_tokenizer(kwargs)
        if self._eval_loop_seen:
            self._log_eval_loop(args, state, metrics or {})
        else:
            self._log_probe(args, state, kwargs, metrics=metrics or {}, source="evaluate")

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._reset_eval_loop()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._train_capture is not None:
            self._train_capture.detach()
            self._train_capture = None
        self.close()

    def close(self) -> None:
        """Close the file and the mirrors; a later evaluation opens them again (appending)."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    # ---- compute_metrics helper -----------------------------------------------------

    def metric_hooks(
        self,
        compute_metrics: Callable[..., dict[str, float]] | None = None,
        preprocess_logits_for_metrics: Callable[[Any, Any], Any] | None = None,
    ) -> dict[str, Callable[..., Any]]:
        """Log predictions from the real evaluation loop; pass the result to the ``Trainer``.

        >>> trainer = Trainer(..., callbacks=[viz], **viz.metric_hooks(compute_metrics=my_metrics))

        ``preprocess_logits_for_metrics`` turns the first ``max_sequences_per_eval``
        sequences the main process evaluates into an entry on the device (top-k,
        entropies, target ranks), then reduces the batch's logits for the metrics: with
        your own ``preprocess_logits_for_metrics``, to whatever it returns; else to the
        top-1 token ids, shape ``(batch, length)``. Either way the full logits are not
        kept, which avoids the evaluation out-of-memory with large vocabularies.
        ``compute_metrics`` calls yours (with what your preprocess returned) or returns
        ``{}``; the ``Trainer`` only produces logits when ``compute_metrics`` is set.

        The entry is written at ``on_evaluate`` in place of the probe forward pass, with
        the evaluation loss as its loss. Labels give the targets and the tokens shown;
        positions labelled ``-100`` (padding, masked prompts) are left out.
        """

        def preprocess(logits: Any, labels: Any) -> Any:
            full = logits[0] if isinstance(logits, (tuple, list)) else logits
            self._eval_loop_seen = True
            need = self.max_sequences_per_eval - self._captured_count
            if need > 0 and labels is not None and global_rank() == 0:
                self._capture(full[:need].detach(), labels[:need].detach())
            if preprocess_logits_for_metrics is not None:
                return preprocess_logits_for_metrics(logits, labels)
            return full.argmax(dim=-1)

        def metrics(eval_pred: Any, **kwargs: Any) -> dict[str, float]:
            return compute_metrics(eval_pred, **kwargs) if compute_metrics is not None else {}

        return {"compute_metrics": metrics, "preprocess_logits_for_metrics": preprocess}

    def _capture(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(logits.device)
        first, self._captured_count = self._captured_count, self._captured_count + logits.shape[0]
        if self._tokenizer is None:  # evaluate() before any training event found one: convert later
            self._pending_rows.append((first, logits.cpu(), labels.cpu()))
            return
        try:
            self._captured.append(self._entry_from_labels(logits, labels, first))
        except ValueError as exc:  # e.g. NaN logits: say so, and let evaluation go on
            log.warning("seqviz: evaluation sequences %d-%d not logged: %s", first, self._captured_count - 1, exc)

    def _entry_from_labels(self, logits: torch.Tensor, labels: torch.Tensor, first: int) -> dict[str, Any]:
        keep = labels != -100
        return tensor_to_training_entry(
            logits, labels.clamp(min=0), self._tokenizer, step=0, top_k=self.top_k, attention_mask=keep,
            names=[f"eval[{first + i}]" for i in range(logits.shape[0])],
        )

    def _log_eval_loop(self, args: TrainingArguments, state: TrainerState, metrics: dict[str, float]) -> None:
        try:
            if not state.is_world_process_zero or state.global_step == self._last_step:
                return
            for first, logits, labels in self._pending_rows:
                self._captured.append(self._entry_from_labels(logits, labels, first))
            if not self._captured:
                log.warning("seqviz: the evaluation loop gave nothing to show; nothing logged at step %d", state.global_step)
                return
            entry = self._captured[0]
            for piece in self._captured[1:]:
                entry["sequences"].extend(piece["sequences"])
            entry["step"] = state.global_step
            entry["timestamp"] = time.time()
            eval_loss = _eval_loss(metrics)
            if eval_loss is not None:
                entry["loss"], entry["perplexity"] = eval_loss, perplexity(eval_loss)
            entry["metadata"].update(self._metadata(state, metrics, "eval_loop"))
            entry["metadata"]["batch_size"] = len(entry["sequences"])
            if self.model_name:
                entry["metadata"]["model_name"] = self.model_name
            self._write(args, state, entry)
        except ValueError as exc:
            log.warning("seqviz: step %d not logged: %s", state.global_step, exc)
        finally:
            self._last_step = state.global_step
            self._reset_eval_loop()

    def _reset_eval_loop(self) -> None:
        self._eval_loop_seen = False
        self._captured, self._pending_rows, self._captured_count = [], [], 0

    # ---- probe -------------------------------------------------------------------------

    def _find_tokenizer(self, kwargs: dict[str, Any]) -> Any:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_of(kwargs.get("processing_class"))
        for key in ("train_dataloader", "eval_dataloader"):
            if self._tokenizer is None:
                self._tokenizer = tokenizer_of(getattr(kwargs.get(key), "collate_fn", None))
        return self._tokenizer

    def _log_probe(self, args: TrainingArguments, state: TrainerState, kwargs: dict[str, Any], *,
                   metrics: dict[str, float] | None = None, source: str) -> None:
        """One probe forward on every process; the main process converts and writes."""
        if state.global_step == self._last_step:
            return  # one entry per step (e.g. the final evaluation after the last one)
        probe = self._get_probe(kwargs)
        model = kwargs.get("model")
        if probe is None or model is None:
            return
        logits = probe_forward(model, probe)
        self.probe_forwards += 1
        self._last_step = state.global_step
        if not state.is_world_process_zero:
            return
        try:
            entry = probe_entry(logits, probe, self._tokenizer, state.global_step,
                                model_name=self.model_name or self._name_of(model), top_k=self.top_k,
                                metadata=self._metadata(state, metrics or {}, source))
        except ValueError as exc:  # e.g. NaN logits: say so, and let training go on
            log.warning("seqviz: step %d not logged: %s", state.global_step, exc)
            return
        self._write(args, state, entry)

    def _get_probe(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        if self._probe is not None:
            return self._probe
        if self._find_tokenizer(kwargs) is None:
            raise ValueError("VisualizationCallback needs a tokenizer: pass VisualizationCallback(tokenizer=...)")
        if self.probe_texts is not None:
            self._probe = self._probe_from_texts(self.probe_texts)
            return self._probe
        problem = "no evaluation data, training data or probe_texts"
        for key, prefix in (("eval_dataloader", "eval"), ("train_dataloader", "train")):
            loader = kwargs.get(key)
            rows = examples(loader, self.max_sequences_per_eval) if loader is not None else []
            if rows:
                self._probe = self._probe_from_examples(loader, rows, prefix)
                if self._probe is None:
                    problem = f"the {prefix} batches hold no 'input_ids'; pass probe_texts=[...]"
                break
        if self._probe is None and not self._warned:
            log.warning("seqviz: no probe set (%s); nothing is logged", problem)
            self._warned = True
        return self._probe

    def _probe_from_texts(self, texts: list[str]) -> dict[str, Any]:
        return probe_from_texts(self._tokenizer, texts)

    @staticmethod
    def _probe_from_examples(loader: Any, rows: list[Any], prefix: str) -> dict[str, Any] | None:
        """Collate the examples as the Trainer would, keep the tensors on the host (None: no token ids)."""
        batch = loader.collate_fn(rows) if getattr(loader, "collate_fn", None) else rows
        return probe_from_batch(batch, prefix)

    # ---- writing -----------------------------------------------------------------------

    @staticmethod
    def _name_of(model: Any) -> str:
        config = getattr(model, "config", None)
        return getattr(config, "name_or_path", None) or type(model).__name__

    @staticmethod
    def _metadata(state: TrainerState, metrics: dict[str, float], source: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"source": source}
        if state.epoch is not None:
            meta["epoch"] = round(float(state.epoch), 4)
        eval_loss = _eval_loss(metrics)
        if eval_loss is not None:
            meta["eval_loss"] = eval_loss
        return meta

    def _mirror_targets(self, args: TrainingArguments) -> tuple[Any, Any]:
        report_to = args.report_to if isinstance(args.report_to, (list, tuple)) else [args.report_to]
        return (mirror_target(self.tensorboard, "tensorboard" in report_to, lambda: tensorboard_run_dir(args)),
                mirror_target(self.wandb, "wandb" in report_to, lambda: True))

    def _open(self, args: TrainingArguments, state: TrainerState) -> None:
        if self._logger is None and state.is_world_process_zero:
            tb, wb = self._mirror_targets(args)
            self._logger = SeqVizLogger(self.output_file, tensorboard=tb, wandb=wb)

    def _write(self, args: TrainingArguments, state: TrainerState, entry: dict[str, Any]) -> None:
        self._open(args, state)
        assert self._logger is not None
        self._logger.log_step(entry)
