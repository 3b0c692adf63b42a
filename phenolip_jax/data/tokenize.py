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


class Tokenize(grain.transforms.Map):
    """Replaces element['caption'] (str) by input_ids / attention_mask int32 [max_len]."""

    def __init__(self, tokenizer, max_len: int, key: str = "caption"):
        self.tokenizer, self.max_len, self.key = tokenizer, max_len, key

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        element = dict(element)
        ids, mask = tokenize_captions(self.tokenizer, [element.pop(self.key)], self.max_len)
        element["input_ids"], element["attention_mask"] = ids[0], mask[0]
        return element
