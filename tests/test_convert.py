"""tensor_to_training_entry against an independent, slow, float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from factories import bpe_tokenizer
from seqviz_trackers import tensor_to_training_entry, validate_entry
from seqviz_trackers import convert as convert_module

CHUNK_BYTES = convert_module.CHUNK_BYTES  # the real one (the fixture below makes it tiny)


def reference(logits, input_ids, attention_mask=None, labels=None, k=20):
    """Per position, in float64, one at a time: the obvious way."""
    batch, length, vocab = logits.shape
    mask = attention_mask if attention_mask is not None else torch.ones(batch, length, dtype=torch.long)
    targets = labels if labels is not None else input_ids
    out = []
    for b in range(batch):
        kept = [t for t in range(length) if mask[b, t]]
        preds = []
        for i, t in enumerate(kept[:-1]):
            nxt = kept[i + 1]
            if nxt != t + 1 or int(targets[b, nxt]) == -100:
                continue
            row = logits[b, t].double()
            logp = torch.log_softmax(row, -1)
            p = logp.exp()
            tgt = int(targets[b, nxt])
            order = sorted(range(vocab), key=lambda v: -float(row[v]))[:k]
            preds.append({
                "position": i,
                "target": tgt,
                "top": [float(p[v]) for v in order],
                "probs": p,
                "target_prob": float(p[tgt]),
                "loss": -float(logp[tgt]),
                "entropy": float(torch.special.entr(p).sum()),
                "rank": 1 + int((row > row[tgt]).sum()),
            })
        out.append((kept, preds))
    return out


def assert_matches(entry, ref, input_ids, rel=2e-4):
    assert len(entry["sequences"]) == len(ref)
    for b, (seq, (kept, preds)) in enumerate(zip(entry["sequences"], ref)):
        assert seq["token_ids"] == [int(input_ids[b, t]) for t in kept]
        assert len(seq["predictions"]) == len(preds)
        for got, want in zip(seq["predictions"], preds):
            assert got["position"] == want["position"]
            assert got["target_token_id"] == want["target"]
            assert got["target_rank"] == want["rank"]
            assert got["correct"] == (want["rank"] == 1)
            assert got["target_prob"] == pytest.approx(want["target_prob"], rel=rel, abs=1e-9)
            assert got["loss"] == pytest.approx(want["loss"], rel=rel, abs=1e-5)
            assert got["entropy"] == pytest.approx(want["entropy"], rel=rel, abs=1e-5)
            # The k largest probabilities, each under its own id (ties may swap ids), to the
            # candidates' 4 significant digits (5e-4 apart at most)
            probs = [p for _, _, p in got["top_k"]]
            assert probs == pytest.approx(want["top"], rel=max(rel, 5e-4), abs=1e-9)
            for token_id, _, p in got["top_k"]:
                assert p == pytest.approx(float(want["probs"][token_id]), rel=max(rel, 5e-4), abs=1e-9)
            assert len({c[0] for c in got["top_k"]}) == len(got["top_k"])


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Force several chunks per call so chunk boundaries are exercised."""
    monkeypatch.setattr(convert_module, "CHUNK_BYTES", 4 * 300 * 3)


def test_batch_fp32_matches_reference():
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 300) * 3
    ids = torch.randint(0, 300, (3, 9))
    entry = tensor_to_training_entry(logits, ids, None, step=7)
    assert_matches(entry, reference(logits, ids), ids)
    validate_entry(entry)
    losses = [p["loss"] for s in entry["sequences"] for p in s["predictions"]]
    assert entry["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert entry["perplexity"] == pytest.approx(math.exp(entry["loss"]), rel=1e-9)


def test_left_right_padding_and_ignored_labels():
    torch.manual_seed(1)
    logits = torch.randn(3, 8, 300) * 2
    ids = torch.randint(1, 300, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    mask[1, 5:] = 0  # right padding
    labels = ids.clone()
    labels[2, :4] = -100  # prompt masked out
    labels[0, 6] = -100
    entry = tensor_to_training_entry(logits, ids, None, step=1, attention_mask=mask, labels=labels)
    ref = reference(logits, ids, mask, labels)
    assert_matches(entry, ref, ids)
    assert len(entry["sequences"][0]["tokens"]) == 5
    assert [p["position"] for p in entry["sequences"][2]["predictions"]] == [3, 4, 5, 6]
    # Labels differing from the inputs are the targets.
    labels2 = ids.clone()
    labels2[0, 5] = 17
    entry2 = tensor_to_training_entry(logits, ids, None, step=1, attention_mask=mask, labels=labels2)
    pred = next(p for p in entry2["sequences"][0]["predictions"] if p["position"] == 1)
    assert pred["target_token_id"] == 17


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_reference_of_same_values(dtype):
    torch.manual_seed(2)
    logits = (torch.randn(2, 6, 300) * 4).to(dtype)
    ids = torch.randint(0, 300, (2, 6))
    entry = tensor_to_training_entry(logits, ids, None, step=2)
    assert_matches(entry, reference(logits.float(), ids), ids, rel=1e-3)


def test_rank_exact_outside_top_k():
    vocab = 300
    logits = torch.arange(vocab, dtype=torch.float32).flip(0).repeat(2, 1)  # token v has rank v+1
    ids = torch.tensor([0, 250])
    entry = tensor_to_training_entry(logits, ids, None, step=0, top_k=5)
    pred = entry["sequences"][0]["predictions"][0]
    assert pred["target_rank"] == 251
    assert [c[0] for c in pred["top_k"]] == [0, 1, 2, 3, 4]
    assert pred["correct"] is False


def test_masked_vocabulary_minus_inf_is_fine():
    logits = torch.randn(1, 4, 300)
    logits[..., 100:] = float("-inf")
    ids = torch.tensor([[1, 2, 3, 4]])
    entry = tensor_to_training_entry(logits, ids, None, step=0)
    for p in entry["sequences"][0]["predictions"]:
        assert 0 < p["entropy"] < math.log(100) + 1e-6
    assert_matches(entry, reference(logits, ids), ids)


def test_display_strings_from_byte_level_bpe():
    tok = bpe_tokenizer()
    text = "To be, or not\nto be — ☃"
    ids = tok(text, return_tensors="pt").input_ids
    entry = tensor_to_training_entry(torch.randn(1, ids.shape[1], len(tok)), ids, tok, step=0)
    tokens = entry["sequences"][0]["tokens"]
    joined = "".join(tokens)
    assert "Ġ" not in joined and "Ċ" not in joined
    assert joined.startswith("To be, or not\nto be ")
    assert " be" in tokens and "\n" in joined
    # "—" and "☃" are not in this small vocabulary: whole characters or readable bytes.
    assert "—" in joined or "<0xE2>" in joined
    assert "\ufffd" not in joined
    for p in entry["sequences"][0]["predictions"]:
        assert p["target_token_str"] == tokens[p["position"] + 1]


def test_display_strings_sentencepiece_style_with_byte_fallback():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"] + [f"<0x{b:02X}>" for b in range(256)])
    tk.train_from_iterator(["to be or not to be that is the question"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    ids = tok("to be\n☃", return_tensors="pt").input_ids
    raw = tok.convert_ids_to_tokens(ids[0])
    assert any(p.startswith("▁") for p in raw) and "<0x0A>" in raw
    entry = tensor_to_training_entry(torch.randn(1, ids.shape[1], len(tok)), ids, tok, step=0)
    tokens = entry["sequences"][0]["tokens"]
    assert "▁" not in "".join(tokens)
    assert " be" in tokens and "\n" in tokens
    assert "<0xE2>" in tokens  # a lone byte of a 3-byte character stays readable
    assert entry["sequences"][0]["token_ids"] == ids[0].tolist()


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(2, 3, 4, 5), torch.zeros(2, 3, dtype=torch.long)), "shape"),
    (lambda: (torch.randn(2, 3, 10), torch.zeros(3, 3, dtype=torch.long)), "input_ids has shape"),
    (lambda: (torch.randn(2, 3, 10), torch.zeros(2, 4, dtype=torch.long)), "input_ids has shape"),
    (lambda: (torch.randint(0, 5, (2, 3, 10)), torch.zeros(2, 3, dtype=torch.long)), "floating point"),
    (lambda: (torch.randn(1, 3, 10), torch.tensor([[1, 2, 10]])), "outside the vocabulary"),
    (lambda: ([[0.1]], torch.zeros(1, 1, dtype=torch.long)), "torch.Tensor"),
])
def test_bad_inputs_give_clear_value_errors(make, message):
    logits, ids = make()
    with pytest.raises(ValueError, match=message):
        tensor_to_training_entry(logits, ids, None, step=0)


def test_nan_logits_name_the_position():
    logits = torch.randn(2, 4, 10)
    logits[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(sequence 1, position 2\)"):
        tensor_to_training_entry(logits, torch.zeros(2, 4, dtype=torch.long), None, step=0)


def test_mask_shape_and_nan_loss_rejected():
    logits, ids = torch.randn(1, 4, 10), torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        tensor_to_training_entry(logits, ids, None, step=0, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="loss is nan"):
        tensor_to_training_entry(logits, ids, None, step=0, loss=float("nan"))


def test_huge_loss_keeps_perplexity_finite_and_names_kept():
    entry = tensor_to_training_entry(torch.randn(2, 3, 10), torch.zeros(2, 3, dtype=torch.long), None, step=5,
                                     loss=5000.0, names=["a", "b"], model_name="m")
    assert math.isfinite(entry["perplexity"])
    assert [s["name"] for s in entry["sequences"]] == ["a", "b"]
    assert entry["metadata"]["model_name"] == "m"
    validate_entry(entry)


@pytest.mark.parametrize("vocab", [300, 301, 1000, 1037])
@pytest.mark.parametrize("block", [3, 7])
def test_blocked_top_k_matches_torch_topk(monkeypatch, vocab, block):
    monkeypatch.setattr(convert_module, "TOPK_BLOCK", block)
    torch.manual_seed(vocab + block)
    x = torch.randn(6, vocab) * 3
    x[1, : vocab // 2] = float("-inf")  # half the row masked
    x[2, 5:] = float("-inf")  # fewer finite entries than k
    x[3] = torch.randint(0, 4, (vocab,)).float()  # many ties
    x[4, -1] = 50.0  # the maximum in the partial last block
    x[5, 0] = float("nan")
    values, ids = convert_module._top_k(x, 20)
    want_values, _ = torch.topk(x, 20, dim=-1)
    assert torch.equal(values[:5], want_values[:5])
    assert torch.isnan(values[5, 0])
    assert torch.equal(x.gather(1, ids)[:5], values[:5])  # each id holds its value
    assert all(len(set(r)) == 20 for r in ids.tolist())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_agrees_with_fp32_conversion(monkeypatch, dtype):
    """Half-precision logits give what their fp32 values give (blocked top-k path)."""
    monkeypatch.setattr(convert_module, "TOPK_BLOCK", 4)
    torch.manual_seed(3)
    logits = (torch.randn(3, 10, 2003) * 3).to(dtype)
    ids = torch.randint(0, 2003, (3, 10))
    half = tensor_to_training_entry(logits, ids, None, step=1, timestamp=0.0)
    full = tensor_to_training_entry(logits.float(), ids, None, step=1, timestamp=0.0)
    for s_half, s_full in zip(half["sequences"], full["sequences"]):
        for a, b in zip(s_half["predictions"], s_full["predictions"]):
            assert a["target_rank"] == b["target_rank"]
            for key in ("target_prob", "loss", "entropy"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)
            assert [c[2] for c in a["top_k"]] == pytest.approx([c[2] for c in b["top_k"]], rel=1e-4)
    assert_matches(half, reference(logits.float(), ids), ids, rel=1e-3)


def test_masked_minus_inf_rows_with_blocked_top_k(monkeypatch):
    """-inf in whole blocks, in the partial last block, and fewer finite logits than k."""
    monkeypatch.setattr(convert_module, "TOPK_BLOCK", 4)
    torch.manual_seed(4)
    logits = torch.randn(2, 6, 1001) * 2
    logits[0, :, 200:] = float("-inf")
    logits[1, :3, 7:] = float("-inf")  # 7 finite logits, top_k 20
    logits[1, 3:, 998:] = float("-inf")
    ids = torch.randint(0, 7, (2, 6))
    entry = tensor_to_training_entry(logits, ids, None, step=0)
    preds = [p for s in entry["sequences"] for p in s["predictions"]]
    assert all(math.isfinite(p["entropy"]) and p["entropy"] >= 0 for p in preds)
    few = entry["sequences"][1]["predictions"][:2]
    for p in few:
        assert sum(c[2] > 0 for c in p["top_k"]) == 7
        assert sum(c[2] for c in p["top_k"]) == pytest.approx(1.0, rel=1e-4)
        assert p["entropy"] < math.log(7) + 1e-6
    ref = reference(logits, ids)
    for seq, (_, want) in zip(entry["sequences"], ref):
        for got, w in zip(seq["predictions"], want):
            assert got["target_rank"] == w["rank"]
            assert got["entropy"] == pytest.approx(w["entropy"], rel=2e-4, abs=1e-5)
            assert got["target_prob"] == pytest.approx(w["target_prob"], rel=2e-4, abs=1e-9)


def test_rank_exact_when_some_targets_miss_the_top_k(monkeypatch):
    """A chunk where some rows' targets are in the top-k and others are not: counts
    only for the latter, each exact."""
    monkeypatch.setattr(convert_module, "TOPK_BLOCK", 4)
    monkeypatch.setattr(convert_module, "CHUNK_BYTES", 4 * 1000 * 8)
    vocab = 1000
    order = torch.stack([torch.randperm(vocab, generator=torch.Generator().manual_seed(i)) for i in range(16)])
    logits = torch.empty(16, vocab).scatter_(1, order, torch.arange(vocab, 0, -1).float().expand(16, -1))
    # order[i, r] has rank r + 1 in row i; targets for row i at rank (0, 3, 19, 20, 500, 999)[i % 6] + 1
    wanted = [0, 3, 19, 20, 500, 999]
    ids = torch.zeros(17, dtype=torch.long)
    for i in range(16):
        ids[i + 1] = order[i, wanted[i % 6]]
    entry = tensor_to_training_entry(torch.cat([logits, logits[:1]]), ids, None, step=0, top_k=5)
    ranks = [p["target_rank"] for p in entry["sequences"][0]["predictions"]]
    assert ranks == [wanted[i % 6] + 1 for i in range(16)]


def test_non_contiguous_logits_are_not_copied_whole():
    torch.manual_seed(5)
    base = torch.randn(2, 7, 300) * 3
    logits = base.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    wide = torch.randn(2, 7, 600)
    wide[..., ::2] = base  # last-dim stride 2
    ids = torch.randint(0, 300, (2, 7))
    want = tensor_to_training_entry(base, ids, None, step=0, timestamp=0.0)
    assert tensor_to_training_entry(logits, ids, None, step=0, timestamp=0.0) == want
    assert tensor_to_training_entry(wide[..., ::2], ids, None, step=0, timestamp=0.0) == want


def test_chunk_rows_fit_small_and_large_logits(monkeypatch):
    monkeypatch.setattr(convert_module, "CHUNK_BYTES", CHUNK_BYTES)
    cm = convert_module
    for n, vocab in [(47, 1024), (1, 50257), (2047, 256000), (8 * 2048, 128256), (2044, 50257), (5, 10)]:
        rows = cm._chunk_rows(n, vocab)
        assert 1 <= rows <= n
        chunk = rows * 4 * vocab
        assert chunk <= max(4 * vocab, cm.MAX_CHUNK_BYTES)
        # an eighth of the rows' logits, or the smallest chunk worth a pass
        assert chunk <= max(4 * vocab, n * 4 * vocab / 8 + 4 * vocab, cm.MIN_CHUNK_BYTES)
    # large logits: a 64th of them per chunk, between CHUNK_BYTES and MAX_CHUNK_BYTES
    for n, vocab in [(2044, 50257), (2047, 256000), (8 * 2048, 128256)]:
        row = 4 * vocab
        want = min(max(n * row / 64, CHUNK_BYTES), cm.MAX_CHUNK_BYTES)
        assert want - row < cm._chunk_rows(n, vocab) * row <= want
    # one captured row of a small vocabulary: not one chunk of all of it, nor chunks of a row or two
    assert 47 > cm._chunk_rows(47, 1024) > 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_entry_whatever_the_chunk_rows(monkeypatch, dtype):
    """The chunk sizing (one row, a few, all of them) changes no value of the entry."""
    monkeypatch.setattr(convert_module, "TOPK_BLOCK", 8)  # the blocked top-k too (V=1024 >= 4k blocks)
    torch.manual_seed(3)
    logits = (torch.randn(2, 48, 1024) * 3).to(dtype)
    logits[0, 5, :100] = -math.inf  # a masked stretch: the entropy's fallback inside a chunk
    ids = torch.randint(0, 1024, (2, 48))
    entries = []
    for rows in (1, 6, None):
        chunk = (lambda n, vocab: n) if rows is None else (lambda n, vocab, r=rows: r)
        monkeypatch.setattr(convert_module, "_chunk_rows", chunk)
        entries.append(tensor_to_training_entry(logits, ids, None, step=1, timestamp=0.0))
    assert entries[0] == entries[1] == entries[2]
    assert_matches(entries[0], reference(logits.float(), ids), ids)
