"""Teacher caption embeddings computed once: a resumable side table in the workdir, keyed by caption hash.

The stage-1 teacher is frozen and captions are not augmented, so its embedding of a caption never changes.
`build_table` encodes every training caption once, in chunks written as `part-NNNNN.npz` (keys + float32
embeddings) under a directory named by the teacher's identity (`teacher_identity`: its parameters,
tower config, vocabulary and context). A killed pass resumes where it stopped; another teacher gets
another directory, so a stale table is never read.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def caption_key(text: str) -> str:
    """The table key of a caption: sha256 of its UTF-8 text (hex, 32 chars)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def teacher_identity(params: Any, meta: dict[str, Any], vocab: str, max_len: int) -> str:
    """A 16-hex-char id of what determines the teacher's embeddings: params bytes, tower config, vocab, context."""
    import jax  # the params are a pytree; jax only walks it here

    h = hashlib.sha256(json.dumps([meta, vocab, int(max_len)], sort_keys=True, default=str).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


class EmbeddingTable:
    """caption text -> its teacher embedding (float32 [D]), by caption hash; picklable for grain workers."""

    def __init__(self, keys: Sequence[str], emb: np.ndarray):
        self.emb = np.asarray(emb, np.float32)
        self.row = {k: i for i, k in enumerate(keys)}
        if len(self.row) != len(self.emb):
            raise ValueError(f"embedding table: {len(self.row)} distinct keys for {len(self.emb)} rows")

    def __len__(self) -> int:
        return len(self.row)

    def lookup(self, caption: str) -> np.ndarray:
        """The caption's embedding; KeyError when the precompute pass did not see it."""
        i = self.row.get(caption_key(caption))
        if i is None:
            raise KeyError(f"caption {caption[:60]!r} is not in the teacher embedding table "
                           "(precomputed for the training captions only; use config.teacher.embeddings='on_the_fly')")
        return self.emb[i]


def _read_parts(directory: str) -> tuple[list[str], list[np.ndarray]]:
    keys, embs = [], []
    for path in sorted(glob.glob(os.path.join(directory, "part-*.npz"))):
        with np.load(path) as part:
            keys.extend(str(k) for k in part["keys"])
            embs.append(part["emb"])
    return keys, embs


def _write_part(directory: str, index: int, keys: list[str], emb: np.ndarray) -> None:
    # Written under a temporary name then renamed: a killed pass leaves whole parts only.
    path = os.path.join(directory, f"part-{index:05d}.npz")
    with open(path + ".tmp", "wb") as f:
        np.savez(f, keys=np.asarray(keys), emb=np.asarray(emb, np.float32))
    os.replace(path + ".tmp", path)


def build_table(directory: str, captions: Sequence[str], encode: Callable[[list[str]], np.ndarray], *,
                chunk: int = 4096, write: bool = True, log: Callable[[str], None] = print) -> EmbeddingTable:
    """Embeds every distinct caption not yet in `directory` (chunk by chunk, resumable); returns the whole table.

    `encode(texts) -> [N, D]` runs the teacher. `write=False` (processes other than 0) computes what is
    missing in memory without touching the directory.
    """
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    keys, embs = _read_parts(directory) if os.path.isdir(directory) else ([], [])
    have = set(keys)
    todo: dict[str, str] = {}
    for text in captions:
        k = caption_key(text)
        if k not in have:
            todo.setdefault(k, text)
    total = len(have) + len(todo)
    if not todo:
        log(f"teacher embeddings: all {total} captions already in {directory}")
    elif write:
        os.makedirs(directory, exist_ok=True)
    part_index, t0, pending = len(embs), time.time(), list(todo.items())
    for start in range(0, len(pending), chunk):
        block = pending[start:start + chunk]
        emb = np.asarray(encode([t for _, t in block]), np.float32)
        if write:
            _write_part(directory, part_index, [k for k, _ in block], emb)
        part_index += 1
        keys.extend(k for k, _ in block)
        embs.append(emb)
        done = start + len(block)
        rate = done / max(time.time() - t0, 1e-9)
        log(f"teacher embeddings: {len(have) + done}/{total} captions ({100 * (len(have) + done) / total:.0f}%), "
            f"{rate:.0f} captions/s, eta {(len(pending) - done) / rate:.0f}s")
    emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
    return EmbeddingTable(keys, emb)
