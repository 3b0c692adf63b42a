"""Building blocks shared by the ViT and BERT encoders: attention, MLP, projection head, helpers."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax.config_lib import REMAT_POLICIES

Array = jax.Array
Dtype = Any


def gelu(x: Array) -> Array:
    """Exact (erf) GELU, as PyTorch nn.GELU, timm and Hugging Face BERT use."""
    # jax.nn.gelu defaults to the tanh approximation, which breaks parity with torch weights.
    return jax.nn.gelu(x, approximate=False)


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """L2-normalise the last axis in fp32 (bf16 norms are too coarse for similarity logits)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Turn a dict / FrozenDict / ml_collections ConfigDict (or None) into a plain dict."""
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return dict(cfg.to_dict())
    return dict(cfg)


def freeze_config(cfg: Mapping[str, Any] | None) -> Any:
    """Hashable form of a nested config field, so modules holding one stay hashable (jit static args)."""
    from flax.core import FrozenDict

    def freeze(value: Any) -> Any:
        if isinstance(value, Mapping) or hasattr(value, "to_dict"):
            return FrozenDict({k: freeze(v) for k, v in to_dict(value).items()})
        if isinstance(value, list):
            return tuple(freeze(v) for v in value)
        return value

    return freeze(cfg if cfg is not None else {})


def canonical_dtype(dtype: Any) -> Any:
    """Accept dtypes spelled as strings in configs ('bfloat16') as well as numpy/jnp dtypes."""
    return None if dtype is None else jnp.dtype(dtype)


# Activation rematerialisation of transformer blocks: 'none' keeps every activation for the backward pass;
# 'full' keeps only each block's input and recomputes the rest; 'save_dots' keeps the matmul outputs (those
# without batch dimensions, i.e. the dense layers) and recomputes the cheap elementwise ops and attention.


def remat_block(block: type[nn.Module], policy: str | bool, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """`block` wrapped by nn.remat per `policy` (one of REMAT_POLICIES; True/False mean 'full'/'none')."""
    if isinstance(policy, bool):  # model_config.json files written before the policies were named
        policy = "full" if policy else "none"
    if policy == "none":
        return block
    if policy == "full":
        return nn.remat(block, static_argnums=static_argnums)
    if policy == "save_dots":
        return nn.remat(block, static_argnums=static_argnums,
                        policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"remat={policy!r}: use one of {REMAT_POLICIES}")


def attend(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    *,
    implementation: str | None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """Scaled dot-product attention on [B, T, heads, head_dim] inputs; softmax statistics in fp32."""
    if dropout_rate > 0.0 and dropout_rng is not None:
        # jax.nn.dot_product_attention has no attention-probability dropout, so training with it
        # takes this explicit (unfused) path; inference and dropout-free training stay fused.
        scale = 1.0 / np.sqrt(query.shape[-1])
        logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32) * scale
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(value.dtype)
        return jnp.einsum("bnts,bsnh->btnh", probs, value)
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)


class SelfAttention(nn.Module):
    """Multi-head self-attention with either a fused qkv projection (timm) or separate q/k/v (HF BERT)."""

    num_heads: int
    fused_qkv: bool = True
    use_bias: bool = True
    attention_dropout: float = 0.0
    attention_impl: str | None = None
    kernel_init: Any = nn.initializers.xavier_uniform()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, train: bool = False) -> Array:
        """Attend x [B, T, D] to itself; mask is boolean, broadcastable to [B, heads, T, T]."""
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, use_bias=self.use_bias, kernel_init=self.kernel_init,
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        batch, length = x.shape[:2]
        if self.fused_qkv:
            # Output columns are laid out [3, heads, head_dim], as timm's attn.qkv splits them.
            qkv = dense(3 * width, "qkv")(x).reshape(batch, length, 3, self.num_heads, head_dim)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        else:
            split = lambda y: y.reshape(batch, length, self.num_heads, head_dim)  # noqa: E731
            q, k, v = (split(dense(width, n)(x)) for n in ("query", "key", "value"))
        rng = self.make_rng("dropout") if (train and self.attention_dropout > 0.0) else None
        y = attend(q, k, v, mask, implementation=self.attention_impl,
                   dropout_rate=self.attention_dropout, dropout_rng=rng)
        return dense(width, "out")(y.reshape(batch, length, width))


class ProjectionHead(nn.Module):
    """Projection from an encoder's pooled vector to the shared embedding space.

    kind 'linear': Dense 'proj'; 'mlp': Dense 'fc1' -> exact GELU -> Dense 'fc2'; 'none': identity.
    """

    kind: str = "linear"
    out_dim: int = 512
    hidden_dim: int | None = None
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Project x [B, D] to [B, out_dim] (or return it unchanged for kind 'none')."""
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        if self.kind == "none":
            return x
        if self.kind == "linear":
            return dense(self.out_dim, "proj")(x)
        if self.kind == "mlp":
            hidden = self.hidden_dim if self.hidden_dim is not None else x.shape[-1]
            return dense(self.out_dim, "fc2")(gelu(dense(hidden, "fc1")(x)))
        raise ValueError(f"unknown head kind {self.kind!r}; expected 'linear', 'mlp' or 'none'")
