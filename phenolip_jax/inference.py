"""Batched encoding with fixed shapes (one compilation per tower), used by training-time evaluation."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from phenolip_jax.data.tokenize import tokenize_captions


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] == rows:
        return x
    pad = np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def encode_in_batches(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Applies `fn(*batch)` over row batches padded to `batch_size` (fixed shapes: one compile)."""
    n = arrays[0].shape[0]
    out = []
    for start in range(0, n, batch_size):
        chunk = [_pad_rows(a[start:start + batch_size], batch_size) for a in arrays]
        emb = np.asarray(jax.device_get(fn(*chunk)), np.float32)
        out.append(emb[: min(batch_size, n - start)])
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out, axis=0)


def text_encoder(apply_fn: Callable[..., Any], tokenizer: Any, max_len: int,
                 batch_size: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """Returns `texts -> [N, D]` unit-norm embeddings using `apply_fn(input_ids, attention_mask)`."""
    jitted = jax.jit(apply_fn)

    def encode(texts: Sequence[str]) -> np.ndarray:
        ids, mask = tokenize_captions(tokenizer, list(texts), max_len)
        return encode_in_batches(jitted, [ids, mask], batch_size)

    return encode
