"""Row losses from the model's own loss computation: while capture is attached, a Hugging Face
causal LM's ``loss_function`` computes the token losses once and hands them to the capture.

The loss and gradients are those of the original loss; the row losses are those computed from
the logits; no second cross-entropy pass runs; every case the wrapper cannot take falls back."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402
from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402

from hf_helpers import dataset, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.capture import CaptureOptions  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402
from seqviz_trackers.integrations._capture import ForwardCapture  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB = 97


@pytest.fixture
def ce_calls(monkeypatch):
    """Counts calls of torch.nn.functional.cross_entropy (every loss and row-loss path uses it)."""
    calls = []
    real = torch.nn.functional.cross_entropy

    def counting(*args, **kwargs):
        calls.append(kwargs.get("reduction", "mean"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", counting)
    return calls


def model_without_dropout(seed: int = 0):
    model = tiny_model(VOCAB, seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model.train()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[0, 5] = -100  # an ignored token in the middle of a row
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def rows_of(model, inputs, reuse: bool, **kwargs) -> tuple[torch.Tensor, dict, ForwardCapture]:
    """The loss of one training forward + backward under capture, and that step's record."""
    hooks = ForwardCapture(CaptureOptions(every=0), None, lambda: 1, reuse_loss=reuse)
    hooks.attach(model)
    try:
        loss = model(**inputs, **kwargs).loss
        loss.backward()
        return loss.detach(), hooks.finish(1), hooks
    finally:
        hooks.detach()


@pytest.mark.parametrize("num_items", [None, 17])
def test_loss_gradients_and_row_losses_equal_the_original_with_one_cross_entropy_pass(num_items, ce_calls):
    inputs = batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    reference = model_without_dropout()
    plain, recompute = copy.deepcopy(reference), copy.deepcopy(reference)

    expected = reference(**inputs, **kwargs).loss  # the original loss, no capture at all
    expected.backward()
    assert ce_calls == [("sum" if num_items else "mean")]

    ce_calls.clear()
    loss, record, hooks = rows_of(plain, inputs, reuse=True, **kwargs)
    assert hooks.reused == 1 and ce_calls == ["none"]  # one pass: the loss's own; the row losses reuse it
    torch.testing.assert_close(loss, expected.detach())
    for (name, p), q in zip(plain.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)

    ce_calls.clear()
    loss_before, record_before, hooks = rows_of(recompute, inputs, reuse=False, **kwargs)
    assert hooks.reused == 0 and len(ce_calls) >= 2  # the loss, then the row losses again from the logits
    assert torch.equal(loss_before, expected.detach())
    assert record["rows"]["tokens"] == record_before["rows"]["tokens"] == [10, 8, 8]
    torch.testing.assert_close(record["rows"]["loss"], record_before["rows"]["loss"])
    assert record["loss"] == pytest.approx(record_before["loss"], rel=1e-6)


def test_the_original_loss_function_is_back_after_detach():
    model = model_without_dropout()
    assert "_loss_function" not in vars(model)
    hooks = ForwardCapture(CaptureOptions(every=0), None, lambda: 1)
    hooks.attach(model)
    assert model.loss_function is not ForCausalLMLoss
    hooks.attach(model)  # attaching again wraps the original once, not the wrapper
    hooks.detach()
    assert model.loss_function is ForCausalLMLoss and "_loss_function" not in vars(model)


def test_a_custom_loss_is_left_alone(ce_calls):
    model = model_without_dropout()
    used = []

    def custom(logits, labels, vocab_size, **kwargs):
        used.append(True)
        return ForCausalLMLoss(logits, labels, vocab_size, **kwargs) * 2

    model.loss_function = custom
    loss, record, hooks = rows_of(model, batch(), reuse=True)
    assert used == [True] and hooks.reused == 0 and model.loss_function is custom
    assert len(ce_calls) >= 2 and record["rows"]["tokens"] == [10, 8, 8]


@pytest.mark.parametrize("case", ["shift_labels", "no labels", "no loss_function"])
def test_fallback_gives_the_row_losses_from_the_logits(case, ce_calls):
    inputs = batch()
    _loss, expected, _hooks = rows_of(model_without_dropout(), inputs, reuse=False)
    model = model_without_dropout()
    kwargs: dict = {}
    if case == "shift_labels":
        labels = inputs["labels"]
        kwargs["shift_labels"] = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()
    elif case == "no labels":  # the trainer computes the loss itself: the capture reads the labels elsewhere
        hooks = ForwardCapture(CaptureOptions(every=0), None, lambda: 1)
        hooks.use_batch(inputs)
        hooks.attach(model)
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        record = hooks.finish(1)
        hooks.detach()
        assert hooks.reused == 0
        torch.testing.assert_close(record["rows"]["loss"], expected["rows"]["loss"])
        return
    else:
        class Outer(torch.nn.Module):  # a module around the model: it has no loss_function
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, **kw):
                return self.inner(**kw)

        model = Outer(model)
    loss, record, hooks = rows_of(model, inputs, reuse=True, **kwargs)
    assert hooks.reused == 0 and loss.isfinite()
    torch.testing.assert_close(record["rows"]["loss"], expected["rows"]["loss"])


@pytest.mark.slow
def test_trainer_with_gradient_accumulation_trains_alike_and_runs_one_cross_entropy_per_forward(tmp_path, ce_calls):
    tok = tokenizer()

    def train(capture: bool):
        model = tiny_model(len(tok))
        callbacks = [VisualizationCallback(tmp_path / f"viz{capture}.jsonl", capture_train=CaptureOptions(every=0))] \
            if capture else []
        args = training_args(tmp_path / str(capture), max_steps=3, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, eval_strategy="no", logging_steps=1, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=dataset(tok), processing_class=tok,
                          data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=callbacks)
        trainer.train()
        return model, [h["loss"] for h in trainer.state.log_history if "loss" in h]

    plain, plain_losses = train(False)
    assert len(ce_calls) == 6  # 3 steps x 2 micro-batches
    ce_calls.clear()
    captured, captured_losses = train(True)
    assert ce_calls == ["none"] * 6  # the row losses took no pass of their own
    assert captured_losses == pytest.approx(plain_losses, rel=1e-5)
    for p, q in zip(captured.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q)
    assert captured.loss_function is ForCausalLMLoss  # put back at the end of training
