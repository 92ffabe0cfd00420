"""TensorBoard side of seqviz: the step mirror and the dynamic ``seqviz`` plugin.

Importing this package needs ``tensorboard`` (the ``tensorboard`` extra: ``pip install ".[tensorboard]"`` from a clone).
"""

from .writer import ASSET_NAME, PLUGIN_NAME, TensorBoardMirror, asset_path

__all__ = ["TensorBoardMirror", "PLUGIN_NAME", "ASSET_NAME", "asset_path"]
