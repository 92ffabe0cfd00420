"""The conversion and the HF callback on a GPU: one short script for a machine that has one.

1. Conversion of (8, 4096, 128256) bf16 logits that live on the GPU: time / one
   ``torch.topk(logits, 20, dim=-1)`` on the same tensor (goal <= 3), peak extra GPU memory
   / logits size (goal <= 0.25, from ``torch.cuda.max_memory_allocated``), and the bytes
   that cross to the host (``Tensor.cpu``/``.tolist`` calls counted by a hook on the
   device-to-host copies the converter makes).
2. The HF ``VisualizationCallback``'s share of training time for a randomly initialised
   Llama config of about 1B parameters (bf16, vocabulary 128,256, 4 probes x 512 tokens,
   a probe every ``--every`` steps): the same steps trained with and without the callback,
   alternated; ratio of the two and time spent inside the callback.

Everything is measured in this one run; compare ratios, not seconds.

    python benchmarks/bench_gpu.py                      # on a CUDA machine: about 5 minutes on one H200
    python benchmarks/bench_gpu.py --device cpu --small # a check that the script runs (tiny shapes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

import torch

from seqviz_trackers import tensor_to_training_entry


class _Vocab:
    """A tokenizer stand-in: id -> a short display string, for the conversion part only."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def conversion(device: str, shape: tuple[int, int, int]) -> None:
    batch, length, vocab = shape
    logits = (torch.randn(batch, length, vocab, device=device) * 3).to(torch.bfloat16)
    ids = torch.randint(0, vocab, (batch, length), device=device)
    tok = _Vocab(vocab)
    convert = lambda: tensor_to_training_entry(logits, ids, tok, step=0, model_name="bench")  # noqa: E731
    topk = lambda: torch.topk(logits, 20, dim=-1)  # noqa: E731
    convert()  # warm-up: kernels, allocator
    moved = [0]
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        if self.device.type != "cpu":
            moved[0] += self.numel() * self.element_size()
        return real_cpu(self, *args, **kwargs)

    size = logits.numel() * logits.element_size()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    torch.Tensor.cpu = counting_cpu
    try:
        t_convert = timed(convert, device)
    finally:
        torch.Tensor.cpu = real_cpu
    t_topk = timed(topk, device)
    print(f"conversion of {batch}x{length}x{vocab} bf16 logits on {device}:")
    print(f"  conversion {t_convert * 1e3:.1f} ms, one torch.topk {t_topk * 1e3:.1f} ms, "
          f"ratio {t_convert / t_topk:.2f} (goal <= 3)")
    if device.startswith("cuda"):
        extra = torch.cuda.max_memory_allocated() - base
        print(f"  peak extra GPU memory {extra / 2**20:.1f} MiB = {extra / size:.3f} of the logits (goal <= 0.25)")
    per_call = moved[0] / 3
    print(f"  device -> host per conversion: {per_call / 2**20:.2f} MiB ({per_call / (batch * length):.0f} B per position; "
          f"logits are {size / 2**20:.0f} MiB)")


def callback_share(device: str, small: bool, steps: int, every: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from seqviz_trackers.integrations import VisualizationCallback

    if small:
        cfg = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4)
        length, batch = 64, 2
    else:  # about 1.2B parameters, Llama 3 vocabulary
        cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                          num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=4096)
        length, batch = 512, 8
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": row, "labels": row} for row in torch.randint(0, cfg.vocab_size, (steps * batch, length),
                                                                       generator=gen)]
    from seqviz_trackers.cli.demo import _text, _tokenizer

    text = _text()
    tok = _tokenizer(text)  # the demo's BPE (1,024 ids): probe texts of about `length` tokens each
    chars = 4 * length
    probe_texts = [text[i * chars:(i + 1) * chars] for i in range(4)]
    bf16 = device.startswith("cuda")

    def train(visualize: bool, out: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to(device)
        args = TrainingArguments(out, per_device_train_batch_size=batch, max_steps=steps, bf16=bf16,
                                 logging_steps=every, report_to=[], save_strategy="no", disable_tqdm=True,
                                 use_cpu=not device.startswith("cuda"))
        callbacks, spent = [], [0.0]
        if visualize:
            cb = VisualizationCallback(f"{out}/seqviz.jsonl", probe_texts=probe_texts, tokenizer=tok, every_n_steps=every,
                                       tensorboard=False, wandb=False)
            handler = cb.on_step_end

            def timed_step_end(*a, **k):
                start = time.perf_counter()
                try:
                    return handler(*a, **k)
                finally:
                    sync(device)
                    spent[0] += time.perf_counter() - start

            cb.on_step_end = timed_step_end
            callbacks.append(cb)
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
        sync(device)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.train()
        sync(device)
        return time.perf_counter() - start, spent[0]

    with tempfile.TemporaryDirectory() as tmp:
        train(True, f"{tmp}/warm")
        runs = {False: [], True: []}
        for i, order in enumerate(((False, True), (True, False))):
            for visualize in order:
                runs[visualize].append(train(visualize, f"{tmp}/{visualize}{i}"))
    base = min(t for t, _ in runs[False])
    with_cb = min(t for t, _ in runs[True])
    inside = min(s for _, s in runs[True])
    params = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters()) if small else None
    label = f"{params / 1e6:.1f}M" if params else "~1.2B"
    print(f"HF callback, Llama {label} params, batch {batch} x {length}, {steps} steps, probe 4 x {length} "
          f"every {every} steps, on {device}:")
    print(f"  without {base:.2f} s, with {with_cb:.2f} s: ratio {with_cb / base:.3f}; "
          f"inside the callback {inside:.2f} s = {inside / base:.1%} of training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes: check that the script runs")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here (use --device cpu --small to check the script)")
    conversion(args.device, (2, 256, 4096) if args.small else (8, 4096, 128256))
    callback_share(args.device, args.small, args.steps, args.every)


if __name__ == "__main__":
    main()
