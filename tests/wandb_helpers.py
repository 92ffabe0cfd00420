"""Offline W&B runs in temporary folders, and readers for what wandb wrote on disk."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterable

import pytest

def offline_env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """Environment of an offline run that writes nothing outside ``tmp`` and never calls out."""
    for name, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
        "WANDB_DIR": tmp, "WANDB_DATA_DIR": tmp / "data", "WANDB_CACHE_DIR": tmp / "cache",
        "WANDB_CONFIG_DIR": tmp / "config", "WANDB_ARTIFACT_DIR": tmp / "artifacts",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def init_run(**kwargs: Any):
    """``wandb.init`` without the system probes that only slow a test down."""
    import wandb

    settings = wandb.Settings(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                              console="off", disable_git=True, save_code=False)
    return wandb.init(project="seqviz-tests", settings=settings, **kwargs)


def log_steps_offline(tmp: Path, entries: Iterable[dict[str, Any]]) -> Path:
    """``entries`` logged through :class:`SeqVizLogger` (JSONL ``tmp/steps.jsonl``) into a new
    offline run under ``tmp`` (:func:`offline_env` first), finished; returns the run's folder."""
    import wandb

    from seqviz_trackers import SeqVizLogger

    run = init_run(mode="offline", dir=str(tmp))
    try:
        with SeqVizLogger(tmp / "steps.jsonl", wandb=run) as logger:
            for entry in entries:
                logger.log_step(entry)
    finally:
        run.finish()
        wandb.teardown()  # the service process this run started
    return run_folder(run)


def run_folder(run: Any) -> Path:
    """``<WANDB_DIR>/wandb/offline-run-*``: the folder of the run (``run.dir`` is its ``files/``)."""
    return Path(run.dir).parent


def table_rows(run_dir: Path, key: str = "seqviz/tokens") -> list[list[Any]]:
    """Every row of the table files under ``files/media/table/<key>_<n>_*.table.json``, in log order."""
    folder = run_dir / "files" / "media" / "table" / Path(key).parent
    stem = Path(key).name
    files = sorted(folder.glob(f"{stem}_*.table.json"), key=lambda p: int(p.name[len(stem) + 1:].split("_")[0]))
    rows: list[list[Any]] = []
    for path in files:
        data = json.loads(path.read_text("utf-8"))
        rows.extend(data["data"])
    return rows


def html_files(run_dir: Path, key: str = "seqviz/dashboard") -> list[Path]:
    """The HTML files of ``key`` (``files/media/html/<key>_<n>_*.html``), in log order."""
    folder = run_dir / "files" / "media" / "html" / Path(key).parent
    stem = Path(key).name
    return sorted(folder.glob(f"{stem}_*.html"), key=lambda p: int(p.name[len(stem) + 1:].split("_")[0]))


def records(run_dir: Path, timeout: float = 30.0) -> list[Any]:
    """The records of a finished run's ``run-<id>.wandb`` transaction log.

    ``run.finish()`` returns before wandb's service process has written the last
    records, so this waits (up to ``timeout`` seconds) for the closing ``exit`` record.

    The file is ``:W&B`` + magic + version (7 bytes), then LevelDB-log style
    records in 32 KiB blocks: each chunk has a 7-byte header (crc32, length,
    type: 1 full, 2 first, 3 middle, 4 last) and a piece of a protobuf ``Record``.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = _read_records(run_dir)
        if any(rec.WhichOneof("record_type") == "exit" for rec in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _read_records(run_dir: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        pos += 7
        if kind == 0 or pos + length > len(data):  # end, or a record still being written
            break
        assert kind in (1, 2, 3, 4), f"{path}: bad record type {kind} at byte {pos - 7}"
        chunk = data[pos:pos + length]
        pos += length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Each ``run.log`` call's flat keys and values, from the transaction log."""
    rows = []
    for rec in records(run_dir):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows


def artifacts(run_dir: Path, type_: str | None = None) -> list[Any]:
    """The artifact records (name, type, manifest with staged local paths) the run logged."""
    found = [rec.artifact for rec in records(run_dir) if rec.WhichOneof("record_type") == "artifact"]
    return [a for a in found if type_ is None or a.type == type_]


def manifest(artifact: Any) -> dict[str, Path]:
    """Entry path -> the staged file holding its bytes."""
    return {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
