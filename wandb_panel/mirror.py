"""Mirror logged steps into a Weights & Biases run.

Per step, one ``run.log`` call carries:

- ``seqviz/tokens``: a ``wandb.Table`` in long format (one row per predicted
  position, columns :data:`wandb_panel.tables.COLUMNS`) logged with
  ``log_mode="INCREMENTAL"``, so each step uploads only its own rows;
- ``seqviz/dashboard``: the dashboard's self-contained HTML export of this step,
  the loss history so far and the step's training dynamics (each probe token's
  p(target) and rank over the run so far, thinned to ``series_points`` steps, and
  the change since the previous logged step) (``wandb.Html(..., inject=False)``);
- ``seqviz/loss``, ``seqviz/perplexity``, ``seqviz/mean_entropy``,
  ``seqviz/top1_accuracy``;
- ``train/global_step``: the step, which ``seqviz/*`` charts use as their x axis,
  the convention of transformers' ``WandbCallback`` (the two can share one run).

With training-batch capture on (``capture_train=``), each capture step (see
``docs/spikes.md``) also logs

- ``seqviz/train_batches``: a ``wandb.Table`` of its captured rows (columns
  :data:`wandb_panel.tables.BATCH_COLUMNS`: step, row, row loss, text, kind),
  incremental like the token table;
- ``seqviz/train_batch``: the dashboard opened on that step's training batch (rows
  sorted by loss, the row-loss histogram, tokens coloured by loss, top-k on click), with
  the training loss so far (thinned to ``history_points``) and the spikes found so far
  as marks. The page carries that one batch (its captured rows with ``batch_top_k``
  candidates per position, as step views with their candidates in columns, packed like
  the step panel's: :func:`seqviz_trackers.serve.export.page_form`) and no probe step, so
  its size depends on the step's captured rows, not on the run.

Every batch record received (one per optimizer step) is appended to
``<run folder>/seqviz/steps.jsonl.batches`` (the panel is made from it) and goes into
the artifact beside ``steps.jsonl``, so ``seqviz spikes`` reads the downloaded artifact.

Every line received is also appended to ``<run folder>/seqviz/steps.jsonl``; on
:meth:`WandbMirror.close` (or :meth:`WandbMirror.log_artifact`) that file and a
consolidated token table go to W&B as an artifact of type ``seqviz``.

A W&B failure never reaches the caller: the first one logs a warning, later
ones are counted and reported on close.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import wandb

from seqviz_trackers.dynamics.tracks import evenly_spaced
from seqviz_trackers.storage.jsonl import TrainingDataReader, encode_entry

from .tables import BATCH_COLUMNS, BATCH_DTYPES, COLUMNS, DTYPES, batch_rows, count_rows, entry_rows, step_scalars

__all__ = ["WandbMirror", "TOKENS_KEY", "DASHBOARD_KEY", "TRAIN_BATCHES_KEY", "TRAIN_BATCH_KEY", "STEP_METRIC",
           "ARTIFACT_TYPE"]

log = logging.getLogger("seqviz_trackers.wandb")

TOKENS_KEY = "seqviz/tokens"
DASHBOARD_KEY = "seqviz/dashboard"
TRAIN_BATCHES_KEY = "seqviz/train_batches"
TRAIN_BATCH_KEY = "seqviz/train_batch"
STEP_METRIC = "train/global_step"
ARTIFACT_TYPE = "seqviz"


class WandbMirror:
    """Log each step's token predictions into a W&B run.

    Args:
        run: a run from ``wandb.init()``, or True for the active ``wandb.run``
            (looked up at each step until one exists, so the logger may be built
            before ``wandb.init`` or a Trainer's ``WandbCallback`` starts the run).
        html: log the ``seqviz/dashboard`` HTML panel (and, at capture steps, ``seqviz/train_batch``).
        history_points: at most this many loss points are inlined in each panel
            (evenly spaced, always ending at the current step), so a page's size
            depends on its step's entry, not on the length of the run.
        series_points: at most this many steps of each token's p(target) / rank
            series are inlined in each panel (0: no training dynamics in the panel).
        batch_top_k: candidates per position kept in the ``seqviz/train_batch`` panel (the
            detail panel's top 5; None: all that were captured, 20 by default, about 1.5
            times the page). The batches copy and the artifact keep them all.
        artifact_on_close: log the ``seqviz`` artifact in :meth:`close`.
        artifact_name: the artifact's name; default ``seqviz-<run id>``.

    Used through ``SeqVizLogger(..., wandb=run)``; call :meth:`log_step` and
    :meth:`close` directly to use it alone.
    """

    def __init__(
        self,
        run: Any = True,
        *,
        html: bool = True,
        history_points: int = 2000,
        series_points: int = 24,
        batch_top_k: int | None = 5,
        artifact_on_close: bool = True,
        artifact_name: str | None = None,
    ):
        if run is not True and not callable(getattr(run, "log", None)):
            raise TypeError(
                f"wandb= takes a W&B run (the object wandb.init() returns) or True for the active run, "
                f"not {type(run).__name__}"
            )
        self._target = run
        self.html = html
        self.history_points = max(2, history_points)
        self.series_points = series_points
        self.batch_top_k = batch_top_k
        self.artifact_on_close = artifact_on_close
        self.artifact_name = artifact_name
        self.run: Any = None
        self.disabled = False
        self.copy_path: Path | None = None
        self.steps_logged = 0
        self.rows_logged = 0
        self.failures = 0
        self._unreported = 0
        self.last_html_bytes: int | None = None
        self.last_batch_html_bytes: int | None = None
        self._copy: Any = None
        self._table: Any = None
        self._batch_table: Any = None
        self.batch_rows_logged = 0
        self._batches_copy: Any = None  # <copy_path>.batches: every batch record received
        self._batch_source: Any = None  # a reader of copy_path, through which the panel finds that file
        self._history: list[dict[str, Any]] = []
        self._dynamics: Any = None      # a seqviz_trackers.dynamics.Dynamics, fed each step
        self._previous: dict[str, Any] | None = None  # the entry before, for the change since it
        self._warned: set[str] = set()
        self._closed = False
        if run is not True or wandb.run is not None:
            self._active_run()

    # -- the run ---------------------------------------------------------------
    def _active_run(self) -> Any:
        """The run to log to, attaching to it on first sight; None when there is none yet."""
        if self.run is not None:
            return self.run
        run = wandb.run if self._target is True else self._target
        if run is None:
            self._warn_once("no-run", "seqviz: SeqVizLogger(wandb=True) found no active W&B run (wandb.run is None); "
                            "call wandb.init() first or pass the run as SeqVizLogger(wandb=run). Steps are not "
                            "mirrored to W&B until a run starts; the JSONL file has them all.")
            return None
        self.run = run
        self.disabled = bool(getattr(run, "disabled", False))
        if self.disabled:
            log.info("seqviz: the W&B run is disabled (mode='disabled'); nothing is mirrored to it")
            return run
        try:
            run.define_metric(STEP_METRIC)
            run.define_metric("seqviz/*", step_metric=STEP_METRIC, step_sync=True)
        except Exception as exc:
            self._fail("defining the step metric", exc)
        try:
            folder = Path(run.dir).parent / "seqviz"
            folder.mkdir(parents=True, exist_ok=True)
            path, n = folder / "steps.jsonl", 1
            while path.exists():  # another mirror on the same run keeps its own copy
                path, n = folder / f"steps-{n}.jsonl", n + 1
            self._copy = open(path, "ab", buffering=0)
            self.copy_path = path
            self._table = wandb.Table(columns=list(COLUMNS), dtype=list(DTYPES), log_mode="INCREMENTAL")
        except Exception as exc:
            self._fail("setting up the seqviz mirror (nothing will be mirrored)", exc, always=True)
            self.disabled = True
        return run

    # -- per step --------------------------------------------------------------
    def log_step(self, entry: dict[str, Any], line: bytes | None = None) -> None:
        """Mirror one entry. ``line`` is its JSONL line (encoded here when not given)."""
        run = self._active_run()
        if run is None or self.disabled:
            return
        if line is None:
            line = encode_entry(entry)
        self._copy.write(line)
        step = entry["step"]
        self._history.append({"step": step, "loss": entry.get("loss"), "perplexity": entry.get("perplexity")})
        n_rows = count_rows(entry)
        self.steps_logged += 1
        self.rows_logged += n_rows
        if n_rows > wandb.Table.MAX_ROWS:
            self._warn_once("big-step", f"seqviz: step {step} has {n_rows} token rows; W&B keeps at most "
                            f"{wandb.Table.MAX_ROWS} of a step's rows in the run-file copy of {TOKENS_KEY} "
                            f"(the table increment artifact and the seqviz artifact keep them all)")
        try:
            _add_rows(self._table, entry_rows(entry))
            payload: dict[str, Any] = step_scalars(entry)
            payload[TOKENS_KEY] = self._table
            page = self._dashboard(entry, line)
            if page is not None:
                payload[DASHBOARD_KEY] = page
            payload[STEP_METRIC] = step
            run.log(payload)
        except Exception as exc:
            self._fail(f"logging step {step}", exc)
        finally:
            self._drop_sent_rows()

    def log_batch(self, record: dict[str, Any], line: bytes | None = None) -> None:
        """Mirror one optimizer step's training-batch record: kept in the run folder's copy;
        at a capture step, its captured rows as ``seqviz/train_batches`` rows and its batch
        view as the ``seqviz/train_batch`` panel; other steps log nothing to W&B."""
        run = self._active_run()
        if run is None or self.disabled:
            return
        try:
            self._keep_batch(record, line)
        except Exception as exc:
            self._fail(f"copying the training batch of step {record.get('step')}", exc)
        if not record.get("capture"):
            return
        rows = list(batch_rows(record))
        if not rows:
            return
        try:
            if self._batch_table is None:
                self._batch_table = wandb.Table(columns=list(BATCH_COLUMNS), dtype=list(BATCH_DTYPES), log_mode="INCREMENTAL")
            _add_rows(self._batch_table, iter(rows))
            payload: dict[str, Any] = {TRAIN_BATCHES_KEY: self._batch_table, STEP_METRIC: record["step"]}
            page = self._batch_panel(record["step"])
            if page is not None:
                payload[TRAIN_BATCH_KEY] = page
            run.log(payload)
            self.batch_rows_logged += len(rows)
        except Exception as exc:
            self._fail(f"logging the training batch of step {record.get('step')}", exc)
        finally:
            self._drop_sent_rows(self._batch_table)

    def _keep_batch(self, record: dict[str, Any], line: bytes | None) -> None:
        """Append the record to ``<copy_path>.batches`` (where the batches of the copy live)."""
        if self._batches_copy is None:
            from seqviz_trackers.storage.batches import batches_path

            self._batches_copy = open(batches_path(self.copy_path), "ab", buffering=0)
        if line is None:
            from seqviz_trackers.storage.batches import encode_batch

            line = encode_batch(record)
        self._batches_copy.write(line)

    def _batch_panel(self, step: int) -> Any:
        """The ``seqviz/train_batch`` panel of capture step ``step``: the dashboard opened on its
        batch; None when the panel is off or cannot be made (the table is still logged)."""
        if not self.html or self._batches_copy is None:
            return None
        try:
            from seqviz_trackers.serve.export import batches_extra, export_html
        except ImportError:
            self._warn_once("no-export", "seqviz: the dashboard export (seqviz_trackers.serve.export) is not available; "
                            f"{DASHBOARD_KEY} and {TRAIN_BATCH_KEY} are not logged")
            return None
        try:
            if self._batch_source is None:
                self._batch_source = TrainingDataReader(self.copy_path)
            extra = batches_extra(self._batch_source, steps=[step], points=self.history_points)
            if extra is None:
                return None
            if self.batch_top_k is not None:
                for batch in extra["train_batches"]["batch"].values():
                    _keep_candidates(batch.get("capture"), self.batch_top_k)
            extra["open"] = f"batch={step}"  # the address the page opens at (web/sources.js)
            page = export_html([], title=f"{self.run.name or self.run.id} \u00b7 training batch \u00b7 step {step}",
                               extra=extra)
        except Exception as exc:
            self._warn_once("batch-export-failed", f"seqviz: the {TRAIN_BATCH_KEY} panel of step {step} could not be "
                            f"made ({type(exc).__name__}: {exc}); the {TRAIN_BATCHES_KEY} table is still logged")
            return None
        self.last_batch_html_bytes = len(page.encode("utf-8"))
        return wandb.Html(page, inject=False)

    def _drop_sent_rows(self, table: Any = None) -> None:
        """Free the rows of the step just logged (or failed): an incremental table
        otherwise holds every row of the run in memory, though it uploads only new ones."""
        table = self._table if table is None else table
        if hasattr(table, "_last_logged_idx"):
            table.data.clear()
            if table._last_logged_idx is not None:
                table._last_logged_idx = -1

    def _dashboard(self, entry: dict[str, Any], line: bytes) -> Any:
        """This step's self-contained HTML panel; None when the panel is off or cannot be made
        (then the step's table and scalars are still logged)."""
        if not self.html:
            return None
        export_html = _export_html()
        if export_html is None:
            self._warn_once("no-export", "seqviz: the dashboard export (seqviz_trackers.serve.export) is not available; "
                            f"{DASHBOARD_KEY} is not logged")
            return None
        title = f"{self.run.name or self.run.id} · step {entry['step']}"
        try:
            extra = self._step_dynamics(entry)
            history = [self._history[i] for i in evenly_spaced(len(self._history), self.history_points)]
            page = export_html([entry], steps=history, title=title, extra=extra)
        except Exception as exc:
            self._warn_once("export-failed", f"seqviz: the {DASHBOARD_KEY} panel of step {entry['step']} could not "
                            f"be made ({type(exc).__name__}: {exc}); the token table and scalars are still logged")
            return None
        self.last_html_bytes = len(page.encode("utf-8"))
        return wandb.Html(page, inject=False)

    def _step_dynamics(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """The panel's training dynamics for ``entry`` (see :func:`seqviz_trackers.serve.export.dynamics_extra`):
        built incrementally, so a step costs work proportional to that step; None when off or failed."""
        if self.series_points <= 0:
            return None
        try:
            from seqviz_trackers.dynamics import Dynamics, compare
            from seqviz_trackers.serve.export import dynamics_extra

            if self._dynamics is None:
                self._dynamics = Dynamics()
            try:
                self._dynamics.add_entry(entry)
            except ValueError:  # a step logged again or out of order (e.g. a resumed run): start over
                self._dynamics, self._previous = Dynamics(), None
                self._dynamics.add_entry(entry)
            previous, self._previous = self._previous, entry
            diffs = {}
            if previous is not None:
                diffs[entry["step"]] = compare(previous, entry, per_token=True, number=self._dynamics.number_of)
            return dynamics_extra(self._dynamics, [entry], diffs, points=self.series_points)
        except Exception as exc:  # the panel without dynamics is still useful
            self._warn_once("dynamics-failed", f"seqviz: the training dynamics of the {DASHBOARD_KEY} panel could not "
                            f"be made ({type(exc).__name__}: {exc}); the panel shows the step without them")
            return None

    # -- artifact --------------------------------------------------------------
    def log_artifact(self, aliases: list[str] | None = None) -> Any:
        """Log the steps so far as an artifact of type ``seqviz``; returns it (None when
        there is nothing to log or W&B failed).

        It holds ``steps.jsonl`` (exactly the lines mirrored) and the token table:
        ``tokens``, or ``tokens_part1`` ... ``tokens_partN`` when the rows exceed
        ``wandb.Table.MAX_ARTIFACT_ROWS`` (200,000), so no row is dropped.
        """
        run = self.run
        if run is None or self.disabled or not self.steps_logged:
            return None
        try:
            limit = wandb.Table.MAX_ARTIFACT_ROWS
            parts = max(1, math.ceil(self.rows_logged / limit))
            names = ["tokens"] if parts == 1 else [f"tokens_part{i}" for i in range(1, parts + 1)]
            names = names if self.rows_logged else []
            if parts > 1:
                log.info("seqviz: %d token rows exceed W&B's %d rows per artifact table; the artifact holds "
                         "them in %d tables: %s", self.rows_logged, limit, parts, ", ".join(names))
            artifact = wandb.Artifact(
                self.artifact_name or f"seqviz-{run.id}", type=ARTIFACT_TYPE,
                description="seqviz token predictions: the step JSONL file and one row per predicted token",
                metadata={"steps": self.steps_logged, "rows": self.rows_logged, "tables": names,
                          "first_step": self._history[0]["step"], "last_step": self._history[-1]["step"]},
            )
            artifact.add_file(str(self.copy_path), name="steps.jsonl")
            if self._batches_copy is not None:
                artifact.add_file(self._batches_copy.name, name="steps.jsonl.batches")
            for name, rows in zip(names, _chunks(self._all_rows(), limit)):
                table = wandb.Table(columns=list(COLUMNS), dtype=list(DTYPES))
                _add_rows(table, rows)
                artifact.add(table, name)
            return run.log_artifact(artifact, aliases=aliases)
        except Exception as exc:
            self._fail("logging the seqviz artifact", exc, always=True)
            return None

    def _all_rows(self) -> Iterator[list[Any]]:
        for entry in TrainingDataReader(self.copy_path):
            yield from entry_rows(entry)

    # -- end -------------------------------------------------------------------
    def close(self) -> None:
        """Log the artifact (unless ``artifact_on_close=False``) and release the copy file.

        The run itself is left open: it belongs to the caller (or to its Trainer).
        """
        if self._closed:
            return
        self._closed = True
        if self.artifact_on_close:
            self.log_artifact()
        if self._copy is not None:
            self._copy.close()
        if self._batches_copy is not None:
            self._batches_copy.close()
        if self._unreported:
            log.warning("seqviz: %d W&B calls failed in all (%d after the first warning); the JSONL file "
                        "(and %s) has every step", self.failures, self._unreported, self.copy_path)

    # -- failures --------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException, always: bool = False) -> None:
        """Count a W&B failure; warn on the first (and on any ``always`` one), keep the rest for close."""
        self.failures += 1
        if always or self.failures == 1:
            log.warning("seqviz: W&B failed while %s (%s: %s); training and the JSONL file go on%s", what,
                        type(exc).__name__, exc, "" if always else "; further W&B failures are counted and "
                        "reported on close")
        else:
            self._unreported += 1

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _add_rows(table: Any, rows: Iterator[list[Any]]) -> None:
    """Append rows to a table whose column types were declared (``DTYPES``).

    ``Table.add_data`` type-checks every cell (about 0.2 ms a row, seconds for a
    step of a few thousand tokens). The first row goes through it (it also moves an
    incremental table on to its next increment); the rest, built by
    :func:`entry_rows` with the declared types, are appended to ``Table.data``.
    """
    rows = iter(rows)
    first = next(rows, None)
    if first is not None:
        table.add_data(*first)
        table.data.extend(rows)


def _keep_candidates(entry: dict[str, Any] | None, k: int) -> None:
    """Keep the first ``k`` candidates (the most likely) of each prediction of ``entry``."""
    for seq in (entry or {}).get("sequences") or ():
        for pred in seq.get("predictions") or ():
            for field in ("top_k", "top_20"):
                if isinstance(pred.get(field), list):
                    pred[field] = pred[field][:max(1, k)]


def _export_html() -> Callable[..., str] | None:
    try:
        from seqviz_trackers.serve.export import export_html
    except ImportError:
        return None
    return export_html


def _chunks(rows: Iterator[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    chunk: list[list[Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
