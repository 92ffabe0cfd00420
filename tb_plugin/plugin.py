"""The ``seqviz`` TensorBoard plugin: the shared dashboard in a tab, fed from run assets.

Routes, under ``/data/plugin/seqviz/``:

- every name in :data:`seqviz_trackers.serve.api.ROUTES` (``runs``, ``steps``, ``step``, ``candidates``, ...):
  JSON, answered by :func:`seqviz_trackers.serve.api.handle`; the shapes are documented
  there. Errors are ``{"error": message}`` with a 4xx status.
- anything else: a static file of the dashboard (``seqviz_trackers/web/``), the entry
  module being ``index.js``.

Runs come from the data provider (``list_runs``; ``context.multiplexer`` is None
under the Rust loader) joined to ``context.logdir``; a run is listed when its
``plugins/seqviz/steps.jsonl`` asset exists. Assets are read whole, not sampled.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import threading
from collections import OrderedDict
from typing import Any, BinaryIO, Callable

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.compat.tensorflow_stub import errors as tf_errors
from tensorboard.compat.tensorflow_stub.io import gfile
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from seqviz_trackers.runs import Runs
from seqviz_trackers.serve import api
from seqviz_trackers.storage.jsonl import Files, LocalFiles, TrainingDataReader, client_json

from .writer import ASSET_NAME, PLUGIN_NAME

__all__ = ["SeqVizPlugin", "SeqVizPluginLoader", "GFileFiles", "files_for", "WEB_DIR"]

log = logging.getLogger(__name__)

#: the shared dashboard, served as this plugin's static files
WEB_DIR = api.WEB_DIR
_PREFIX = f"/data/plugin/{PLUGIN_NAME}/"
#: Experiment ids whose run lists are kept; older ones are rebuilt when asked again.
MAX_EXPERIMENTS = 8
#: Asset readers kept (each holds its file's index and, through it, the dynamics views).
MAX_READERS = 1024


class _GFileReader:
    """A seekable binary reader over a TensorBoard file system's ``read(..., continue_from)``."""

    def __init__(self, fs: Any, path: str):
        self._fs = fs
        self._path = path
        self._pos = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise ValueError("only absolute seeks are supported")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        # Local and fsspec file systems continue from "opaque_offset", S3 from "byte_offset".
        token = {"opaque_offset": self._pos, "byte_offset": self._pos} if self._pos else None
        want = None if size is None or size < 0 else size
        data, _ = self._fs.read(self._path, binary_mode=True, size=want, continue_from=token)
        if want is not None:
            data = data[:want]  # S3 ranges are inclusive: one byte too many
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass

    def __enter__(self) -> "_GFileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class GFileFiles:
    """Asset files read through TensorBoard's own file layer (``s3://``, fsspec URLs, local).

    ``stat`` gives ``(size, None)``: these file systems report no identity, so a
    replaced file is noticed only when it shrinks.
    """

    def open(self, path: str) -> BinaryIO:
        return _GFileReader(gfile.get_filesystem(path), path)  # type: ignore[return-value]

    def stat(self, path: str) -> tuple[int, Any] | None:
        try:
            return gfile.stat(path).length, None
        except (tf_errors.NotFoundError, FileNotFoundError):
            return None


def files_for(logdir: str) -> Files:
    """Plain local files for a local log directory (they also know a file's identity);
    TensorBoard's file layer for a URL such as ``s3://bucket/logs``."""
    return GFileFiles() if "://" in logdir else LocalFiles()


def _join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if "://" in base else os.path.join(base, *parts)


#: an Accept-Encoding that allows ``deflate`` (not ``deflate;q=0``)
_ACCEPTS_DEFLATE = re.compile(r"(?:^|,)\s*deflate\s*(?:,|$|;\s*q=(?!0(?:\.0*)?\s*(?:,|$)))", re.IGNORECASE)


def _dumps(body: Any) -> bytes:
    """JSON for ``Respond``, encoded here in one pass (``Respond``'s own Cleanse walk costs
    ~10x more on a 10,000-step list, and would send NaN as the string "NaN"): strict JSON
    in UTF-8, NaN/Infinity as null (see :func:`~seqviz_trackers.storage.jsonl.client_json`)."""
    return client_json(body)


class SeqVizPlugin(base_plugin.TBPlugin):
    """Serves the seqviz dashboard and its data routes inside TensorBoard."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext, web_dir: str | os.PathLike[str] | None = None):
        self._provider = context.data_provider
        self._logdir = context.logdir or ""
        self._files = files_for(self._logdir)
        self._web_dir = os.path.realpath(web_dir if web_dir is not None else WEB_DIR)
        # Run lists per experiment id (any page may send requests naming a new id), the
        # most recently used first out, and readers per asset file, shared by every id.
        self._runs: OrderedDict[str, Runs] = OrderedDict()
        self._readers: OrderedDict[str, TrainingDataReader] = OrderedDict()
        # TensorBoard answers each request in a thread of its own. One quick route (a step, the
        # step list) and one other (the dynamics, which may take seconds) are answered at a
        # time, as ``seqviz serve`` answers them beside each other; ``_lock`` guards the run
        # lists and readers kept here, and each thread keeps its request's context.
        self._route_locks = {True: threading.Lock(), False: threading.Lock()}  # by: is it a quick route
        self._lock = threading.Lock()
        self._request = threading.local()

    # -- TBPlugin --------------------------------------------------------------
    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        apps: dict[str, Callable[..., Any]] = {"/" + name: self._data_app(name) for name in api.ROUTES}
        apps["/*"] = self._serve_static
        return apps

    def is_active(self) -> bool:
        """Whether to show the tab is decided by the ``seqviz`` summaries (``data_plugin_names``)."""
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name=PLUGIN_NAME)

    # -- runs ------------------------------------------------------------------
    def run_paths(self, experiment_id: str = "") -> dict[str, str]:
        """``{run name: asset path}`` for the runs that hold seqviz assets now."""
        if self._provider is None or not self._logdir:
            return {}
        out = {}
        ctx = getattr(self._request, "ctx", None) or plugin_util.context({})  # the request being answered
        for run in self._provider.list_runs(ctx, experiment_id=experiment_id):
            name = run.run_name
            run_dir = self._logdir if name in (".", "") else _join(self._logdir, *name.split("/"))
            path = _join(run_dir, "plugins", PLUGIN_NAME, ASSET_NAME)
            try:
                if self._files.stat(path) is None:
                    continue
            except OSError:
                pass  # there but unreadable: listed, and the ``runs`` route reports it as that run's problem
            out[name] = path
        return out

    def runs(self, experiment_id: str = "") -> Runs:
        """The :class:`~seqviz_trackers.serve.Runs` of one experiment: kept for the
        :data:`MAX_EXPERIMENTS` ids used last; their readers are shared (:meth:`reader`)."""
        with self._lock:
            runs = self._runs.pop(experiment_id, None)
            if runs is None:
                runs = Runs(lambda: self.run_paths(experiment_id), files=self._files, readers=self.reader)
            self._runs[experiment_id] = runs
            while len(self._runs) > MAX_EXPERIMENTS:
                self._runs.popitem(last=False)
            return runs

    def reader(self, path: str) -> TrainingDataReader:
        """The one reader of an asset file, whatever experiment id asks (at most
        :data:`MAX_READERS` are kept, the least recently used dropped first)."""
        with self._lock:
            reader = self._readers.pop(path, None)
            if reader is None:
                reader = TrainingDataReader(path, files=self._files)
            self._readers[path] = reader
            while len(self._readers) > MAX_READERS:
                self._readers.popitem(last=False)
            return reader

    # -- data routes -----------------------------------------------------------
    def _data_app(self, route: str) -> Callable[..., Any]:
        @wrappers.Request.application
        def app(request: wrappers.Request) -> wrappers.Response:
            """Answer ``route`` as JSON: its data, or ``{"error": message}`` with 4xx."""
            query = {key: request.args.get(key, "") for key in request.args}
            eid = plugin_util.experiment_id(request.environ)
            try:
                with self._route_locks[route in api.QUICK_ROUTES]:
                    self._request.ctx = plugin_util.context(request.environ)
                    status, body = api.handle(self.runs(eid), route, query)
            except Exception as exc:  # a fault on our side: say what, not a traceback
                log.exception("seqviz: route %r failed", route)
                status, body = 500, {"error": f"{route}: {type(exc).__name__}: {exc}"}
            deflated = getattr(body, "deflated", None)  # a step view as the columns file holds it
            if deflated is not None and _ACCEPTS_DEFLATE.search(request.headers.get("Accept-Encoding", "")):
                # sent as stored: TensorBoard would gzip the 4.9 MB of a 16 x 4,096 view anew (~0.1 s)
                return http_util.Respond(request, deflated, "application/json; charset=utf-8", code=status,
                                         content_encoding="deflate")
            return http_util.Respond(request, _dumps(body), "application/json; charset=utf-8", code=status)

        app.__name__ = f"serve_{route}"
        return app

    # -- static files ----------------------------------------------------------
    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        """A dashboard file with its content type, or a JSON 404."""
        relative = request.path[len(_PREFIX):] if request.path.startswith(_PREFIX) else ""
        path = api.web_file(self._web_dir, relative)
        if path is None:
            return http_util.Respond(request, {"error": f"not found: {relative!r}"}, "application/json", code=404)
        return http_util.Respond(request, path.read_bytes(), api.content_type(path))


class SeqVizPluginLoader(base_plugin.TBLoader):
    """Entry point (group ``tensorboard_plugins``): loads :class:`SeqVizPlugin`."""

    def load(self, context: base_plugin.TBContext) -> SeqVizPlugin:
        return SeqVizPlugin(context)
