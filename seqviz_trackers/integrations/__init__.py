"""Framework integrations.

- :class:`VisualizationCallback`: a Hugging Face ``Trainer`` callback that logs the
  model's token-by-token predictions on a fixed probe set at each evaluation.

Importing this package needs ``transformers`` (the ``hf`` extra: ``pip install ".[hf]"`` from a clone).
"""

from .hf import VisualizationCallback, tensorboard_run_dir

__all__ = ["VisualizationCallback", "tensorboard_run_dir"]
