"""The live server: the dashboard over HTTP and new steps over a websocket, on one port.

``seqviz serve --file run.jsonl`` (or ``--logdir DIR`` for every ``*.jsonl`` below DIR)
answers, on ``http://127.0.0.1:8765/``:

- ``/`` and the files of :mod:`seqviz_trackers.web` (the dashboard), nothing outside it;
- ``/<route>?...`` for every route of :data:`seqviz_trackers.serve.api.ROUTES` (JSON);
- ``/ws``: the websocket. Messages are JSON objects with a ``type``.

Server to client: on connect ``runs``, then for the watched run ``summary``, ``steps``
(the step list and skipped lines) and ``step`` (the latest entry, as its step view: see
:mod:`seqviz_trackers.format.view`; not to a client that connected with ``?latest=0``, as
the dashboard does: it asks for what it draws first, see the ``step`` route); afterwards
``steps_added`` + ``step`` for each batch of appended steps, ``warning`` for a
malformed line, ``reset`` + ``steps`` when the file was truncated or replaced, and
``runs`` when the set of runs changes. Client to server: ``{"type": "watch", "run"}``
and ``{"type": "get", "id", "route", "params"}`` (answered by ``{"type": "response",
"id", "status", "body"}`` from the same route table as HTTP).

- ``/`` (a websocket upgrade on the root path): the original seq-viz feed, for dashboards
  and scripts written against that tool: on connect the latest entry with ``"type":
  "training_update"`` added, then each new step the same way; a client message
  ``{"type": "get_step", "step": N}`` is answered with that step the same way, or
  ``{"type": "error", "message"}``. ``?run=NAME`` picks the run (default: the first with steps).

Both websockets check the ``Origin`` header: pages of this server are allowed, others
only with ``allow_origins`` (``seqviz serve --allow-origin``); a page opened from disk
(``file://``) sends ``Origin: null``, allowed only by naming ``null`` itself.

A line whose header was indexed but whose body turns out broken when read (by a route,
the live loop or the dynamics) is a step no more: every client watching its run gets a
``warning`` and a new ``steps`` message at once.

Each client has its own bounded send queue: a client that stops reading is
disconnected (close code 1013) instead of stalling the others or growing memory.

The event loop only moves messages: reading files happens in threads (the live loop's
tailing and pushes in one, in order; the quick routes ``runs``/``steps``/``step``/``candidates`` in a
pool beside the one of the dynamics routes), so a long dynamics build delays neither.
A run whose file cannot be read is that run's problem (listed in ``runs``, logged once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import ipaddress
import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from ..runs import Runs, unreadable
from ..storage.jsonl import StepInfo, TrainingDataReader, client_json
from . import api

__all__ = ["SeqVizServer", "ServerHandle", "start_in_thread", "make_runs", "WEB_DIR"]

log = logging.getLogger(__name__)

WEB_DIR = api.WEB_DIR
#: Largest message a client may send (requests are tiny JSON objects).
MAX_INCOMING = 64 * 1024
#: Messages waiting for one client before it counts as stalled and is dropped.
QUEUE_LIMIT = 256
#: Requests one websocket client may have in flight at once.
INFLIGHT_LIMIT = 16
#: Longest gap, in seconds, between scans for new runs when nothing changes.
MAX_SCAN_GAP = 5.0
#: Seconds a connection may take to send its HTTP request (a route may then take longer).
REQUEST_TIMEOUT = 10.0
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")


def _dumps(obj: Any) -> bytes:
    """What a client is sent: strict JSON in UTF-8 (see :func:`client_json`)."""
    return client_json(obj)


def make_runs(file: str | os.PathLike[str] | None = None, logdir: str | os.PathLike[str] | None = None) -> Runs:
    """The runs to serve: one file (named after its stem), or every ``*.jsonl`` below ``logdir``
    (named by their path relative to it, without ``.jsonl``; new files are picked up)."""
    if (file is None) == (logdir is None):
        raise ValueError("give exactly one of file= or logdir=")
    if file is not None:
        runs = Runs()
        runs.add(Path(file).stem or "run", Path(file))
        return runs
    root = Path(logdir)  # type: ignore[arg-type]

    def discover() -> dict[str, str]:
        """Every ``*.jsonl`` that is not a folder (a symlink loop or FIFO is listed, and its
        reader says what is wrong); folders that cannot be searched go to ``runs.unlisted``."""
        found, unlisted = {}, {}

        def cannot_search(exc: OSError) -> None:
            where = Path(exc.filename or root)
            name = where.relative_to(root).as_posix() if where != root else "."
            unlisted[name + "/"] = f"folder cannot be searched ({exc.strerror or exc})"

        for folder, dirs, names in os.walk(root, onerror=cannot_search):
            dirs.sort()
            for name in names:
                if name.endswith(".jsonl"):
                    path = Path(folder, name)
                    found[path.relative_to(root).with_suffix("").as_posix()] = str(path)
        runs.unlisted = unlisted
        return found

    runs = Runs(discover=discover)
    return runs


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


#: The two websocket protocols: the dashboard's own (``/ws``) and the original tool's (``/``).
DASHBOARD, ORIGINAL = "dashboard", "original"
WS_PATHS = {"/ws": DASHBOARD, "/": ORIGINAL}


def _connection_class() -> Any:
    from websockets.asyncio.server import ServerConnection

    class Connection(ServerConnection):
        """A connection that must send its request within :data:`REQUEST_TIMEOUT` (what
        websockets' ``open_timeout`` did), without a limit on the time to answer it."""

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            done, _ = await asyncio.wait([self.request_rcvd, self.connection_lost_waiter],
                                         timeout=REQUEST_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError(f"no HTTP request within {REQUEST_TIMEOUT} s")  # the connection is dropped
            await super().handshake(*args, **kwargs)

    return Connection


@dataclass(eq=False)
class _Client:
    ws: Any
    queue: "asyncio.Queue[bytes]" = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    run: str | None = None
    inflight: int = 0
    feed: str = DASHBOARD
    latest: bool = True  # sent the latest step when it starts watching a run


class SeqVizServer:
    """The asyncio server behind ``seqviz serve``. Use :func:`start_in_thread` or ``await start()``.

    Args:
        runs: the runs to serve (see :func:`make_runs`).
        host, port: where to listen (port 0 picks a free port).
        interval: seconds between scans for new runs (backing off to :data:`MAX_SCAN_GAP`
            while nothing changes); appended lines of the watched runs are looked for ten
            times as often (a ``stat`` call), so new steps arrive quickly.
        allow_origins: extra ``Origin`` values allowed to open the websocket (``"*"``: any).
        web_dir: the folder served as static files.
    """

    def __init__(self, runs: Runs, *, host: str = "127.0.0.1", port: int = 8765, interval: float = 0.25,
                 allow_origins: Iterable[str] = (), web_dir: Path = WEB_DIR):
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be positive and finite, got {interval}")
        self.runs = runs
        self.host = host
        self.port = port
        self.interval = interval
        self.extra_origins = set(allow_origins)
        self.web_dir = web_dir.resolve()
        self.clients: set[_Client] = set()
        self._tails: dict[str, TrainingDataReader] = {}
        self._run_names: list[str] = []
        self._last_runs: dict[str, Any] | None = None  # the last ``runs`` message broadcast
        self.ticks = 0  # polls of the watched runs so far
        self._scan_gap = 10  # ticks between scans for new runs (grows while nothing changes)
        self._next_scan = 10
        self._unreadable: dict[str, str] = {}  # run -> why its file cannot be read (logged once), as unreadable() says it
        self._server: Any = None
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Nothing that reads files runs on the event loop, which only moves messages:
        # the live loop's work (tailing, run scans, pushes) runs in order in one thread,
        # route requests in two pools, so that a long dynamics build never delays the
        # quick routes (runs, steps, step) nor the live pushes.
        self._live = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seqviz-live")
        self._quick = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="seqviz-routes")
        self._heavy = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="seqviz-dynamics")

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; raises OSError when the port is taken."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._connection, self.host, self.port, process_request=self._process_request,
            compression=None, max_size=MAX_INCOMING, max_queue=8, server_header="seqviz",
            logger=logging.getLogger("seqviz_trackers.serve.server.ws"),
            # websockets' open_timeout also covers process_request, which answers the HTTP
            # routes: a route slower than it would answer nothing. The wait for the request
            # itself keeps a limit (REQUEST_TIMEOUT, in _Connection).
            open_timeout=None, create_connection=_connection_class(),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._run_names = await self._in_live(self._names)
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pool in (self._live, self._quick, self._heavy):
            pool.shutdown(wait=False, cancel_futures=True)

    async def _in_live(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the live loop's thread and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(self._live, fn, *args)

    def _live_soon(self, fn: Any, *args: Any) -> None:
        """Queue ``fn(*args)`` in the live loop's thread (its failure is logged, not raised)."""
        def safely() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("while answering a websocket client")
        try:
            self._live.submit(safely)
        except RuntimeError:  # shutting down
            pass

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/"

    def allowed_origins(self) -> set[str]:
        hosts = {"127.0.0.1", "localhost", "[::1]", _url_host(self.host)}
        return {f"http://{h}:{self.port}" for h in hosts} | self.extra_origins

    def origin_refusal(self, origin: str | None) -> str | None:
        """Why a websocket from a page at ``origin`` is refused, or None when it is allowed
        (no Origin header: not a browser). ``"*"`` allows any origin but ``null``."""
        if origin is None or origin in self.allowed_origins():
            return None
        if origin == "null":
            return ("origin 'null' is not allowed: a page opened from a file (file://) sends it; "
                    "allow such pages with: seqviz serve --allow-origin null")
        if "*" in self.extra_origins:
            return None
        return f"origin {origin!r} is not allowed (seqviz serve --allow-origin {origin})"

    # -- HTTP ----------------------------------------------------------------------
    def _respond(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        headers = Headers()
        headers["Content-Type"] = content_type if "charset" in content_type or not content_type.startswith(("text/", "application/json")) else content_type + "; charset=utf-8"
        headers["Content-Length"] = str(len(body))
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Cache-Control"] = "no-store"
        headers["Connection"] = "close"
        headers["Content-Security-Policy"] = CSP
        for key, value in (extra or {}).items():
            headers[key] = value
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    def _error(self, status: int, message: str) -> Any:
        return self._respond(status, (message + "\n").encode(), "text/plain")

    async def _answer(self, route: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``api.handle`` in a worker thread: (status, JSON in UTF-8). Lines it found broken
        are then made known to the live loop and its clients."""
        def work() -> tuple[int, bytes]:
            status, body = api.handle(self.runs, route, query)
            try:
                return status, _dumps(body)
            except (TypeError, ValueError) as exc:
                return 500, _dumps({"error": f"cannot encode the answer: {exc}"})
        pool = self._quick if route in api.QUICK_ROUTES else self._heavy
        answer = await asyncio.get_running_loop().run_in_executor(pool, work)
        self._live_soon(self._share_problems)
        return answer

    async def _process_request(self, connection: Any, request: Any) -> Any:
        try:
            return await self._http(request)
        except Exception as exc:  # our fault, said as such (not as a failed websocket)
            log.exception("while answering %s", request.path)
            return self._error(500, f"internal error while answering {urlsplit(request.path).path}: "
                                    f"{type(exc).__name__}: {exc}")

    async def _http(self, request: Any) -> Any:
        host = request.headers.get("Host", "")
        if _is_loopback(self.host) and not self._host_ok(host):
            return self._error(403, f"unexpected Host header {host!r}: this server only answers loopback names")
        parts = urlsplit(request.path)
        path = parts.path
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if path == "/ws" or (path == "/" and upgrade):
            refusal = self.origin_refusal(request.headers.get("Origin"))
            if refusal is not None:
                log.warning("refused a websocket: %s", refusal)
                return self._error(403, refusal)
            return None  # websocket handshake
        name = path.lstrip("/")
        if name in api.ROUTES:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            status, body = await self._answer(name, query)
            return self._respond(status, body, "application/json")
        return self._static(path)

    def _host_ok(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in LOOPBACK_NAMES or _is_loopback(name):
            return True
        return any(urlsplit(o).hostname == name.strip("[]") for o in self.extra_origins if o != "*")

    def _static(self, raw_path: str) -> Any:
        path = unquote(raw_path)
        if path in ("", "/"):
            path = "/index.html"
        target = api.web_file(self.web_dir, path[1:])
        if target is None:
            return self._error(404, "not found")
        return self._respond(200, target.read_bytes(), api.content_type(target))

    # -- websocket -------------------------------------------------------------------
    async def _connection(self, ws: Any) -> None:
        parts = urlsplit(ws.request.path)
        query = dict(parse_qsl(parts.query))
        client = _Client(ws, feed=WS_PATHS.get(parts.path, DASHBOARD), latest=query.get("latest") != "0")
        self.clients.add(client)
        sender = asyncio.create_task(self._sender(client))
        try:
            await self._in_live(self._open, client, query.get("run"))
            on_message = self._on_original_message if client.feed == ORIGINAL else self._on_message
            async for message in ws:
                on_message(client, message)
        except Exception as exc:  # a broken connection must not take the server down
            if not type(exc).__name__.startswith("ConnectionClosed"):
                log.warning("websocket client failed: %s", exc)
        finally:
            self.clients.discard(client)
            sender.cancel()

    def _open(self, client: _Client, wanted: str | None) -> None:
        """A new client (in the live thread): what it is sent first, and the run it watches."""
        run = wanted if wanted in self._names() else self._default_run()
        if client.feed == ORIGINAL:
            self._watch_original(client, run)
        else:
            self._send(client, self._runs_message())
            self._watch(client, run)

    async def _sender(self, client: _Client) -> None:
        try:
            while True:
                message = await client.queue.get()
                await client.ws.send(message, text=True)  # UTF-8 already: sent as a text frame
        except asyncio.CancelledError:
            raise
        except Exception:
            return

    def _send(self, client: _Client, obj: Any, text: bytes | None = None) -> None:
        """Queue a message for ``client``, from any thread (encoded here, queued by the loop,
        in the order of the calls)."""
        text = text if text is not None else _dumps(obj)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._put, client, text)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    def _put(self, client: _Client, text: bytes) -> None:
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("dropping a client that stopped reading (%d messages queued)", QUEUE_LIMIT)
            self.clients.discard(client)
            asyncio.ensure_future(client.ws.close(1013, "client too slow: reconnect to resync"))

    def _broadcast(self, run: str | None, obj: Any, clients: list[_Client] | None = None, feed: str = DASHBOARD,
                   text: bytes | None = None) -> None:
        """Send ``obj`` (or its encoding ``text``) to the clients (default: all) of protocol
        ``feed`` watching ``run`` (None: every run)."""
        targets = [c for c in (list(self.clients) if clients is None else clients)
                   if c.feed == feed and (run is None or c.run == run)]
        if targets:
            text = _dumps(obj) if text is None else text  # encoded once, shared by every client
            for client in targets:
                self._send(client, None, text)

    def _on_message(self, client: _Client, message: Any) -> None:
        try:
            request = json.loads(message)
            if not isinstance(request, dict):
                raise ValueError("a message must be a JSON object")
        except ValueError as exc:
            self._send(client, {"type": "error", "message": f"bad message: {exc}"})
            return
        kind = request.get("type")
        if kind == "watch":
            self._live_soon(self._watch_named, client, request.get("run"))
        elif kind == "get":
            params = request.get("params") or {}
            route = request.get("route")
            rid = request.get("id")
            if not isinstance(params, dict) or not isinstance(route, str):
                self._send(client, {"type": "response", "id": rid, "status": 400,
                                    "body": {"error": "'route' must be a string and 'params' an object"}})
            elif client.inflight >= INFLIGHT_LIMIT:
                self._send(client, {"type": "response", "id": rid, "status": 429,
                                    "body": {"error": f"more than {INFLIGHT_LIMIT} requests in flight"}})
            else:
                client.inflight += 1
                asyncio.ensure_future(self._reply(client, rid, route, {str(k): str(v) for k, v in params.items()}))
        else:
            self._send(client, {"type": "error", "message": f"unknown message type {kind!r}"})

    def _watch_named(self, client: _Client, run: Any) -> None:
        if isinstance(run, str) and run in self._names():
            if run != client.run:  # (the run it watches already: it has been sent all there is)
                self._watch(client, run)
        else:
            self._send(client, {"type": "error", "message": f"unknown run {run!r}"})

    async def _reply(self, client: _Client, rid: Any, route: str, query: dict[str, str]) -> None:
        try:
            status, text = await self._answer(route, query)
        finally:
            client.inflight -= 1
        # the body is spliced in as encoded by the worker: big entries are not encoded twice
        self._send(client, None, b'{"type":"response","id":%s,"status":%d,"body":%s}' % (_dumps(rid), status, text))

    # -- the original seq-viz feed -----------------------------------------------------
    @staticmethod
    def _training_update(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, "type": "training_update"}

    def _watch_original(self, client: _Client, run: str | None) -> None:
        """An original-protocol client: the latest readable entry now, new steps as they come."""
        if run is not None:
            self._poll(run)
        client.run = run
        entry = self._latest_entry(run, self._tail(run)) if run is not None and run not in self._unreadable else None
        if entry is not None:
            self._send(client, self._training_update(entry))

    def _on_original_message(self, client: _Client, message: Any) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("type") != "get_step":
            self._send(client, {"type": "error", "message": 'expected {"type": "get_step", "step": N}'})
            return
        self._live_soon(self._original_step, client, request.get("step"))

    def _original_step(self, client: _Client, step: Any) -> None:
        """Answer an original-protocol ``get_step`` (in the live thread)."""
        if client.run is None:
            self._send(client, {"type": "error", "message": "no run to read yet", "step": step})
            return
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            self._send(client, {"type": "error", "message": f"step must be a non-negative integer, got {step!r}",
                                "step": step})
            return
        try:
            reader = self.runs.reader(client.run)  # not the live loop's own: it announces what it indexes
            entry = reader.get_step(step)
        except OSError as exc:
            self._send(client, {"type": "error", "message": f"run {client.run!r} {unreadable(exc)}", "step": step})
            return
        except LookupError:
            self._send(client, {"type": "error", "message": f"run {client.run!r} is gone", "step": step})
            return
        self._share_problems()
        if entry is None:
            broken = reader.problem_of(step)
            why = f"line {broken.line} is broken: {broken.message}" if broken else "no such step"
            self._send(client, {"type": "error", "message": f"run {client.run!r} has no step {step} ({why})", "step": step})
        else:
            self._send(client, self._training_update(entry))

    def _watch(self, client: _Client, run: str | None) -> None:
        if run is not None:
            self._poll(run)  # announce pending appends to the clients already watching
        client.run = run
        if run is None:
            self._send(client, {"type": "waiting", "message": "No run yet: waiting for a JSONL file to appear\u2026"})
            return
        if run in self._unreadable:
            self._send(client, {"type": "waiting", "run": run, "message": f"run {run!r} {self._unreadable[run]}"})
            return
        reader = self._tail(run)
        steps = reader.indexed()
        losses = [s.loss for s in steps if s.loss is not None]
        summary = {"num_steps": len(steps), "first_step": steps[0].step if steps else None,
                   "last_step": steps[-1].step if steps else None, "last_loss": steps[-1].loss if steps else None,
                   "min_loss": min(losses) if losses else None, "skipped_lines": len(reader.problems)}
        self._send(client, {"type": "summary", "run": run, "summary": summary})
        self._send(client, self._steps_message(run, reader))
        if steps:
            if client.latest:
                self._send_latest(run, reader, [client])
        else:
            self._send(client, {"type": "waiting", "run": run, "message": f"waiting for the first step of {run!r}"})

    @staticmethod
    def _steps_message(run: str, reader: TrainingDataReader) -> dict[str, Any]:
        return {"type": "steps", "run": run, "steps": [s.to_json() for s in reader.indexed()],
                "problems": [p.to_json() for p in reader.problems]}

    def _latest_entry(self, run: str, reader: TrainingDataReader, view: bool = False) -> Any:
        """The latest readable entry of ``run`` as indexed (the live loop's refresh tells
        what is new; a refresh here would index lines no one is told of), or its step view
        (encoded: :class:`~seqviz_trackers.storage.jsonl.EncodedJSON`); broken lines met on
        the way are shared."""
        try:
            return reader.latest(refresh=False, view=view, encoded=view)
        except OSError:
            return None  # the file cannot be read now: the live loop reports it
        finally:
            self._share_problems()

    def _send_latest(self, run: str, reader: TrainingDataReader, clients: list[_Client] | None = None) -> None:
        view = self._latest_entry(run, reader, view=True)
        if view is not None:  # the view as the columns file holds it, spliced in, not parsed and encoded again
            text = _dumps({"type": "step", "run": run})[:-1] + b',"entry":' + client_json(view) + b"}"
            self._broadcast(run, None, clients, text=text)

    def _share_problems(self) -> None:
        """Broken lines found by any reader of a run (the routes' or the live loop's) become
        known to both, and the run's dashboard clients get a ``warning`` and the new
        ``steps`` list for each line that stopped being a step."""
        for run, tail in list(self._tails.items()):
            try:
                other = self.runs.reader(run)
            except (LookupError, ValueError):  # the run is gone
                continue
            if other is not tail and other.path == tail.path:
                for problem in other.problems:
                    tail.demote_line(problem)
                for problem in tail.problems:
                    other.demote_line(problem)
            gone = tail.take_demoted()
            for problem in gone:
                self._broadcast(run, {"type": "warning", "run": run, "line": problem.line, "message": problem.message})
            if gone:
                self._broadcast(run, self._steps_message(run, tail))

    # -- tailing ---------------------------------------------------------------------
    def _names(self) -> list[str]:
        try:
            return self.runs.names()
        except OSError as exc:
            log.warning("cannot list runs: %s", exc)
            return self._run_names

    def _default_run(self, names: list[str] | None = None) -> str | None:
        names = self._names() if names is None else names
        with_steps = [n for n in names if self._poll(n) or self._tail(n).indexed()]
        return (with_steps or names or [None])[0]

    def _tail(self, run: str) -> TrainingDataReader:
        """The live loop's own reader of ``run``. Only :meth:`_poll_run` refreshes it, so
        every appended step is announced exactly once (HTTP requests use other readers)."""
        served = self.runs.reader(run)
        reader = self._tails.get(run)
        if reader is None or reader.path != served.path:
            reader = self._tails[run] = TrainingDataReader(served.path, columns=getattr(served, "columns", None))
        return reader

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval / 10)
            await self._in_live(self._tick)

    def _tick(self) -> None:
        """One poll of the watched runs, and now and then a scan for new runs (in the live
        thread). Scans back off while nothing changes: every ``interval`` at first, then
        twice as long each time, up to :data:`MAX_SCAN_GAP` seconds."""
        self.ticks += 1
        try:
            if self.ticks >= self._next_scan:
                changed = self._scan_runs()
                self._scan_gap = 10 if changed else min(self._scan_gap * 2, max(10, round(MAX_SCAN_GAP * 10 / self.interval)))
                self._next_scan = self.ticks + self._scan_gap
            for run in {c.run for c in list(self.clients) if c.run is not None}:
                self._poll(run)
        except Exception:  # keep tailing whatever one bad file does
            log.exception("while checking the runs")

    def _runs_message(self, names: list[str] | None = None) -> dict[str, Any]:
        """The ``runs`` message: what the ``runs`` route says, from this loop's own readers."""
        out = []
        for name in self._names() if names is None else names:
            self._poll(name)  # a stat call unless the file grew; news go to its watchers first
            steps = self._tail(name).indexed()
            if steps and name not in self._unreadable:
                out.append({"run": name, "num_steps": len(steps), "last_step": steps[-1].step})
        message: dict[str, Any] = {"type": "runs", "runs": out}
        problems = [{"run": n, "message": m} for n, m in sorted({**self._unreadable, **self.runs.unlisted}.items())]
        if problems:
            message["problems"] = problems
        return message

    def _scan_runs(self) -> bool:
        """Look for new, changed and gone runs; True when something changed."""
        names = self._names()
        message = self._runs_message(names)
        changed = names != self._run_names or message != self._last_runs
        if changed:
            self._run_names = names
            self._last_runs = message
            self._broadcast(None, message)
        for client in list(self.clients):
            if client.run is None and names:
                self._watch(client, self._default_run(names))
        return changed

    def _poll(self, run: str) -> bool:
        """:meth:`_poll_run`, for a run whose file may not be readable: that is logged once
        (and its watchers told), the other runs go on."""
        try:
            news = self._poll_run(run)
        except OSError as exc:
            why = unreadable(exc)  # as the runs route says it; the run is named where it is not beside it
            if self._unreadable.get(run) != why:
                self._unreadable[run] = why
                log.warning("run %r %s", run, why)
                self._broadcast(run, {"type": "waiting", "run": run, "message": f"run {run!r} {why}"})
            return False
        if self._unreadable.pop(run, None) is not None:
            log.warning("run %r can be read again", run)
        return news

    def _poll_run(self, run: str) -> bool:
        """Read what was appended to ``run`` and tell its watchers; True when something was new."""
        reader = self._tail(run)
        update = reader.refresh()
        if update.reset:
            self._broadcast(run, {"type": "reset", "run": run})
            self._broadcast(run, self._steps_message(run, reader))
        for problem in update.problems:
            self._broadcast(run, {"type": "warning", "run": run, "line": problem.line, "message": problem.message})
        if update.new and not update.reset:
            self._broadcast(run, {"type": "steps_added", "run": run, "steps": [s.to_json() for s in update.new]})
        if update.new or update.reset:
            self._send_latest(run, reader)
            self._push_original(run, reader, update.new)
        return bool(update.new or update.reset)

    def _push_original(self, run: str, reader: TrainingDataReader, new: list[StepInfo]) -> None:
        """Each new step of ``run``, in file order, to its original-protocol clients."""
        if not any(c.feed == ORIGINAL and c.run == run for c in self.clients):
            return
        for info in new:
            try:
                entry = reader.read(info)
            except ValueError:
                continue  # a broken line: shared below, never sent as a step
            self._broadcast(run, self._training_update(entry), feed=ORIGINAL)
        self._share_problems()


class ServerHandle:
    """A server running in a background thread: ``url``, ``port`` and ``stop()``."""

    def __init__(self, server: SeqVizServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 done: asyncio.Event):
        self.server = server
        self._loop = loop
        self._thread = thread
        self._done = done

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and stop the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._done.set)
            self._thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(*, file: str | os.PathLike[str] | None = None, logdir: str | os.PathLike[str] | None = None,
                    host: str = "127.0.0.1", port: int = 8765, interval: float = 0.25,
                    allow_origins: Iterable[str] = ()) -> ServerHandle:
    """Start the server in a daemon thread and return once it listens.

    >>> handle = start_in_thread(file="run.jsonl", port=0)
    >>> print(handle.url); handle.stop()

    Raises:
        OSError: the port is in use (or cannot be bound).
    """
    server = SeqVizServer(make_runs(file, logdir), host=host, port=port, interval=interval, allow_origins=allow_origins)
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        done = asyncio.Event()
        state["loop"], state["done"] = asyncio.get_running_loop(), done
        try:
            await server.start()
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        ready.set()
        await done.wait()
        await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="seqviz-server", daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        thread.join()
        raise state["error"]
    return ServerHandle(server, state["loop"], thread, state["done"])
