"""BatchCapture on its own: the captured rows are held as their JSON until written, and the
line written is the one the same rows as dicts would make."""

from __future__ import annotations

import json

import pytest
import torch

from seqviz_trackers.capture import BatchCapture, CaptureOptions, _renamed
from seqviz_trackers.convert import tensor_to_training_entry
from seqviz_trackers.format.schema import SchemaValidationError, validate_entry
from seqviz_trackers.storage.batches import captured_sequences, encode_batch
from seqviz_trackers.storage.jsonl import EncodedJSON, client_json

from factories import HOSTILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def captured_step(rows: int = 6, length: int = 12, vocab: int = 50):
    torch.manual_seed(0)
    logits = torch.randn(rows, length, vocab)
    ids = torch.randint(0, vocab, (rows, length))
    cap = BatchCapture(CaptureOptions(every=1, top_rows=2, random_rows=2))
    cap.add(logits, ids, step=3)
    return logits, ids, cap.finish(3)


def test_captured_rows_are_kept_as_json_and_read_back_as_the_converter_makes_them():
    logits, ids, record = captured_step()
    held = record["capture"]["sequences"]
    rows = record["capture"]["metadata"]["rows"]
    assert len(held) == len(rows) >= 2 and all(isinstance(s, EncodedJSON) for s in held)
    for seq, row in zip(captured_sequences(record), rows):
        alone = tensor_to_training_entry(logits[row:row + 1], ids[row:row + 1], None, step=3)["sequences"][0]
        assert seq == {"name": f"row {row}", **alone}


def test_the_line_written_is_that_of_the_same_rows_as_dicts():
    _logits, _ids, record = captured_step()
    as_dicts = {**record, "capture": {**record["capture"], "sequences": captured_sequences(record)}}
    line = encode_batch(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(encode_batch(as_dicts))
    assert list(json.loads(line))[:4] == ["step", "timestamp", "loss", "perplexity"]  # the header first
    validate_entry(json.loads(line)["capture"])


def test_a_bad_captured_entry_is_refused_with_its_path_whichever_form_its_rows_have():
    _logits, _ids, record = captured_step()
    bad = {**record, "capture": {**record["capture"], "metadata": "not an object"}}
    with pytest.raises(SchemaValidationError) as info:
        encode_batch(bad)
    assert info.value.path.startswith("$.capture.metadata")
    dict_rows = {**bad, "capture": {**bad["capture"], "sequences": captured_sequences(record)}}
    with pytest.raises(SchemaValidationError):
        encode_batch(dict_rows)
    with pytest.raises(SchemaValidationError):
        encode_batch({**record, "capture": ["not", "an", "entry"]})


class Pieces:
    """A tokenizer whose pieces are hostile text: markup, quotes, line separators, a lone surrogate."""

    pieces = [HOSTILE, '"\\', "\u2028x\n", "\ud800", "é", "\x00"]

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i % len(self.pieces)] + str(i) for i in ids]


def test_sequences_as_json_are_the_bytes_of_the_dicts():
    torch.manual_seed(1)
    logits = torch.randn(3, 23, 40)  # the converter's blocks of positions span sequences
    logits[1, 2, 7] = float("-inf")  # a target the model cannot produce: no loss at that position
    ids = torch.randint(0, 40, (3, 23))
    ids[1, 3] = 7
    mask = torch.ones(3, 23, dtype=torch.long)
    mask[0, :2] = 0  # left padding
    labels = ids.clone()
    labels[2, 4:6] = -100
    kwargs = dict(step=5, top_k=6, attention_mask=mask, labels=labels, names=["a", HOSTILE, "c"], timestamp=1.0)
    as_dicts = tensor_to_training_entry(logits, ids, Pieces(), **kwargs)
    as_json = tensor_to_training_entry(logits, ids, Pieces(), **kwargs, as_json=True)
    assert all(isinstance(s, EncodedJSON) for s in as_json["sequences"])
    assert [bytes(s) for s in as_json["sequences"]] == [client_json(s) for s in as_dicts["sequences"]]
    assert "loss" not in as_dicts["sequences"][1]["predictions"][2]
    assert {k: v for k, v in as_json.items() if k != "sequences"} == {k: v for k, v in as_dicts.items() if k != "sequences"}


def test_a_row_of_another_rank_is_renamed_by_its_row_in_the_gathered_batch():
    held = EncodedJSON(b'{"name":"row 3","tokens":["a,b"],"predictions":[]}')
    renamed = _renamed(held, 11)
    assert isinstance(renamed, EncodedJSON)
    assert json.loads(renamed) == {"name": "row 11", "tokens": ["a,b"], "predictions": []}
