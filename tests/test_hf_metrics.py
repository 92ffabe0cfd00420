"""VisualizationCallback.metric_hooks: predictions from the real evaluation loop."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from transformers import DataCollatorForLanguageModeling, Trainer  # noqa: E402

from hf_helpers import dataset, read, tiny_model, tokenizer, training_args  # noqa: E402
from seqviz_trackers.integrations import VisualizationCallback  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]



def accuracy(eval_pred):
    """A user metric written for the usual argmax preprocess."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    assert preds.shape == labels.shape  # (batch, length) ids, never the full logits
    keep = labels[:, 1:] != -100
    return {"accuracy": float((preds[:, :-1] == labels[:, 1:])[keep].mean())}


def make(tmp_path, name, **hook_kwargs):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / name, max_sequences_per_eval=3)
    hooks = viz.metric_hooks(**hook_kwargs)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, per_device_eval_batch_size=2),
                      eval_dataset=dataset(tok), processing_class=tok,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[viz], **hooks)
    return viz, trainer


def test_eval_loop_predictions_match_the_probe_and_user_metrics_still_work(tmp_path):
    viz, trainer = make(tmp_path, "loop.jsonl", compute_metrics=accuracy)
    metrics = trainer.evaluate()
    assert 0 <= metrics["eval_accuracy"] <= 1
    assert viz.probe_forwards == 0  # the evaluation loop's own logits were used

    (loop,) = read(tmp_path / "loop.jsonl")
    assert loop["metadata"]["source"] == "eval_loop"
    assert loop["loss"] == pytest.approx(metrics["eval_loss"])
    # Eval batches of 2: the three sequences come from two batches.
    assert [s["name"] for s in loop["sequences"]] == ["eval[0]", "eval[1]", "eval[2]"]

    # The same model and examples through the probe forward give the same predictions.
    probe_viz = VisualizationCallback(tmp_path / "probe.jsonl", max_sequences_per_eval=3)
    Trainer(model=trainer.model, args=trainer.args, eval_dataset=trainer.eval_dataset,
            processing_class=trainer.processing_class, data_collator=trainer.data_collator,
            callbacks=[probe_viz]).evaluate()
    (probe,) = read(tmp_path / "probe.jsonl")
    for a, b in zip(loop["sequences"], probe["sequences"]):
        assert a["tokens"] == b["tokens"]
        assert [p["target_token_id"] for p in a["predictions"]] == [p["target_token_id"] for p in b["predictions"]]
        np.testing.assert_allclose([p["target_prob"] for p in a["predictions"]],
                                   [p["target_prob"] for p in b["predictions"]], rtol=1e-3)
        assert [p["top_k"][0][0] for p in a["predictions"]] == [p["top_k"][0][0] for p in b["predictions"]]


def test_user_preprocess_output_reaches_user_metrics(tmp_path):
    seen = []

    def preprocess(logits, labels):
        return logits.max(dim=-1).values  # what this user's metric wants

    def metrics(eval_pred):
        seen.append(eval_pred.predictions)
        return {"mean_max_logit": float(eval_pred.predictions.mean())}

    viz, trainer = make(tmp_path, "viz.jsonl", compute_metrics=metrics, preprocess_logits_for_metrics=preprocess)
    result = trainer.evaluate()
    assert "eval_mean_max_logit" in result
    assert seen[0].dtype == np.float32 and seen[0].ndim == 2
    assert read(tmp_path / "viz.jsonl")[0]["metadata"]["source"] == "eval_loop"


def test_hooks_without_user_metrics_each_evaluation_once(tmp_path):
    viz, trainer = make(tmp_path, "viz.jsonl")
    trainer.evaluate()
    trainer.state.global_step = 5
    trainer.evaluate()
    entries = read(tmp_path / "viz.jsonl")
    assert [e["step"] for e in entries] == [0, 5]
    assert all(len(e["sequences"]) == 3 for e in entries)  # the capture restarts at each evaluation


def test_tokenizer_only_in_the_collator_and_no_training_before_evaluate(tmp_path):
    tok = tokenizer()
    viz = VisualizationCallback(tmp_path / "viz.jsonl", max_sequences_per_eval=3)
    trainer = Trainer(model=tiny_model(len(tok)), args=training_args(tmp_path, per_device_eval_batch_size=2),
                      eval_dataset=dataset(tok), data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                      callbacks=[viz], **viz.metric_hooks())
    trainer.evaluate()  # the tokenizer is found only after the evaluation loop ran
    (entry,) = read(tmp_path / "viz.jsonl")
    assert [s["name"] for s in entry["sequences"]] == ["eval[0]", "eval[1]", "eval[2]"]
    assert entry["sequences"][0]["tokens"][:3] == ["To", " be", ","]
