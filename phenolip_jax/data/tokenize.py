"""Caption tokenisation with a Hugging Face tokenizer (loaded by `artifacts.load_tokenizer`), plus a grain transform."""
from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np


def count_tokens(tokenizer, text: str) -> int:
    """Length in tokens including special tokens, before any truncation."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


def tokenize_captions(tokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (input_ids int32 [N,L], attention_mask int32 [N,L]), truncated and padded to L=max_len."""
    enc = tokenizer(list(texts), max_length=max_len, truncation=True, padding="max_length",
                    return_attention_mask=True)
    return (np.asarray(enc["input_ids"], np.int32).reshape(len(texts), max_len),
            np.asarray(enc["attention_mask"], np.int32).reshape(len(texts), max_len))


def pad_ids(ids: Sequence[int], max_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Unpadded ids -> (input_ids, attention_mask) int32 [max_len], padded as `tokenize_captions` pads."""
    n = min(len(ids), max_len)
    out = np.full((max_len,), pad_id, np.int32)
    out[:n] = np.asarray(ids[:n], np.int32)
    mask = np.zeros((max_len,), np.int32)
    mask[:n] = 1
    return out, mask


class Tokenize(grain.transforms.Map):
    """Replaces element['caption'] (str) by input_ids / attention_mask int32 [max_len]; uses the ids stored at
    pack time (`stored_ids`, checked against this tokenizer and max_len by the data source) when present."""

    def __init__(self, tokenizer, max_len: int, key: str = "caption"):
        self.tokenizer, self.max_len, self.key = tokenizer, max_len, key
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        element = dict(element)
        caption, stored = element.pop(self.key), element.pop("stored_ids", None)
        ids, mask = self.batch([caption], [stored])
        element["input_ids"], element["attention_mask"] = ids[0], mask[0]
        return element

    def batch(self, captions: Sequence[str], stored: Sequence[Sequence[int] | None]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) int32 [B, max_len]: the stored ids where given, the rest tokenised in one call."""
        ids = np.full((len(captions), self.max_len), self.pad_id, np.int32)
        mask = np.zeros((len(captions), self.max_len), np.int32)
        todo = [row for row, s in enumerate(stored) if s is None]
        for row, s in enumerate(stored):
            if s is not None:
                ids[row], mask[row] = pad_ids(s, self.max_len, self.pad_id)
        if todo:
            ids[todo], mask[todo] = tokenize_captions(self.tokenizer, [captions[r] for r in todo], self.max_len)
        return ids, mask
