"""Start a test script under ``torchrun`` (processes on the CPU, gloo) and wait for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_env(**extra: str) -> dict[str, str]:
    """This environment, one thread per process (2 processes share the cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def torchrun(script: Path, *args: object, nproc: int = 2, timeout: float = 280) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node N script args...``; fails the test
    with the end of its output when it exits non-zero."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=quiet_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def end_process_group() -> None:
    """End the default process group while every rank is still there. Trainers leave it up,
    and one torn down at interpreter exit can abort a rank under load (gloo: "terminate
    called without an active exception"), failing a run that did all its work."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
