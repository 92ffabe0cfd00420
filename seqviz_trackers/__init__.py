"""seqviz-trackers: see what a language model predicts, token by token, while it trains.

The core turns logits into one JSON entry per logged step and appends it to a JSONL
file; :class:`SeqVizLogger` mirrors the same steps into TensorBoard and W&B.
"""

from ._version import __version__
from .convert import extract_batch_sample, tensor_to_training_entry
from .storage.jsonl import Problem, StepInfo, TrainingDataReader, TrainingDataWriter, encode_entry
from .logger import SeqVizLogger
from .format.schema import SCHEMA_VERSION, SchemaValidationError, validate_entry

__all__ = [
    "tensor_to_training_entry", "extract_batch_sample", "TrainingDataWriter", "TrainingDataReader", "SeqVizLogger",
    "validate_entry", "SchemaValidationError", "encode_entry", "StepInfo", "Problem", "SCHEMA_VERSION",
    "__version__",
]
