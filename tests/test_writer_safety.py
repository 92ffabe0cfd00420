"""A written step is never lost: one writer per file (an advisory lock), and a failed
write (a full disk) leaves the file as it was, so a retry writes a whole line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqviz_trackers import TrainingDataWriter
from seqviz_trackers.cli.validate import validate_file
from seqviz_trackers.storage import jsonl
from seqviz_trackers.storage.jsonl import FileInUseError, TrainingDataReader

pytestmark = pytest.mark.skipif(jsonl.fcntl is None, reason="advisory locks need fcntl (POSIX)")

ROOT = Path(__file__).resolve().parent.parent


def entry(step: int, width: int = 40) -> dict:
    """A small valid entry; ``width`` characters of token text make its line longer."""
    return {"step": step, "loss": 1.0, "sequences": [{"tokens": ["x" * width, "y"], "predictions": [
        {"position": 0, "target_token_id": 1, "target_token_str": "y", "target_prob": 0.5, "target_rank": 1,
         "entropy": 0.7, "top_k": [[1, "y", 0.5]]}]}]}


def python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_second_writer_in_this_process_is_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    with TrainingDataWriter(path) as first:
        first.write_step(entry(0))
        with pytest.raises(FileInUseError, match=f"{path}: another writer is appending"):
            TrainingDataWriter(path)
        first.write_step(entry(1))
    with TrainingDataWriter(path) as again:  # closed: free again
        again.write_step(entry(2))
    assert [s.step for s in TrainingDataReader(path).steps] == [0, 1, 2]


APPENDER = """
    import sys
    from seqviz_trackers import TrainingDataWriter
    entry = {"step": 0, "sequences": [{"tokens": ["x" * 200000], "predictions": []}]}
    with TrainingDataWriter(sys.argv[1], columns=False) as w:
        print("ready", flush=True)
        step = 0
        while not sys.stdin.readline().startswith("stop"):
            entry["step"] = step
            w.write_step(entry)
            print(step, flush=True)  # acknowledged: write_step returned
            step += 1
"""


@pytest.mark.slow
def test_a_second_writer_never_cuts_another_process_s_line(tmp_path):
    path = tmp_path / "run.jsonl"
    child = python(APPENDER, str(path))
    try:
        assert child.stdout.readline() == "ready\n"
        acknowledged = []
        for _ in range(40):
            child.stdin.write("go\n")
            child.stdin.flush()  # the child is writing a 200 kB line now, or about to
            with pytest.raises(FileInUseError) as refused:
                TrainingDataWriter(path)
            assert str(path) in str(refused.value) and "another process" in str(refused.value)
            acknowledged.append(int(child.stdout.readline()))
        child.stdin.write("stop\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert acknowledged == list(range(40))
    reader = TrainingDataReader(path)
    assert [s.step for s in reader.steps] == acknowledged and reader.problems == []
    assert validate_file(path) == (40, [])
    TrainingDataWriter(path).close()  # the other process is gone: the file is free


def test_without_locks_an_incomplete_tail_is_kept_and_not_glued_to(tmp_path, monkeypatch, caplog):
    path = tmp_path / "run.jsonl"
    with TrainingDataWriter(path) as w:
        w.write_step(entry(0))
    fragment = jsonl.encode_entry(entry(1))[:30]
    with open(path, "ab") as f:
        f.write(fragment)

    class NoLocks:
        LOCK_EX, LOCK_NB = 2, 4

        @staticmethod
        def flock(fd: int, op: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(jsonl, "fcntl", NoLocks)
    with TrainingDataWriter(path) as w:
        w.write_step(entry(2))
    assert "cannot lock" in caplog.text
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == fragment  # not cut: it may be another writer's
    reader = TrainingDataReader(path)
    assert [s.step for s in reader.steps] == [0, 2] and [p.line for p in reader.problems] == [2]


FULL_DISK = """
    import errno, os, resource, signal, sys
    from seqviz_trackers import TrainingDataWriter
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
    path = sys.argv[1]
    def entry(step, width):
        return {"step": step, "sequences": [{"tokens": ["x" * width], "predictions": []}]}
    w = TrainingDataWriter(path)
    w.write_step(entry(0, 10)); w.write_step(entry(1, 10))
    size = os.path.getsize(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for 100 bytes of the next line
    for attempt in range(2):
        try:
            w.write_step(entry(2, 5000))
        except OSError as exc:
            print("failed", errno.errorcode[exc.errno], os.path.getsize(path) == size, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again: the retry
    w.write_step(entry(2, 5000))
    w.write_step(entry(3, 10))
    w.close()
    print("done", flush=True)
"""


@pytest.mark.slow
def test_a_failed_write_is_cut_off_and_a_retry_writes_a_whole_line(tmp_path):
    path = tmp_path / "run.jsonl"
    child = python(FULL_DISK, str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines() == ["failed EFBIG True", "failed EFBIG True", "done"]
    reader = TrainingDataReader(path)
    assert [s.step for s in reader.steps] == [0, 1, 2, 3] and reader.problems == []
    assert validate_file(path) == (4, [])
    assert len(reader.get_step(2)["sequences"][0]["tokens"][0]) == 5000


def test_a_write_that_cannot_be_undone_stops_the_writer(tmp_path, monkeypatch):
    path = tmp_path / "run.jsonl"
    w = TrainingDataWriter(path, columns=False)
    w.write_step(entry(0))
    real_write, real_truncate = os.write, os.ftruncate

    def half_then_full(fd: int, data: bytes) -> int:
        if fd != w._fd:
            return real_write(fd, data)
        if len(data) > 20:
            return real_write(fd, bytes(data[:20]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def cannot_truncate(fd: int, size: int) -> None:
        if fd == w._fd:
            raise OSError(errno.EIO, "Input/output error")
        real_truncate(fd, size)

    monkeypatch.setattr(os, "write", half_then_full)
    monkeypatch.setattr(os, "ftruncate", cannot_truncate)
    with pytest.raises(OSError, match="No space left"):
        w.write_step(entry(1))
    monkeypatch.undo()
    with pytest.raises(OSError, match=f"{path}: a failed write left an incomplete last line"):
        w.write_step(entry(1))  # refused: it would be glued to the fragment
    w.close()
    with TrainingDataWriter(path) as again:  # a new writer removes the fragment
        again.write_step(entry(1))
    assert [s.step for s in TrainingDataReader(path).steps] == [0, 1]
    assert validate_file(path) == (2, [])
