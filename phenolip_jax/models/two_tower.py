"""Image tower, text tower (also the stage-1 knowledge encoder) and the CLIP-style TwoTower.

Param trees:

    ImageTower: encoder/...  (ViT tree, see vit.py)   head/proj/kernel [D, E]          (head 'linear')
                                                      head/fc1/{kernel, bias?}, head/fc2/... (head 'mlp')
    TextTower:  encoder/...  (BERT tree, see bert.py) head/... as above
    TwoTower:   image/... (ImageTower tree), text/... (TextTower tree, identical to a standalone
                TextTower, so a stage-1 checkpoint drops in), logit_scale [] (log of the multiplier),
                logit_bias [] (only when logit_bias_init is not None)

BiomedCLIP in these terms: image head 'linear' 768->512 without bias (visual.head.proj), text head 'mlp'
768->640->512 without biases (text.proj.0 / text.proj.2). Stage-1 knowledge encoder (KEP): TextTower with
head 'mlp' 768->512->512 with biases. Embeddings are L2-normalised in fp32.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import layers
from phenolip_jax.models import vit as vit_lib

Array = jax.Array


def _check_no_dtype(cfg: Mapping[str, Any], owner: str) -> None:
    """The tower's own dtype fields are the single source of truth for its encoder."""
    clash = {"dtype", "param_dtype"} & set(cfg)
    if clash:
        raise ValueError(f"set {sorted(clash)} on the {owner}, not inside its encoder config")


def _head(tower: Any) -> layers.ProjectionHead:
    """The tower's projection head, named 'head' in the param tree."""
    return layers.ProjectionHead(
        kind=tower.head, out_dim=tower.embed_dim, hidden_dim=tower.head_hidden_dim, use_bias=tower.head_bias,
        dtype=tower.dtype, param_dtype=tower.param_dtype, name="head")


class ImageTower(nn.Module):
    """ViT -> projection head -> L2 normalisation."""

    vit: Mapping[str, Any] | None = None  # ViT fields (an optional 'variant' key selects a preset)
    head: str = "linear"  # 'linear' | 'mlp' | 'none'
    embed_dim: int = 512
    head_hidden_dim: int | None = None  # 'mlp' only; defaults to the encoder width
    head_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        # Frozen so that the module stays hashable (jit static args, nn.remat).
        object.__setattr__(self, "vit", layers.freeze_config(self.vit))
        super().__post_init__()

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        """Unit-norm embeddings [B, E] (fp32) of NHWC images."""
        cfg = vit_lib.vit_kwargs(self.vit)
        _check_no_dtype(cfg, "ImageTower")
        _, pooled = vit_lib.ViT(**cfg, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(images, train)
        return layers.l2_normalize(_head(self)(pooled))


class TextTower(nn.Module):
    """BERT -> projection head -> L2 normalisation; also the stage-1 knowledge encoder."""

    bert: Mapping[str, Any] | None = None  # BERT fields (see bert.BERT / bert.config_from_hf)
    head: str = "mlp"  # 'linear' | 'mlp' | 'none'
    embed_dim: int = 512
    head_hidden_dim: int | None = None  # 'mlp' only; defaults to the encoder width
    head_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "bert", layers.freeze_config(self.bert))
        super().__post_init__()

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, train: bool = False) -> Array:
        """Unit-norm embeddings [B, E] (fp32) of token ids [B, S] (attention_mask: 1 keep, 0 pad)."""
        cfg = bert_lib.bert_kwargs(self.bert)
        _check_no_dtype(cfg, "TextTower")
        encoder = bert_lib.BERT(**cfg, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")
        _, pooled = encoder(input_ids, attention_mask, None, train)
        return layers.l2_normalize(_head(self)(pooled))


class TwoTower(nn.Module):
    """CLIP-style model: image tower 'image', text tower 'text', learnable logit scale (and bias)."""

    image_config: Mapping[str, Any] | None = None  # ImageTower fields except dtype/param_dtype
    text_config: Mapping[str, Any] | None = None  # TextTower fields except dtype/param_dtype
    logit_scale_init: float = math.log(1 / 0.07)  # stored as log; KEP stage 2 uses log(1 / 0.04)
    logit_bias_init: float | None = None  # e.g. -10 for a sigmoid loss; None: no bias parameter
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_config", layers.freeze_config(self.image_config))
        object.__setattr__(self, "text_config", layers.freeze_config(self.text_config))
        super().__post_init__()

    def setup(self) -> None:
        image_cfg, text_cfg = dict(self.image_config), dict(self.text_config)
        _check_no_dtype(image_cfg, "TwoTower")
        _check_no_dtype(text_cfg, "TwoTower")
        self.image = ImageTower(**image_cfg, dtype=self.dtype, param_dtype=self.param_dtype)
        self.text = TextTower(**text_cfg, dtype=self.dtype, param_dtype=self.param_dtype)

    def encode_image(self, images: Array, train: bool = False) -> Array:
        """Unit-norm image embeddings [B, E]."""
        return self.image(images, train)

    def encode_text(self, input_ids: Array, attention_mask: Array | None = None, train: bool = False) -> Array:
        """Unit-norm text embeddings [B, E]."""
        return self.text(input_ids, attention_mask, train)

    @nn.compact
    def __call__(self, images: Array, input_ids: Array, attention_mask: Array | None = None,
                 train: bool = False) -> dict[str, Array | None]:
        """Both embeddings plus logit_scale = exp(stored log scale) and logit_bias (or None).

        The scale is returned as the multiplier (open_clip convention); clamping it is the loss's job.
        """
        # Scalars are created here rather than in setup so that encode_image / encode_text can be
        # applied with only that tower's params.
        log_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), (), jnp.float32)
        bias = None
        if self.logit_bias_init is not None:
            bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), (), jnp.float32)
        return dict(image=self.encode_image(images, train), text=self.encode_text(input_ids, attention_mask, train),
                    logit_scale=jnp.exp(log_scale), logit_bias=bias)


def _tower_kwargs(cfg: Any) -> dict[str, Any]:
    """Tower field values from a dict / ConfigDict with dtype strings canonicalised."""
    kwargs = layers.to_dict(cfg)
    for key in ("dtype", "param_dtype"):
        if key in kwargs:
            kwargs[key] = layers.canonical_dtype(kwargs[key])
    return kwargs


def image_tower_from_config(cfg: Mapping[str, Any] | Any) -> ImageTower:
    """ImageTower from a dict / ConfigDict of its fields (cfg.vit holds the ViT fields)."""
    return ImageTower(**_tower_kwargs(cfg))


def text_tower_from_config(cfg: Mapping[str, Any] | Any) -> TextTower:
    """TextTower from a dict / ConfigDict of its fields (cfg.bert holds the BERT fields)."""
    return TextTower(**_tower_kwargs(cfg))


def from_config(cfg: Mapping[str, Any] | Any) -> TwoTower:
    """TwoTower from a dict / ConfigDict with image_config / text_config sub-dicts."""
    return TwoTower(**_tower_kwargs(cfg))
