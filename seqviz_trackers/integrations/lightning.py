"""PyTorch Lightning integration: :class:`SeqVizCallback`.

>>> trainer = L.Trainer(callbacks=[SeqVizCallback(probe_texts=["To be, or not to be"], tokenizer=tok,
...                                               every_n_steps=200)],
...                     logger=[TensorBoardLogger("runs"), WandbLogger(project="lm")])

The callback keeps a fixed *probe set* (``probe_texts``, or the first examples of the first
validation dataloader) and runs one extra forward pass on it at the end of each validation
and/or every N optimizer steps: under ``torch.no_grad()``, in eval mode (restored after), on
the module's device, inside the trainer's precision context (so ``bf16-mixed`` runs the
probe under the same autocast as training). Every rank joins the forward (sharded models
need it); global rank 0 alone writes.

With ``capture_train=`` it also keeps the training batches (``docs/spikes.md``): a forward
hook on the module that produces the logits hands over the logits the training forward
already computed (no second forward); the rows' token ids and labels come from the batch.

Works with ``lightning`` 2.x (``import lightning.pytorch as L``) and with the standalone
``pytorch_lightning`` package, whichever is installed (``lightning`` first).
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package
    import pytorch_lightning as pl  # type: ignore[no-redef]

from ..capture import capture_options
from ..logger import SeqVizLogger
from ._capture import ForwardCapture
from ._probe import ACCEPTED_BATCHES, batch_fields, examples, mirror_target, probe_entry, probe_forward, probe_from_batch, \
    probe_from_texts, tokenizer_of

__all__ = ["SeqVizCallback"]

log = logging.getLogger("seqviz_trackers")

#: Options of :func:`~seqviz_trackers.convert.tensor_to_training_entry` the callback passes on.
CONVERT_OPTIONS = ("top_k", "model_name")


def _logger_of(trainer: Any, class_name: str) -> Any:
    """The first of ``trainer.loggers`` that is a ``class_name`` (from either Lightning package)."""
    for logger in getattr(trainer, "loggers", None) or []:
        if any(cls.__name__ == class_name for cls in type(logger).__mro__):
            return logger
    return None


def _takes(module: torch.nn.Module, name: str) -> bool:
    """Whether ``module.forward`` accepts the keyword argument ``name``."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _through_wrapper(wrapper: Any, module: torch.nn.Module, fn: Callable[[Any], Any], batch: Any) -> Any:
    """``fn(batch)``, called through the strategy's wrapper (DDP, FSDP) around ``module`` when
    there is one, so that the wrapper's forward (gathering sharded weights) runs around it."""
    if wrapper is None or wrapper is module:
        return fn(batch)
    patched = "forward" in vars(module)
    original = module.forward

    def restore() -> None:
        if patched:
            module.forward = original  # type: ignore[method-assign]
        else:
            vars(module).pop("forward", None)

    def inner(b: Any) -> Any:
        restore()  # fn may call the module's real forward
        return fn(b)

    module.forward = inner  # type: ignore[method-assign]
    try:
        return wrapper(batch)
    finally:
        restore()


class SeqVizCallback(pl.Callback):
    """Log the module's token-by-token predictions on a fixed probe set while it trains.

    Args:
        probe_texts: texts to probe (needs a tokenizer). None: the first
            ``num_probe_examples`` examples of the first validation dataloader, collated by its
            ``collate_fn`` (before any validation: of the training dataloader). A batch is
            accepted as a dict (or ``BatchEncoding``) with ``input_ids`` and optional
            ``attention_mask`` / ``labels``, or a tuple / list whose first item is the
            ``input_ids`` tensor; anything else raises a ``ValueError`` saying so.
        tokenizer: shows tokens as text. None: the module's or the data module's
            ``tokenizer`` attribute; without any, tokens are shown as ids.
        every_n_steps: also probe every N optimizer steps (``trainer.global_step``).
        on_validation_end: probe at the end of each validation (sanity check excluded).
        num_probe_examples: size of the probe set taken from a dataloader.
        logits_fn: ``logits_fn(module, batch) -> logits`` for a module whose forward does not
            take ``input_ids`` (and ``attention_mask``, when its forward accepts one) or does not
            return logits (a tensor, or an object with ``.logits``). ``batch`` holds the probe's
            ``input_ids``, ``attention_mask`` and ``labels`` (those it has), on the module's device.
        output_file: the JSONL file. None: ``seqviz.jsonl`` in the ``TensorBoardLogger``'s
            ``log_dir`` when the trainer has one, else in ``trainer.default_root_dir``.
        tensorboard: None follows ``trainer.loggers`` (a ``TensorBoardLogger``: its ``log_dir``,
            so the seqviz tab sits beside its scalars); True / False forces the mirror on / off
            (on without a ``TensorBoardLogger``: ``<default_root_dir>/lightning_logs/seqviz``);
            a directory or ``SummaryWriter`` is used as is.
        wandb: None follows ``trainer.loggers`` (a ``WandbLogger``: its run, at
            ``trainer.global_step``); True / False forces it on (the logger's run, else the active
            ``wandb.run``) / off; a run object is used as is.
        capture_train: also keep the training batches, from the logits of the training forward
            (no second forward; see ``docs/spikes.md``): every optimizer step the loss of every
            row (summed over ``accumulate_grad_batches`` micro-batches, gathered from every
            rank), and at capture steps the per-token view of the highest-loss and some random
            rows, in ``<output_file>.batches``. True, an int (full capture every N steps), a
            dict or :class:`~seqviz_trackers.capture.CaptureOptions`, as for the Hugging Face
            callback. The rows' ``input_ids`` / ``labels`` / ``attention_mask`` (and example
            index, key ``idx``) come from the training batch, in the shapes accepted for a
            probe set (a tuple: its first item, the input ids, are the targets).
        capture_module: the module whose forward returns the logits (a tensor, or an output
            with ``.logits``), or ``capture_module(pl_module) -> module``. None: the
            LightningModule's ``model`` attribute when it is a module, else the LightningModule.
        **convert_options: ``top_k`` (candidates kept per position, default 20) and
            ``model_name`` (stored in each entry's metadata; default: the module's class name).

    Its ``state_dict`` (saved in Lightning checkpoints) holds the output file and the probe
    set, so a run resumed from a checkpoint appends to the same file with the same sequences.

    Attributes:
        probe_forwards: forward passes run on the probe set by this process.
    """

    def __init__(
        self,
        probe_texts: Sequence[str] | None = None,
        tokenizer: Any = None,
        every_n_steps: int | None = None,
        on_validation_end: bool = True,
        num_probe_examples: int = 4,
        logits_fn: Callable[[Any, dict[str, torch.Tensor]], Any] | None = None,
        output_file: str | os.PathLike[str] | None = None,
        tensorboard: Any = None,
        wandb: Any = None,
        capture_train: Any = None,
        capture_module: torch.nn.Module | Callable[[Any], torch.nn.Module] | None = None,
        **convert_options: Any,
    ):
        if num_probe_examples < 1:
            raise ValueError(f"num_probe_examples must be at least 1, got {num_probe_examples}")
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive integer or None, got {every_n_steps!r}")
        if probe_texts is not None and (isinstance(probe_texts, str) or not probe_texts):
            raise ValueError("probe_texts must be a non-empty list of strings")
        unknown = sorted(set(convert_options) - set(CONVERT_OPTIONS))
        if unknown:
            raise TypeError(f"SeqVizCallback got unknown option(s) {', '.join(unknown)}; "
                            f"the conversion options are {', '.join(CONVERT_OPTIONS)}")
        self.probe_texts = list(probe_texts) if probe_texts is not None else None
        self.tokenizer = tokenizer
        self.every_n_steps = every_n_steps
        self.probe_on_validation = on_validation_end
        self.num_probe_examples = num_probe_examples
        self.logits_fn = logits_fn
        self.output_file = Path(output_file) if output_file is not None else None
        self.tensorboard = tensorboard
        self.wandb = wandb
        self.convert_options = {"top_k": 20, **convert_options}
        self.probe_forwards = 0
        self.capture_train = capture_options(capture_train)
        self.capture_module = capture_module
        self._train_capture: ForwardCapture | None = None
        self._step_at_start = 0
        self._forwards_at_start = 0
        self._tokenizer: Any = None
        self._probe: dict[str, Any] | None = None
        self._logger: SeqVizLogger | None = None
        self._last_step: int | None = None

    # ---- Lightning hooks ----------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._tokenizer = (tokenizer_of(self.tokenizer) or self.tokenizer or tokenizer_of(pl_module)
                           or tokenizer_of(getattr(trainer, "datamodule", None)))

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.probe_texts is not None and self._tokenizer is None:
            raise ValueError("SeqVizCallback(probe_texts=...) needs a tokenizer: pass SeqVizCallback(tokenizer=...) "
                             "or give the LightningModule a .tokenizer attribute")
        if self.probe_texts is not None and self._probe is None:
            self._probe = probe_from_texts(self._tokenizer, self.probe_texts)  # bad texts stop here
        if trainer.is_global_zero and self.output_file is None:
            tb = _logger_of(trainer, "TensorBoardLogger")
            self.output_file = Path(tb.log_dir if tb is not None else trainer.default_root_dir) / "seqviz.jsonl"

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.capture_train is None:
            return
        module = self.capture_module
        if module is None:
            inner = getattr(pl_module, "model", None)
            module = inner if isinstance(inner, torch.nn.Module) else pl_module
        elif not isinstance(module, torch.nn.Module):
            module = module(pl_module)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"SeqVizCallback(capture_module=...) must be a torch.nn.Module or return one, "
                            f"got {type(module).__name__}")
        self._train_capture = ForwardCapture(self.capture_train, self._tokenizer, lambda: trainer.global_step + 1)
        self._train_capture.attach(module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        capture = self._train_capture
        if capture is None:
            return
        fields = batch_fields(batch, (capture.capture.options.index_key,))
        if fields is None:
            capture.warn_once("batch", f"seqviz: capture_train: a training batch (a {type(batch).__name__}) "
                               f"is not one of {ACCEPTED_BATCHES}; the token ids are taken from the "
                               f"capture module's forward arguments")
        capture.use_batch(fields)
        self._step_at_start = trainer.global_step
        self._forwards_at_start = capture.forwards

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        capture = self._train_capture
        if capture is not None:
            capture.use_batch(None)
            if capture.forwards == self._forwards_at_start:
                capture.warn_once("no-forward", f"seqviz: capture_train: the forward of the capture module "
                                   f"({type(capture.module).__name__}) did not run in training_step; pass "
                                   f"SeqVizCallback(capture_module=...) the module that returns the logits")
            if step != self._step_at_start:  # an optimizer step was taken: close it (every rank gathers)
                record = capture.finish(step)
                if record is not None and trainer.is_global_zero:
                    self._open(trainer)
                    assert self._logger is not None
                    self._logger.log_batch_record(record)
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self._log_probe(trainer, pl_module, "train_step")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.probe_on_validation and not trainer.sanity_checking:
            self._log_probe(trainer, pl_module, "validation")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._train_capture is not None:
            self._train_capture.detach()
            self._train_capture = None

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.on_train_end(trainer, pl_module)
        self.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        probe = None
        if self._probe is not None:
            probe = {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in self._probe.items()}
        return {"output_file": str(self.output_file) if self.output_file is not None else None,
                "probe": probe, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.output_file is None and state_dict.get("output_file"):
            self.output_file = Path(state_dict["output_file"])
        if state_dict.get("probe"):
            self._probe = dict(state_dict["probe"])
        self._last_step = state_dict.get("last_step")

    def close(self) -> None:
        """Close the file and the mirrors; a later probe opens them again (appending)."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    # ---- probe ------------------------------------------------------------------------------

    def _log_probe(self, trainer: Any, pl_module: Any, source: str) -> None:
        """One probe forward on every rank; global rank 0 converts and writes."""
        step = trainer.global_step
        if step == self._last_step:
            return  # one entry per step (a validation right after a training-step probe)
        probe = self._get_probe(trainer)
        logits = self._forward(trainer, pl_module, probe)
        self.probe_forwards += 1
        self._last_step = step
        if not trainer.is_global_zero:
            return
        options = {"model_name": type(pl_module).__name__, **self.convert_options}
        try:
            entry = probe_entry(logits, probe, self._tokenizer, step, **options,
                                metadata={"source": source, "epoch": trainer.current_epoch})
        except ValueError as exc:  # e.g. NaN logits: say so, and let training go on
            log.warning("seqviz: step %d not logged: %s", step, exc)
            return
        self._open(trainer)
        assert self._logger is not None
        self._logger.log_step(entry)

    def _get_probe(self, trainer: Any) -> dict[str, Any]:
        if self._probe is not None:
            return self._probe
        if self.probe_texts is not None:
            self._probe = probe_from_texts(self._tokenizer, self.probe_texts)
            return self._probe
        loader, prefix = trainer.val_dataloaders, "val"
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is None:
            loader, prefix = trainer.train_dataloader, "train"
        if loader is None:
            raise ValueError("SeqVizCallback found no validation or training dataloader to take its probe set "
                             "from; pass SeqVizCallback(probe_texts=[...])")
        rows = examples(loader, self.num_probe_examples)
        collate = getattr(loader, "collate_fn", None)
        batch = collate(rows) if rows and collate is not None else next(iter(loader))
        probe = probe_from_batch(batch, prefix, self.num_probe_examples)
        if probe is None:
            raise ValueError(f"SeqVizCallback cannot take a probe set from the {prefix} batches (a "
                             f"{type(batch).__name__}): accepted are {ACCEPTED_BATCHES}; "
                             f"or pass SeqVizCallback(probe_texts=[...])")
        self._probe = probe
        return probe

    def _forward(self, trainer: Any, pl_module: Any, probe: dict[str, Any]) -> torch.Tensor:
        if self.logits_fn is not None:
            def fn(batch: dict[str, Any]) -> Any:
                return self.logits_fn(pl_module, batch)
        else:
            with_mask = "attention_mask" in probe and _takes(pl_module, "attention_mask")

            def fn(batch: dict[str, Any]) -> Any:
                kwargs = {"attention_mask": batch["attention_mask"]} if with_mask else {}
                return pl_module(batch["input_ids"], **kwargs)

        wrapper = getattr(trainer.strategy, "model", None)
        return probe_forward(pl_module, probe, lambda batch: _through_wrapper(wrapper, pl_module, fn, batch),
                             trainer.precision_plugin.forward_context)

    # ---- writing ------------------------------------------------------------------------------

    def _open(self, trainer: Any) -> None:
        if self._logger is not None:
            return
        tb_logger = _logger_of(trainer, "TensorBoardLogger")
        wb_logger = _logger_of(trainer, "WandbLogger")
        root = trainer.default_root_dir
        tb = mirror_target(self.tensorboard, tb_logger is not None,
                           lambda: tb_logger.log_dir if tb_logger is not None
                           else os.path.join(root, "lightning_logs", "seqviz"))
        wb = mirror_target(self.wandb, wb_logger is not None,
                           lambda: wb_logger.experiment if wb_logger is not None else True)
        if self.output_file is None:
            self.output_file = Path(tb_logger.log_dir if tb_logger is not None else root) / "seqviz.jsonl"
        self._logger = SeqVizLogger(self.output_file, tensorboard=tb, wandb=wb)
