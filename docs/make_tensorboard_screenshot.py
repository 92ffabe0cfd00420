"""Make ``docs/tensorboard.png``: train a tiny GPT-2 on Hamlet with a plain PyTorch loop,
log scalars and seqviz steps into one TensorBoard run, open TensorBoard's seqviz tab in
headless Chromium, click a token, and take a screenshot.

    .venv/bin/python docs/make_tensorboard_screenshot.py [--out runs/tb-demo] [--steps 300]

Needs the ``tensorboard`` extra, ``playwright`` and Chromium (``/usr/bin/chromium``).
Nothing is downloaded: the tokenizer is trained on the bundled text, the model is
built from a config.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from seqviz_trackers import SeqVizLogger, tensor_to_training_entry

PROBE = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
]


def train(out: Path, steps: int, log_every: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    text = resources.files("seqviz_trackers").joinpath("data/hamlet.txt").read_text("utf-8")
    start = text.index("To be, or not to be")
    # the soliloquy and around it (learnt in a few hundred steps), this edition's dashes as plain punctuation
    text = text[start - 2000:start + 4000].replace(",--", ", ").replace("--", " ")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=768, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=128, n_layer=2, n_head=4))
    data = torch.tensor(tokenizer(text)["input_ids"])
    probe = tokenizer(PROBE, return_tensors="pt", padding=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    writer = SummaryWriter(log_dir=str(out / "gpt2-tiny"))  # the user's own writer
    with SeqVizLogger(jsonl_path=out / "gpt2-tiny.jsonl", tensorboard=writer) as seqviz:
        for step in range(steps + 1):
            starts = torch.randint(0, len(data) - 65, (16,))
            batch = torch.stack([data[s:s + 64] for s in starts])
            loss = model(batch, labels=batch).loss
            writer.add_scalar("train/loss", loss.item(), step)
            if step % log_every == 0:
                model.eval()
                with torch.no_grad():
                    logits = model(**probe).logits
                seqviz.log_step(tensor_to_training_entry(
                    logits, probe["input_ids"], tokenizer, step=step, loss=loss.item(),
                    attention_mask=probe["attention_mask"], names=["to be", "nobler"], model_name="gpt2-tiny"))
                model.train()
            opt.zero_grad()
            loss.backward()
            opt.step()
    writer.close()


def screenshot(logdir: Path, png: Path) -> None:
    from screenshot_helpers import chromium

    port = 6099
    tb = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(logdir),
                           "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/#seqviz")
            page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => f.src.includes('seqviz'))")
            page.wait_for_timeout(300)
            frame = next(f for f in page.frames if "name=seqviz" in f.url)
            frame.wait_for_selector(".tok")
            frame.locator(".tok").nth(8).click()
            frame.wait_for_selector(".detail .bar-row")
            page.wait_for_timeout(300)
            page.screenshot(path=str(png))
    finally:
        tb.terminate()
        tb.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/tb-demo")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--png", default=str(Path(__file__).with_name("tensorboard.png")))
    args = ap.parse_args()
    out = Path(args.out)
    t = time.time()
    train(out, args.steps, args.log_every)
    print(f"trained {args.steps} steps in {time.time() - t:.0f} s")
    screenshot(out, Path(args.png))
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
