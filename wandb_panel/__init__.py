"""Weights & Biases side of seqviz: token Tables, the HTML dashboard panel, artifacts.

``SeqVizLogger(jsonl_path, wandb=run)`` uses :class:`WandbMirror`. Importing this
package imports ``wandb`` (an ImportError when it is not installed).
"""

from .mirror import ARTIFACT_TYPE, DASHBOARD_KEY, STEP_METRIC, TOKENS_KEY, WandbMirror
from .tables import COLUMNS, entry_rows, step_scalars

__all__ = ["WandbMirror", "COLUMNS", "entry_rows", "step_scalars", "TOKENS_KEY", "DASHBOARD_KEY",
           "STEP_METRIC", "ARTIFACT_TYPE"]
