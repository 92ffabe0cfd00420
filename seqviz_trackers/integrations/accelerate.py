"""🤗 Accelerate integration: :class:`SeqVizTracker`, :func:`log_predictions` and :func:`log_batch`.

>>> from seqviz_trackers.integrations.accelerate import SeqVizTracker, log_predictions
>>> accelerator = Accelerator(log_with=[SeqVizTracker("runs/x/seqviz.jsonl"), "tensorboard"], project_dir="runs")
>>> accelerator.init_trackers("x")
>>> ...
>>> log_predictions(accelerator, logits, batch["input_ids"], tokenizer, step)   # on every process

The tracker is one more entry of ``log_with``: ``accelerator.log({...})`` keeps sending
scalars to the other trackers (this one ignores them), and each logged prediction step
goes to the JSONL file and into the TensorBoard run and W&B run that the same
accelerator holds (its ``"tensorboard"`` tracker's ``SummaryWriter``, its ``"wandb"``
tracker's run), through :class:`~seqviz_trackers.logger.SeqVizLogger`, as the Hugging
Face callback does.

Only the main process converts and writes; the others return at once. The forward pass
that makes the logits is the caller's: run it on every process, which sharded models
(FSDP, DeepSpeed ZeRO-3) need, since each process holds only a shard of the weights.

The training batches (``docs/spikes.md``): :func:`log_batch` hands the logits of each
training micro-batch to :meth:`SeqVizLogger.log_batch
<seqviz_trackers.logger.SeqVizLogger.log_batch>`. Unlike the probe, it must be called on
*every* process: each step's row losses are gathered from all of them. After the last
step, call :func:`finish_batch` on every process, before ``accelerator.end_training()``
(which finishes the trackers on the main process only).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from accelerate.tracking import GeneralTracker

from ..capture import _dist
from ..logger import SeqVizLogger, global_rank

__all__ = ["SeqVizTracker", "log_predictions", "log_batch", "finish_batch"]

log = logging.getLogger("seqviz_trackers")


def _starting_accelerator(tracker: "SeqVizTracker") -> Any:
    """The ``Accelerator`` whose ``init_trackers`` is starting ``tracker`` (found on the call
    stack: ``start()`` is called by it with no arguments), or None."""
    from accelerate import Accelerator

    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Accelerator) and any(t is tracker for t in getattr(owner, "trackers", ())):
            return owner
        frame = frame.f_back
    return None


def _held(accelerator: Any, name: str) -> Any:
    """The unwrapped tracker (writer, run) ``accelerator`` holds under ``name``, or None."""
    if accelerator is None or not any(t.name == name for t in accelerator.trackers):
        return None
    return accelerator.get_tracker(name, unwrap=True)


class SeqVizTracker(GeneralTracker):
    """An Accelerate tracker that logs token-by-token predictions.

    Args:
        output_file: the JSONL file (the source of truth for every viewer).
        tensorboard: None: the accelerator's ``"tensorboard"`` tracker when it has one
            (the seqviz tab then sits in the same run as its scalars); True: that tracker,
            and an error when there is none; False: no TensorBoard mirror; a log
            directory or ``SummaryWriter``: used as is.
        wandb: None / True / False as for ``tensorboard``, with the ``"wandb"`` tracker's
            run; or a run object, used as is.
        top_k: candidates kept per position (default of :meth:`log_predictions`).
        model_name: stored in each entry's metadata.
        validate: check each entry against the schema before writing.

    Put it before ``"wandb"`` in ``log_with``: ``accelerator.end_training()`` finishes the
    trackers in that order, and this one logs its W&B artifact while the run is open.
    """

    name = "seqviz"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, output_file: str | os.PathLike[str] = "seqviz.jsonl", *, tensorboard: Any = None,
                 wandb: Any = None, top_k: int = 20, model_name: str | None = None, validate: bool = True):
        super().__init__()
        self.output_file = output_file
        self.tensorboard = tensorboard
        self.wandb = wandb
        self.top_k = top_k
        self.model_name = model_name
        self.validate = validate
        self.accelerator: Any = None
        self._logger: SeqVizLogger | None = None

    def start(self) -> None:
        """Called by ``accelerator.init_trackers`` (main process): remember that accelerator,
        whose other trackers become the mirrors when the first step is logged."""
        self.accelerator = _starting_accelerator(self)

    @property
    def tracker(self) -> SeqVizLogger:
        """The :class:`~seqviz_trackers.logger.SeqVizLogger` (``get_tracker("seqviz", unwrap=True)``),
        opened on first use."""
        return self._open()

    def store_init_configuration(self, values: dict) -> None:
        """Hyperparameters belong to the other trackers; nothing is stored here."""

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """``accelerator.log`` scalars go to the other trackers; this one ignores them."""

    def log_predictions(self, logits: Any, input_ids: Any, tokenizer: Any, step: int, loss: Any = None,
                        **options: Any) -> dict[str, Any] | None:
        """Convert ``logits`` (``(B, T, V)`` or ``(T, V)``) for ``input_ids`` and log the entry.

        ``options`` are :func:`~seqviz_trackers.convert.tensor_to_training_entry`'s keywords
        (``attention_mask``, ``labels``, ``names``, ``top_k``, ``model_name``, ``metadata``).
        Returns the entry on the main process; elsewhere None, at once, without converting.

        Raises:
            ValueError: wrong shapes or ``input_ids`` that do not match the logits.
        """
        if global_rank() != 0:
            return None
        options.setdefault("top_k", self.top_k)
        if self.model_name is not None:
            options.setdefault("model_name", self.model_name)
        return self._open().log_predictions(logits, input_ids, tokenizer, step, loss, **options)

    def log_batch(self, logits: Any, input_ids: Any, labels: Any = None, *, step: int, **options: Any) -> None:
        """One training micro-batch of optimizer step ``step``, from the logits its forward
        already computed: :meth:`SeqVizLogger.log_batch <seqviz_trackers.logger.SeqVizLogger.log_batch>`
        (``options``: ``attention_mask``, ``example_index``, ``tokenizer``, ``capture``).

        Call it on every process, for every micro-batch (the row losses are gathered from
        all of them; the main process writes ``<output_file>.batches``); after the last step,
        :meth:`finish_batch` on every process.
        """
        self._open().log_batch(logits, input_ids, labels, step=step, **options)

    def finish_batch(self) -> dict[str, Any] | None:
        """Close the step :meth:`log_batch` is collecting and write it (every process calls it)."""
        return self._logger.finish_batch() if self._logger is not None else None

    def finish(self) -> None:
        """Close the file and the mirrors (``accelerator.end_training()``)."""
        if self._logger is not None:
            capture = self._logger.capture
            if capture is not None and capture.pending is not None and _dist() is not None:
                # end_training finishes trackers on the main process only: gathering here would hang
                log.warning("seqviz: the rows of step %s are not written: call finish_batch(accelerator) on every "
                            "process before accelerator.end_training()", capture.pending)
                self._logger.capture = None
            self._logger.close()
            self._logger = None

    def _mirror(self, choice: Any, name: str) -> Any:
        if choice is None or choice is True:
            held = _held(self.accelerator, name)
            if held is None and choice is True:
                raise ValueError(f"SeqVizTracker({name}=True): the Accelerator has no {name!r} tracker; add "
                                 f"{name!r} to Accelerator(log_with=[...]) or pass {name}=<target>")
            return held
        return choice or None

    def _open(self) -> SeqVizLogger:
        if self._logger is None and global_rank() != 0:  # writes nothing there: no mirrors to look for
            self._logger = SeqVizLogger(self.output_file, validate=self.validate)
        if self._logger is None:
            self._logger = SeqVizLogger(self.output_file, tensorboard=self._mirror(self.tensorboard, "tensorboard"),
                                        wandb=self._mirror(self.wandb, "wandb"), validate=self.validate)
        return self._logger


def _tracker_of(accelerator: Any, what: str) -> SeqVizTracker:
    """The :class:`SeqVizTracker` of ``accelerator``: among its started trackers (main process)
    or its ``log_with`` (every process)."""
    for tracker in (*accelerator.trackers, *(getattr(accelerator, "log_with", None) or ())):
        if isinstance(tracker, SeqVizTracker):
            if tracker.accelerator is None and accelerator.is_main_process:
                tracker.accelerator = accelerator
            return tracker
    raise ValueError("the Accelerator holds no SeqVizTracker: pass Accelerator(log_with=[SeqVizTracker(...), ...]) "
                     f"and call accelerator.init_trackers(...) before {what}")


def log_predictions(accelerator: Any, logits: Any, input_ids: Any, tokenizer: Any, step: int, loss: Any = None,
                    **options: Any) -> dict[str, Any] | None:
    """Log one prediction step through the :class:`SeqVizTracker` that ``accelerator`` holds.

    Call it on every process after a forward pass every process ran; the main process
    converts and writes (returning the entry), the others return None at once.

    Raises:
        ValueError: the accelerator holds no ``SeqVizTracker`` (or ``init_trackers`` was not
            called), or the tensors' shapes do not match.
    """
    if not accelerator.is_main_process:
        return None
    return _tracker_of(accelerator, "logging predictions").log_predictions(logits, input_ids, tokenizer, step, loss,
                                                                          **options)


def log_batch(accelerator: Any, logits: Any, input_ids: Any, labels: Any = None, *, step: int, **options: Any) -> None:
    """One training micro-batch through the :class:`SeqVizTracker` of ``accelerator``
    (:meth:`SeqVizTracker.log_batch`). Call it on every process, for every micro-batch: the
    row losses are gathered from all of them, and the main process writes.

    >>> out = model(batch["input_ids"])                       # the training forward
    >>> log_batch(accelerator, out, batch["input_ids"], step=step, tokenizer=tok)

    Raises:
        ValueError: the accelerator holds no ``SeqVizTracker``, or the shapes do not match.
    """
    _tracker_of(accelerator, "logging batches").log_batch(logits, input_ids, labels, step=step, **options)


def finish_batch(accelerator: Any) -> dict[str, Any] | None:
    """Close the step :func:`log_batch` is collecting (every process, after the last step,
    before ``accelerator.end_training()``); the step's record, or None."""
    return _tracker_of(accelerator, "logging batches").finish_batch()
