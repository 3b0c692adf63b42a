"""Resampling of learned ViT position embeddings to another patch grid, with PyTorch's exact semantics.

The resize is separable: for each spatial axis a [new, old] weight matrix is built in NumPy (shapes are
static) and applied with einsum, so the result reproduces `torch.nn.functional.interpolate(...,
align_corners=False)` bit for bit up to float rounding:

- antialias=False, 'bicubic': Keys cubic with a = -0.75, edge samples clamped (Hugging Face ViTModel's
  `interpolate_pos_encoding`, older timm `resize_pos_embed`).
- antialias=True, 'bicubic': PIL-style filter with a = -0.5, weights renormalised at the edges (timm's
  `resample_abs_pos_embed` default, used both for checkpoint conversion and `dynamic_img_size`).
- 'bilinear' in both variants likewise.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("bicubic", "bilinear")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution kernel with parameter a."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _plain_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    """torch interpolate without antialias: fixed-width taps, out-of-range taps clamped to the edge."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        src = scale * (i + 0.5) - 0.5
        if method == "bilinear":
            src = max(src, 0.0)  # torch clamps the linear source index, not the cubic one
            i0 = int(math.floor(src))
            i1 = min(i0 + 1, in_size - 1)
            frac = src - i0
            weights[i, i0] += 1.0 - frac
            weights[i, i1] += frac
        else:
            i0 = int(math.floor(src))
            frac = src - i0
            taps = np.arange(i0 - 1, i0 + 3)
            w = _cubic(frac - (taps - i0), -0.75)
            for tap, wt in zip(np.clip(taps, 0, in_size - 1), w):
                weights[i, tap] += wt
    return weights


def _antialias_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    """torch interpolate with antialias=True (PIL's resampling): filter widened when downsampling."""
    scale = in_size / out_size
    support = (2.0 if method == "bicubic" else 1.0) * max(scale, 1.0)
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    filt = (lambda x: _cubic(x, -0.5)) if method == "bicubic" else (lambda x: np.maximum(0.0, 1.0 - np.abs(x)))
    weights = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = filt((taps - center + 0.5) * inv)
        total = w.sum()
        weights[i, lo:hi] = w / total if total != 0.0 else w
    return weights


def resize_matrix(in_size: int, out_size: int, method: str = "bicubic", antialias: bool = False) -> np.ndarray:
    """[out_size, in_size] weights of a 1-D resize as torch F.interpolate(align_corners=False) does it."""
    if method not in METHODS:
        raise ValueError(f"unknown interpolation {method!r}; expected one of {METHODS}")
    if in_size == out_size:
        return np.eye(in_size)
    build = _antialias_matrix if antialias else _plain_matrix
    return build(in_size, out_size, method)


def resize_grid(grid: jax.Array, new_hw: Sequence[int], method: str = "bicubic", antialias: bool = False) -> jax.Array:
    """Resize a [..., H, W, D] grid of embeddings to [..., new_h, new_w, D]."""
    h, w = grid.shape[-3], grid.shape[-2]
    mh = jnp.asarray(resize_matrix(h, int(new_hw[0]), method, antialias), jnp.float32)
    mw = jnp.asarray(resize_matrix(w, int(new_hw[1]), method, antialias), jnp.float32)
    out = jnp.einsum("ih,...hwd->...iwd", mh, grid.astype(jnp.float32), precision="highest")
    out = jnp.einsum("jw,...iwd->...ijd", mw, out, precision="highest")
    return out.astype(grid.dtype)


def resize_pos_embed(
    pos_embedding: jax.Array,
    new_grid: Sequence[int],
    old_grid: Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    method: str = "bicubic",
    antialias: bool = True,
) -> jax.Array:
    """Resample [1, prefix + h*w, D] position embeddings to the patch grid new_grid (prefix rows kept).

    Defaults follow timm's `resample_abs_pos_embed` (bicubic, antialias); pass antialias=False to match
    Hugging Face ViTModel. old_grid defaults to a square grid.
    """
    prefix, grid = pos_embedding[:, :num_prefix_tokens], pos_embedding[:, num_prefix_tokens:]
    n, dim = grid.shape[1], grid.shape[2]
    if old_grid is None:
        side = int(round(math.sqrt(n)))
        if side * side != n:
            raise ValueError(f"{n} grid positions are not a square; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {tuple(old_grid)} does not hold {n} positions")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embedding
    grid = grid.reshape(grid.shape[0], old_grid[0], old_grid[1], dim)
    grid = resize_grid(grid, new_grid, method, antialias)
    grid = grid.reshape(grid.shape[0], new_grid[0] * new_grid[1], dim)
    return jnp.concatenate([prefix, grid.astype(pos_embedding.dtype)], axis=1)
