"""How much the conversion costs inside a training loop (fp32 logits on the CPU).

For each shape, all measured in this one run (the machine is shared, so compare ratios):
- conversion time / one ``torch.topk(logits, 20, dim=-1)`` over the same tensor  (goal <= 3)
- speed-up over a straightforward per-position loop (softmax + sort per position)  (goal >= 5),
  and over a tuned per-position loop (top-k + count), which only removes the loop
- peak extra memory / size of the logits tensor (fresh process, RSS sampled each ms) (goal <= 0.25)
- JSON bytes per predicted position with top-20                                   (goal <= 1000)
- schema validation time / (serialise + append) time of the same entry

    python benchmarks/bench_convert.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

from seqviz_trackers import TrainingDataWriter, encode_entry, tensor_to_training_entry
from seqviz_trackers.format.schema import check_schema

SHAPES = [(4, 512, 50257), (4, 64, 128256)]
SCALE = 3.0  # logits ~ N(0, 3^2): peaked enough to look like a model's


def best_of(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def per_position_loop(logits: torch.Tensor, ids: torch.Tensor, k: int = 20, sort: bool = True) -> list:
    """The obvious implementation: one position at a time, softmax then a sort of the
    vocabulary for the top-k and the target's rank. ``sort=False`` is a tuned loop
    (top-k plus a count for the rank) that isolates the cost of looping itself."""
    out = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            logp = torch.log_softmax(logits[b, t], -1)
            probs = logp.exp()
            target = int(ids[b, t + 1])
            if sort:
                top_p, top_i = torch.sort(probs, descending=True)
                rank = int((top_i == target).nonzero()) + 1
                top_p, top_i = top_p[:k], top_i[:k]
            else:
                top_p, top_i = torch.topk(probs, k)
                rank = int((probs > probs[target]).sum()) + 1
            out.append({
                "position": t, "target_token_id": target, "target_prob": float(probs[target]),
                "target_rank": rank, "loss": -float(logp[target]),
                "entropy": float(torch.special.entr(probs).sum()),
                "top_k": [[int(i), str(int(i)), float(p)] for i, p in zip(top_i, top_p)],
            })
    return out


class ReadableVocabulary:
    """Display strings of realistic length: the pieces of a byte-level BPE trained on
    the bundled text, reused cyclically to cover a large vocabulary."""

    def __init__(self) -> None:
        from importlib import resources

        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        text = resources.files("seqviz_trackers").joinpath("data/hamlet.txt").read_text("utf-8")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=8000, show_progress=False))
        self.backend_tokenizer = tok  # lets the converter see it is byte-level
        self.pieces = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[i % len(self.pieces)] for i in ids]


def peak_memory_ratio(shape: tuple[int, int, int]) -> float:
    """Run one conversion in a fresh process while a thread samples its resident memory
    every millisecond; the peak growth over the logits' size."""
    code = f"""
import os, threading, time, torch
from seqviz_trackers import tensor_to_training_entry
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
tensor_to_training_entry(torch.randn(1, 8, 100), torch.zeros(1, 8, dtype=torch.long), None, step=0)  # warm up
logits = torch.empty{shape}.normal_(0, {SCALE})
ids = torch.randint(0, {shape[2]}, {shape[:2]})
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
thread = threading.Thread(target=sample)
thread.start()
tensor_to_training_entry(logits, ids, None, step=1)
done.set()
thread.join()
print((peak[0] - base) / (logits.numel() * logits.element_size()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, logits ~ N(0, {SCALE}^2), fp32, CPU")
    vocabulary = ReadableVocabulary()
    for shape in SHAPES:
        torch.manual_seed(0)
        logits = torch.empty(*shape).normal_(0, SCALE)
        ids = torch.randint(0, shape[2], shape[:2])
        convert = lambda: tensor_to_training_entry(logits, ids, vocabulary, step=1)  # noqa: E731
        convert()  # warm up
        t_topk = best_of(lambda: torch.topk(logits, 20, dim=-1), repeat)
        t_conv = best_of(convert, repeat)
        t_loop = best_of(lambda: per_position_loop(logits, ids), 1)
        t_tuned = best_of(lambda: per_position_loop(logits, ids, sort=False), 1)
        entry = convert()
        positions = sum(len(s["predictions"]) for s in entry["sequences"])
        line = encode_entry(entry)
        with tempfile.TemporaryDirectory() as tmp, TrainingDataWriter(os.path.join(tmp, "x.jsonl"), validate=False) as w:
            t_write = best_of(lambda: w.write_line(encode_entry(entry, validate=False)), repeat)
        t_valid = best_of(lambda: check_schema(entry), repeat)
        mem = peak_memory_ratio(shape)
        print(f"\nB,T,V = {shape}  ({positions} predicted positions)")
        print(f"  conversion {t_conv * 1e3:8.1f} ms   topk {t_topk * 1e3:7.1f} ms   -> ratio {t_conv / t_topk:5.2f}  (goal <= 3)")
        print(f"  per-position loop, sort {t_loop * 1e3:8.1f} ms     -> speed-up {t_loop / t_conv:5.1f}x (goal >= 5)")
        print(f"  per-position loop, topk+count {t_tuned * 1e3:8.1f} ms -> speed-up {t_tuned / t_conv:5.1f}x")
        print(f"  peak extra memory / logits size                -> {mem:5.3f}  (goal <= 0.25)")
        print(f"  JSON bytes per predicted position              -> {len(line) / positions:5.0f}  (goal <= 1000)")
        print(f"  validation {t_valid * 1e3:.1f} ms / serialise+append {t_write * 1e3:.1f} ms -> ratio {t_valid / t_write:4.2f}")


if __name__ == "__main__":
    main()
