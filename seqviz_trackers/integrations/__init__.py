"""Framework integrations, one module per trainer; each needs only its own trainer.

- :class:`VisualizationCallback` (``seqviz_trackers.integrations.hf``): a Hugging Face
  ``Trainer`` callback that logs the model's token-by-token predictions on a fixed probe
  set at each evaluation (needs ``transformers``: the ``hf`` extra).
- :class:`~seqviz_trackers.integrations.accelerate.SeqVizTracker`
  (``seqviz_trackers.integrations.accelerate``): an Accelerate tracker for
  ``Accelerator(log_with=[...])`` (needs ``accelerate``).

``from seqviz_trackers.integrations import VisualizationCallback`` imports
``transformers`` only then, so importing another integration does not need it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VisualizationCallback", "tensorboard_run_dir"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
