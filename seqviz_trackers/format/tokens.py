"""Token ids to strings a person can read.

Tokenizers store pieces in private alphabets: byte-level BPE (GPT-2, Llama 3) maps
every byte to a printable character (``Ġ`` is a space, ``Ċ`` a newline), SentencePiece
marks a leading space with ``▁`` and spells unknown bytes as ``<0xE2>``. The
dashboard wants the text itself: a space, a newline, a character. A piece that holds
only part of a UTF-8 character is shown as its bytes, ``<0xE2><0x80>``.
"""

from __future__ import annotations

import json
import re
import weakref
from functools import lru_cache
from typing import Any, Sequence

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_cache: "weakref.WeakKeyDictionary[Any, _Decoder]" = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-unicode table (a printable char for every byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _bytes_text(data: bytes) -> str:
    """UTF-8 text of ``data``; bytes that do not form a whole character are shown as ``<0xNN>``."""
    out: list[str] = []
    i = 0
    while i < len(data):
        for size in (1, 2, 3, 4):
            try:
                out.append(data[i:i + size].decode("utf-8"))
            except UnicodeDecodeError:
                continue
            i += size
            break
        else:
            out.append(f"<0x{data[i]:02X}>")
            i += 1
    return "".join(out)


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None) or (tokenizer if hasattr(tokenizer, "to_str") else None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    if type(decoder).__name__ == "ByteLevel":
        return True
    try:  # a Sequence decoder: look inside its serialised form
        return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("decoder"))
    except Exception:
        return False


class _Decoder:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.byte_level = _is_byte_level(tokenizer)
        self.cache: dict[int, str] = {}

    def raw(self, ids: Sequence[int]) -> list[str]:
        """The tokenizer's piece for each id. Raises ValueError when the tokenizer fails or
        does not give one piece per id."""
        tok = self.tokenizer
        name = type(tok).__name__
        if not hasattr(tok, "convert_ids_to_tokens") and not hasattr(tok, "id_to_token"):
            raise TypeError(f"tokenizer {name} has neither convert_ids_to_tokens nor id_to_token")
        try:
            if hasattr(tok, "convert_ids_to_tokens"):
                pieces = list(tok.convert_ids_to_tokens(list(ids)))
            else:  # a bare `tokenizers.Tokenizer`
                pieces = [tok.id_to_token(i) for i in ids]
        except Exception as exc:
            raise ValueError(f"tokenizer {name} failed to turn token ids into pieces ({type(exc).__name__}: {exc})") from exc
        if len(pieces) != len(ids):
            raise ValueError(f"tokenizer {name} returned {len(pieces)} pieces for {len(ids)} token ids")
        return [f"<id {i}>" if p is None else str(p) for i, p in zip(ids, pieces)]

    def text(self, piece: str) -> str:
        if self.byte_level:
            table = _byte_decoder()
            if all(c in table for c in piece):
                return _bytes_text(bytes(table[c] for c in piece))
            return piece  # a special token such as <|endoftext|>
        piece = _BYTE_FALLBACK.sub(lambda m: _bytes_text(bytes([int(m.group(1), 16)])), piece)
        return piece.replace("▁", " ")

    def __call__(self, ids: Sequence[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self.cache})
        if missing:
            for i, piece in zip(missing, self.raw(missing)):
                self.cache[i] = self.text(piece)
        return [self.cache[i] for i in ids]


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable display strings for ``ids`` (cached per tokenizer).

    ``tokenizer`` may be a Hugging Face tokenizer, a bare ``tokenizers.Tokenizer``, or
    None (then each token is shown as its id, ``<id 42>``).
    """
    if tokenizer is None:
        return [f"<id {i}>" for i in ids]
    try:
        decoder = _cache.get(tokenizer)
    except TypeError:  # not weak-referenceable: no cache
        return _Decoder(tokenizer)(ids)
    if decoder is None:
        decoder = _cache[tokenizer] = _Decoder(tokenizer)
    return decoder(ids)
