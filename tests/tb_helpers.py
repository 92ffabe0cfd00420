"""Helpers for the TensorBoard tests: real log directories written by the mirror, the
plugin inside ``application.TensorBoardWSGI`` (Python loader), and a real
``tensorboard`` process on a free port."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend import application  # noqa: E402
from tensorboard.backend.event_processing import data_ingester, data_provider, plugin_event_multiplexer  # noqa: E402
from tensorboard.plugins import base_plugin  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from seqviz_trackers import SeqVizLogger  # noqa: E402
from tb_plugin.plugin import SeqVizPlugin  # noqa: E402

from factories import make_entry  # noqa: E402

TENSORBOARD = Path(sys.executable).with_name("tensorboard")


@lru_cache(maxsize=None)
def _base_entry(texts: tuple[str, ...] | None) -> dict[str, Any]:
    return make_entry(0, list(texts) if texts else None)


def entry(step: int, texts: list[str] | None = None, loss: float | None = None) -> dict[str, Any]:
    """A real entry (made once by the converter, then re-stepped: fast for 150+ steps)."""
    e = copy.deepcopy(_base_entry(tuple(texts) if texts else None))
    e["step"] = step
    e["loss"] = 5.0 - step / 100 if loss is None else loss
    return e


def mirror_run(target: Any, steps: range | list[int], texts: list[str] | None = None) -> None:
    """Log ``steps`` through :class:`SeqVizLogger` into a run directory or SummaryWriter."""
    with SeqVizLogger(tensorboard=target) as logger:
        for step in steps:
            logger.log_step(entry(step, texts))


def python_loader(logdir: str) -> tuple[Any, Any]:
    """(multiplexer, data provider) as ``tensorboard --load_fast=false`` builds them,
    with TensorBoard's default sampling (10 tensors per plugin tag)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE,
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return multiplexer, data_provider.MultiplexerDataProvider(multiplexer, logdir)


def wsgi_app(logdir: Path | str, path_prefix: str = "", **plugin_kwargs: Any) -> tuple[Client, SeqVizPlugin, Any]:
    """TensorBoard's WSGI app over ``logdir`` with the Python loader."""
    multiplexer, provider = python_loader(str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer)
    plugin = SeqVizPlugin(context, **plugin_kwargs)
    app = application.TensorBoardWSGI([plugin], data_provider=provider, path_prefix=path_prefix)
    return Client(app), plugin, multiplexer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoardProcess:
    """``tensorboard --logdir`` on 127.0.0.1 and a free port; ``stop()`` ends it."""

    def __init__(self, logdir: Path, load_fast: bool, log_path: Path, executable: Path = TENSORBOARD,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(executable), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             f"--load_fast={'true' if load_fast else 'false'}", "--reload_interval", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(self.url + "/data/plugins_listing", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise TimeoutError(f"tensorboard did not answer within {timeout}s; see {self.log.name}")

    def children(self) -> list[str]:
        """Command lines of the process's children (the Rust data server under --load_fast=true).

        Scans /proc/*/stat for the parent pid: unlike /proc/PID/task/TID/children it does not
        race with threads that exit while we look, and needs no kernel option."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rpartition(")")[2].split()[1])
                if ppid == self.proc.pid:
                    out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, ValueError, IndexError):
                pass  # the process ended while we looked
        return out

    def get(self, path: str) -> tuple[int, Any]:
        """(status, parsed JSON body) of a GET."""
        import json

        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for(fn: Any, timeout: float = 20, interval: float = 0.25) -> Any:
    """Poll ``fn()`` until it returns something truthy; return it (or the last value)."""
    deadline = time.time() + timeout
    value = fn()
    while not value and time.time() < deadline:
        time.sleep(interval)
        value = fn()
    return value


__all__ = ["entry", "mirror_run", "wsgi_app", "python_loader", "TensorBoardProcess", "free_port", "wait_for"]
