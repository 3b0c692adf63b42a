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


# Attention paths (config field `attention`): 'xla' is the reference; 'cudnn' (GPU) and 'splash' (Pallas,
# TPU) are fused kernels; 'auto' picks the fused kernel of the platform where one exists and applies.
ATTENTION_KINDS = ("auto", "xla", "cudnn", "splash")
FUSED_ATTENTION = ("cudnn", "splash")
SPLASH_BLOCK = 128  # splash attention tiles the sequence in blocks of 128: lengths are padded to a multiple


def resolve_attention(kind: str, platform: str, dropout_rate: float = 0.0, field: str = "model.attention",
                      dtype: Any = None) -> str:
    """The concrete path ('xla' | 'cudnn' | 'splash') for `kind` on `platform` ('tpu', 'gpu', 'cpu', ...).

    'auto' falls back to 'xla' where attention dropout is on (no fused kernel applies it) and, on GPUs,
    where the compute dtype is not 16-bit (cuDNN's kernel is half precision only).
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"config.{field}={kind!r}: use one of {ATTENTION_KINDS}")
    if kind == "auto":
        fused = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}.get(platform, "xla")
        if fused == "cudnn" and dtype is not None and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
            return "xla"
        return "xla" if dropout_rate > 0.0 else fused
    if kind in FUSED_ATTENTION and dropout_rate > 0.0:
        raise ValueError(
            f"config.{field}={kind!r} is a fused kernel and cannot apply attention-probability dropout "
            f"(attention_dropout={dropout_rate}; BERT configs carry 0.1): set the attention dropout to 0 "
            "(config.text.attention_dropout=0.0) or use 'xla'")
    return kind


def _mesh_platform() -> tuple[Any, str]:
    """The abstract mesh set by `jax.set_mesh` (or None) and the platform the step is compiled for."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None, jax.default_backend()
    return mesh, mesh.abstract_device.platform


def key_padding(mask: Array, batch: int, length: int) -> Array:
    """The [B, S] boolean key-padding rows of a [B, 1, 1, S] mask; any other mask form is an error."""
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] != 1 or mask.shape[0] != batch \
            or mask.shape[3] != length or mask.dtype != jnp.bool_:
        raise ValueError(f"fused attention takes a boolean key-padding mask [B, 1, 1, S] = [{batch}, 1, 1, {length}], "
                         f"got {mask.dtype} {tuple(mask.shape)} (no per-query masks or biases)")
    return mask[:, 0, 0, :]


def key_padding_lengths(mask: Array | None, batch: int, length: int) -> Array | None:
    """Valid key counts [B] (int32) from a boolean key-padding mask [B, 1, 1, S] (trailing padding)."""
    return None if mask is None else jnp.sum(key_padding(mask, batch, length), axis=-1, dtype=jnp.int32)


def cudnn_arguments(query: Array, key: Array, value: Array, mask: Array | None) -> dict[str, Any]:
    """Checked keyword arguments of the cuDNN call: half-precision q/k/v and padding as key_value_seq_lengths.

    cuDNN gets no boolean mask or bias (a mask becomes a bias, which cuDNN rejects in training at lengths
    that are not multiples of 64); padding must be trailing, as tokenizers pad.
    """
    dtypes = {query.dtype, key.dtype, value.dtype}
    if len(dtypes) != 1 or query.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"attention='cudnn' needs bfloat16 or float16 q/k/v (config model dtype), got "
                         f"{sorted(str(d) for d in dtypes)}")
    if query.ndim != 4 or key.shape != value.shape or query.shape[0] != key.shape[0]:
        raise ValueError(f"attention='cudnn' needs [B, T, heads, head_dim] q/k/v, got {query.shape}, {key.shape}, "
                         f"{value.shape}")
    lengths = key_padding_lengths(mask, key.shape[0], key.shape[1])
    return dict(key_value_seq_lengths=lengths, implementation="cudnn")


def splash_attention(query: Array, key: Array, value: Array, mask: Array | None) -> Array:
    """Pallas TPU splash attention on [B, T, heads, head_dim]; T padded to 128s, padding masked.

    Padding (the caller's and ours) gets segment id 0, real tokens 1: a query attends within its segment,
    so padded query rows see only padding keys (never an empty row) and real rows never see padding.
    Under a mesh (jax.set_mesh) the kernel runs per device with shard_map over the batch; off TPU it runs
    in Pallas interpret mode (tests).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    batch, length, heads, head_dim = query.shape
    padded = -(-length // SPLASH_BLOCK) * SPLASH_BLOCK
    valid = jnp.ones((batch, length), bool) if mask is None else key_padding(mask, batch, length)
    segments = jnp.pad(valid.astype(jnp.int32), ((0, 0), (0, padded - length)))
    # [B, T, H, D] -> [B, H, Tp, D]; splash does not scale the logits.
    prep = lambda x: jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # noqa: E731
    q = prep(query * jnp.asarray(1.0 / np.sqrt(head_dim), query.dtype))
    k, v = prep(key), prep(value)
    mesh, platform = _mesh_platform()
    kernel = splash.make_splash_mha(
        splash_mask.MultiHeadMask([splash_mask.FullMask((padded, padded))] * heads),
        head_shards=1, q_seq_shards=1, interpret=platform != "tpu")

    def per_device(q, k, v, seg):
        one = lambda q1, k1, v1, s1: kernel(q1, k1, v1, segment_ids=splash.SegmentIds(q=s1, kv=s1))  # noqa: E731
        return jax.vmap(one)(q, k, v, seg)

    if mesh is not None and batch % mesh.size == 0:
        spec = jax.sharding.PartitionSpec(tuple(mesh.axis_names))
        per_device = jax.shard_map(per_device, in_specs=(spec, spec, spec, spec), out_specs=spec, check_vma=False)
    out = per_device(q, k, v, segments)
    return out.transpose(0, 2, 1, 3)[:, :length].astype(query.dtype)


def attend(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None,
    *,
    attention: str = "xla",
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """Scaled dot-product attention on [B, T, heads, head_dim] inputs; softmax statistics in fp32.

    mask: boolean, broadcastable to [B, heads, T, S] (the fused paths take key padding [B, 1, 1, S] only).
    """
    kind = resolve_attention(attention, _mesh_platform()[1], dropout_rate if dropout_rng is not None else 0.0,
                             field="attention", dtype=query.dtype)
    if kind == "splash":
        return splash_attention(query, key, value, mask)
    if kind == "cudnn":
        return jax.nn.dot_product_attention(query, key, value, **cudnn_arguments(query, key, value, mask))
    if dropout_rate > 0.0 and dropout_rng is not None:
        # jax.nn.dot_product_attention has no attention-probability dropout, so training with it
        # takes this explicit (unfused) path.
        scale = 1.0 / np.sqrt(query.shape[-1])
        logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32) * scale
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(value.dtype)
        return jnp.einsum("bnts,bsnh->btnh", probs, value)
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")


class SelfAttention(nn.Module):
    """Multi-head self-attention with either a fused qkv projection (timm) or separate q/k/v (HF BERT)."""

    num_heads: int
    fused_qkv: bool = True
    use_bias: bool = True
    attention_dropout: float = 0.0
    attention: str = "xla"  # 'auto' | 'xla' | 'cudnn' | 'splash' (see resolve_attention)
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
        y = attend(q, k, v, mask, attention=self.attention,
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
