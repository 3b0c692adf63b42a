"""Vision Transformer (pre-LN), numerically matching timm `vit_base_patch16_224`.

Inputs are NHWC images [B, H, W, C]. Param tree (D = width, p = patch_size, N = number of patches):

    embedding/kernel            [p, p, C, D]   timm patch_embed.proj.weight [D, C, p, p] (OIHW -> HWIO)
    embedding/bias              [D]            patch_embed.proj.bias
    cls                         [1, 1, D]      cls_token
    pos_embedding               [1, 1 + N, D]  pos_embed
    encoderblock_{i}/norm1/{scale, bias}       blocks.{i}.norm1.{weight, bias}
    encoderblock_{i}/attn/qkv/{kernel [D, 3D], bias [3D]}   blocks.{i}.attn.qkv (weight transposed;
                                               output columns split into q, k, v in that order)
    encoderblock_{i}/attn/out/{kernel [D, D], bias}         blocks.{i}.attn.proj
    encoderblock_{i}/norm2/{scale, bias}       blocks.{i}.norm2
    encoderblock_{i}/mlp/fc1/{kernel [D, M], bias}          blocks.{i}.mlp.fc1
    encoderblock_{i}/mlp/fc2/{kernel [M, D], bias}          blocks.{i}.mlp.fc2
    encoder_norm/{scale, bias}                 norm (pool 'cls') or fc_norm (pool 'mean')

The tree is the same with remat on or off. Pooling:
- 'cls': tokens after the final norm, pooled = token 0 (timm global_pool='token').
- 'mean': mean of the patch tokens (cls excluded), then the final norm on the pooled vector; the returned
  tokens are un-normalised. This is timm global_pool='avg', where `norm` is Identity and `fc_norm` is
  applied after pooling; a timm importer maps `fc_norm` to `encoder_norm` for such models.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from phenolip_jax.models import layers, posemb

Array = jax.Array

# Size presets (big_vision naming); every field stays overridable.
PRESETS: dict[str, dict[str, int]] = {
    "Ti/16": dict(width=192, depth=12, num_heads=3, mlp_dim=768, patch_size=16),
    "S/16": dict(width=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16),
    "B/16": dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16),
    "B/32": dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=32),
    "L/14": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=14),
    "L/16": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=16),
}

_XAVIER = nn.initializers.xavier_uniform()


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) from an int or a pair."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class MlpBlock(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout (timm Mlp)."""

    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Apply the MLP to x [..., D]."""
        dense = lambda f, name: nn.Dense(  # noqa: E731
            f, kernel_init=_XAVIER, bias_init=nn.initializers.normal(1e-6),
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        y = nn.Dropout(self.dropout)(layers.gelu(dense(self.mlp_dim, "fc1")(x)), deterministic=not train)
        return nn.Dropout(self.dropout)(dense(x.shape[-1], "fc2")(y), deterministic=not train)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    attention: str = "xla"
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Apply one block to tokens x [B, T, D]."""
        norm = lambda name: nn.LayerNorm(  # noqa: E731  (flax keeps LayerNorm statistics in fp32)
            epsilon=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        y = layers.SelfAttention(
            num_heads=self.num_heads, fused_qkv=True, attention_dropout=self.attention_dropout,
            attention=self.attention, kernel_init=_XAVIER, dtype=self.dtype,
            param_dtype=self.param_dtype, name="attn")(norm("norm1")(x), None, train)
        x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="mlp")(norm("norm2")(x), train)
        return x + y


class ViT(nn.Module):
    """ViT image encoder; __call__ returns (tokens [B, 1 + N, D], pooled [B, D])."""

    image_size: int | Sequence[int] = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    pool: str = "cls"  # 'cls' | 'mean'; see the module docstring
    norm_eps: float = 1e-6
    dropout: float = 0.0  # timm proj_drop / pos_drop
    attention_dropout: float = 0.0  # timm attn_drop
    posemb_interpolation: str = "bicubic"  # 'bicubic' | 'bilinear', for inputs of another size
    posemb_antialias: bool = True  # True: timm's resample_abs_pos_embed; False: HF ViTModel
    remat: str | bool = "none"  # layers.REMAT_POLICIES ('none' | 'full' | 'save_dots'); bools: 'full' / 'none'
    attention: str = "xla"  # 'auto' | 'xla' | 'cudnn' | 'splash' (layers.resolve_attention)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> tuple[Array, Array]:
        """Encode NHWC images; other sizes than image_size get resampled position embeddings."""
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"unknown pool {self.pool!r}; expected 'cls' or 'mean'")
        x = nn.Conv(self.width, (self.patch_size, self.patch_size), strides=(self.patch_size, self.patch_size),
                    padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype, name="embedding")(images)
        batch, gh, gw, _ = x.shape
        x = x.reshape(batch, gh * gw, self.width)

        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width)), x], axis=1)

        base_grid = tuple(s // self.patch_size for s in _pair(self.image_size))
        pos = self.param("pos_embedding", nn.initializers.normal(0.02),
                         (1, 1 + base_grid[0] * base_grid[1], self.width), self.param_dtype)
        if (gh, gw) != base_grid:
            pos = posemb.resize_pos_embed(pos, (gh, gw), base_grid, 1, self.posemb_interpolation,
                                          self.posemb_antialias)
        x = nn.Dropout(self.dropout)(x + pos.astype(x.dtype), deterministic=not train)

        # static_argnums counts self: (self, x, train) -> train is 2.
        block_cls = layers.remat_block(EncoderBlock, self.remat, static_argnums=(2,))
        for i in range(self.depth):
            x = block_cls(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                          attention_dropout=self.attention_dropout, attention=self.attention,
                          norm_eps=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                          name=f"encoderblock_{i}")(x, train)

        norm = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="encoder_norm")
        if self.pool == "cls":
            x = norm(x)
            return x, x[:, 0]
        return x, norm(jnp.mean(x[:, 1:].astype(jnp.float32), axis=1).astype(x.dtype))


def vit_kwargs(cfg: Mapping[str, Any] | Any = None) -> dict[str, Any]:
    """ViT field values from a config; an optional 'variant' key (e.g. 'B/16') supplies preset sizes."""
    kwargs = layers.to_dict(cfg)
    variant = kwargs.pop("variant", None)
    if variant is not None:
        if variant not in PRESETS:
            raise ValueError(f"unknown ViT variant {variant!r}; known: {sorted(PRESETS)}")
        kwargs = {**PRESETS[variant], **kwargs}
    for key in ("dtype", "param_dtype"):
        if key in kwargs:
            kwargs[key] = layers.canonical_dtype(kwargs[key])
    if isinstance(kwargs.get("image_size"), list):
        kwargs["image_size"] = tuple(kwargs["image_size"])
    return kwargs


def from_config(cfg: Mapping[str, Any] | Any = None) -> ViT:
    """Build a ViT from a dict / ConfigDict of its fields (plus optional 'variant')."""
    return ViT(**vit_kwargs(cfg))
