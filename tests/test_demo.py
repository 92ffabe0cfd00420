"""``seqviz demo``: the whole product on a fresh machine, with fewer steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("transformers")

from hf_helpers import read  # noqa: E402
from proc_helpers import cli_process  # noqa: E402
from seqviz_trackers.cli.demo import PROBE_LINES, probe_accuracy  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 150


def test_demo_learns_the_soliloquy_and_says_how_to_look(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "demo", "--out", str(out), "--steps", str(STEPS)],
                          env=env, capture_output=True, text=True, timeout=280)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    jsonl = out / "seqviz.jsonl"
    entries = read(jsonl)
    steps = [e["step"] for e in entries]
    assert steps[0] == 0 and steps[-1] == STEPS and 10 <= len(steps) <= 21 and steps == sorted(set(steps))
    assert entries[-1]["loss"] < entries[0]["loss"]
    # The probe line: more tokens predicted right at the last step than at the first.
    acc = probe_accuracy(jsonl, "eval[0]")
    assert [s["tokens"] for s in entries[0]["sequences"]][0][:3] == ["To", " be", ","]
    assert acc[STEPS][0] > acc[0][0], acc
    print(f"demo, {STEPS} steps: {seconds:.0f} s; probe {PROBE_LINES[0]!r}: {acc[0]} at step 0, {acc[STEPS]} at the end")

    # The TensorBoard mirror sits in the Trainer's run directory.
    (asset,) = (out / "runs").glob("*/plugins/seqviz/steps.jsonl")
    assert [e["step"] for e in read(asset)] == steps
    # It prints the exact commands to look at the result, and the first vs last accuracy.
    assert f"--logdir {out}" in proc.stdout
    assert f"serve --file {jsonl}" in proc.stdout
    assert f"{acc[0][0]}/{acc[0][1]} tokens predicted right at step 0" in proc.stdout
    # With wandb (and the W&B side of seqviz) installed, an offline run got the steps too.
    if "wandb sync" in proc.stdout:
        (mirrored,) = (out / "wandb").rglob("seqviz/steps.jsonl")
        assert len(read(mirrored)) == len(steps)


def test_demo_rejects_bad_steps(capsys):
    from seqviz_trackers.cli import main

    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_demo_serve_starts_the_live_dashboard(tmp_path):
    import signal
    import socket
    import urllib.request

    pytest.importorskip("websockets")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "demo"
    proc = cli_process("demo", "--out", str(out), "--steps", "4", "--serve", "--port", str(port), "--no-wandb",
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stays up at" in line:
                break
        text = "".join(lines)
        assert f"Live dashboard: http://127.0.0.1:{port}" in text, text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [e["step"] for e in read(out / "seqviz.jsonl")] == [0, 1, 2, 3, 4]


def test_demo_serve_on_a_busy_port_is_one_clear_error(tmp_path, capsys):
    import socket

    from seqviz_trackers.cli import main

    pytest.importorskip("websockets")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--serve", "--port", str(port), "--out", str(tmp_path), "--no-wandb"]) == 2
    assert f"cannot serve the dashboard on port {port}" in capsys.readouterr().err
