"""Two synthetic runs whose learned-at steps are known, for the run comparison tests.

Run A logs steps 0, 10, ..., 50 and run B steps 0, 15, 30, 45. The probe "probe" predicts
ids 2..7 at positions 0..5; position p is top-1 from step LEARN_A[p] (LEARN_B[p]) on, and
position 4 of run A is top-1 at step 10 only. At A's last step (50; B at 45): learned
earlier in A: position 0 (10 vs 30); earlier in B: position 1 (30 vs 15); only in A:
position 3; only in B: position 2; position 5 at the same step (30); position 4 by neither.
"text" has another text in each run (never compared); "extra-a" is only in A and an
unnamed sequence only in B.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seqviz_trackers import SeqVizLogger, TrainingDataWriter, tensor_to_training_entry

V = 16
PROBE_IDS = [1, 2, 3, 4, 5, 6, 7]  # positions 0..5 predict ids 2..7
TOP1, FAR = 5.0, -1.0
STEPS_A = [0, 10, 20, 30, 40, 50]
STEPS_B = [0, 15, 30, 45]
NEVER = 10**9
# step from which each position of "probe" is top-1 in each run (position 4 of run A: top-1 at step 10 only)
LEARN_A = [10, 30, NEVER, 0, NEVER, 30]
LEARN_B = [30, 15, 15, NEVER, NEVER, 30]


def _logits(ids: list[int], top1: list[bool]) -> torch.Tensor:
    x = torch.zeros(1, len(ids), V)
    x[0, :, 0] = 2.0
    for pos, hit in enumerate(top1):
        x[0, pos, ids[pos + 1]] = TOP1 if hit else FAR
    return x


def _seq(ids: list[int], top1: list[bool], name: str | None, step: int) -> dict:
    return tensor_to_training_entry(_logits(ids, top1), torch.tensor([ids]), None, step=step,
                                    names=[name] if name else None)["sequences"][0]


def run_entry(step: int, run: str) -> dict:
    learn = LEARN_A if run == "a" else LEARN_B
    top1 = [step >= s for s in learn]
    if run == "a":
        top1[4] = step == 10
    seqs = [_seq(PROBE_IDS, top1, "probe", step)]
    # the same name with another text in each run (as with another tokenizer): never compared
    seqs.append(_seq([1, 2, 3] if run == "a" else [1, 2, 9], [True, True], "text", step))
    seqs.append(_seq([3, 4, 5], [True, False], "extra-a", step) if run == "a" else _seq([9, 8, 7], [True, True], None, step))
    return {"step": step, "loss": 1.0, "sequences": seqs}


def write_run(path, run: str):
    with TrainingDataWriter(path) as w:
        for step in STEPS_A if run == "a" else STEPS_B:
            w.write_step(run_entry(step, run))
    return path


def write_pair(folder: Path) -> tuple[Path, Path]:
    """``folder``/a.jsonl and ``folder``/b.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_run(folder / "a.jsonl", "a"), write_run(folder / "b.jsonl", "b")


def mirror_pair(logs: Path) -> None:
    """The two runs as TensorBoard runs ``logs``/a and ``logs``/b (through SeqVizLogger)."""
    for run in ("a", "b"):
        with SeqVizLogger(tensorboard=logs / run) as logger:
            for step in STEPS_A if run == "a" else STEPS_B:
                logger.log_step(run_entry(step, run))
