"""BERT encoder as in Hugging Face `BertModel` (post-LN), with CLS / masked-mean / pooler pooling.

Param tree (D = width, M = mlp_dim; HF names on the right, Linear weights transposed to kernels):

    embeddings/word_embeddings/embedding        [V, D]   embeddings.word_embeddings.weight
    embeddings/position_embeddings/embedding    [P, D]   embeddings.position_embeddings.weight
    embeddings/token_type_embeddings/embedding  [T, D]   embeddings.token_type_embeddings.weight
    embeddings/LayerNorm/{scale, bias}                   embeddings.LayerNorm.{weight, bias}
    layer_{i}/attention/{query,key,value}/{kernel [D, D], bias}  encoder.layer.{i}.attention.self.{query,key,value}
    layer_{i}/attention/out/{kernel [D, D], bias}        encoder.layer.{i}.attention.output.dense
    layer_{i}/attention_norm/{scale, bias}               encoder.layer.{i}.attention.output.LayerNorm
    layer_{i}/intermediate/{kernel [D, M], bias}         encoder.layer.{i}.intermediate.dense
    layer_{i}/output/{kernel [M, D], bias}               encoder.layer.{i}.output.dense
    layer_{i}/output_norm/{scale, bias}                  encoder.layer.{i}.output.LayerNorm
    pooler/{kernel [D, D], bias}   (only with use_pooler) pooler.dense

The tree is the same with remat on or off. `phenolip_jax.convert.hf_bert` implements this map.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from phenolip_jax.models import layers

Array = jax.Array

POOLINGS = ("cls", "mean", "pooler")

# config.json of known Hugging Face BERT checkpoints, for building a model without its files (the AOT
# compile, `config.text.arch`). Source: each checkpoint's config.json on the Hugging Face hub.
KNOWN_HF_CONFIGS: dict[str, dict[str, Any]] = {
    # microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract (PubMedBERT; BiomedCLIP's text encoder)
    "pubmedbert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                       hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
    # sentence-transformers/all-MiniLM-L6-v2 (the embedded default)
    "minilm-l6": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
}


class BertLayer(nn.Module):
    """Post-LN block: norm(x + attn(x)), then norm(h + out(gelu(intermediate(h))))."""

    num_heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    attention: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, train: bool = False) -> Array:
        """Apply one layer to x [B, S, D]; mask is boolean [B, 1, 1, S] (True = attend)."""
        init = nn.initializers.normal(self.initializer_range)
        dense = lambda f, name: nn.Dense(  # noqa: E731
            f, kernel_init=init, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        drop = lambda y: nn.Dropout(self.hidden_dropout)(y, deterministic=not train)  # noqa: E731
        y = layers.SelfAttention(
            num_heads=self.num_heads, fused_qkv=False, attention_dropout=self.attention_dropout,
            attention=self.attention, kernel_init=init, dtype=self.dtype,
            param_dtype=self.param_dtype, name="attention")(x, mask, train)
        x = norm("attention_norm")(x + drop(y))
        y = dense(x.shape[-1], "output")(layers.gelu(dense(self.mlp_dim, "intermediate")(x)))
        return norm("output_norm")(x + drop(y))


class BertEmbeddings(nn.Module):
    """Word + absolute position + token-type embeddings, LayerNorm, dropout."""

    vocab_size: int
    width: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.0
    initializer_range: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, train: bool = False) -> Array:
        """Embed input_ids [B, S] (positions 0..S-1)."""
        length = input_ids.shape[1]
        if length > self.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings {self.max_position_embeddings}")
        embed = lambda n, name: nn.Embed(  # noqa: E731
            n, self.width, embedding_init=nn.initializers.normal(self.initializer_range),
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        x = (embed(self.vocab_size, "word_embeddings")(input_ids)
             + embed(self.max_position_embeddings, "position_embeddings")(jnp.arange(length)[None])
             + embed(self.type_vocab_size, "token_type_embeddings")(token_type_ids))
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="LayerNorm")(x)
        return nn.Dropout(self.hidden_dropout)(x, deterministic=not train)


def masked_mean(hidden: Array, attention_mask: Array) -> Array:
    """Mean of hidden [B, S, D] over positions where attention_mask [B, S] is 1, in fp32."""
    m = attention_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)


class BERT(nn.Module):
    """BERT encoder; __call__ returns (last hidden states [B, S, D], pooled [B, D])."""

    vocab_size: int = 30522
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    hidden_dropout: float = 0.0  # HF hidden_dropout_prob
    attention_dropout: float = 0.0  # HF attention_probs_dropout_prob
    pooling: str = "cls"  # 'cls' (hidden state of token 0), 'mean' (masked mean) or 'pooler'
    use_pooler: bool = False  # create the HF pooler (dense + tanh); required by pooling='pooler'
    remat: str | bool = "none"  # layers.REMAT_POLICIES ('none' | 'full' | 'save_dots'); bools: 'full' / 'none'
    attention: str = "xla"  # 'auto' | 'xla' | 'cudnn' | 'splash' (layers.resolve_attention)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 token_type_ids: Array | None = None, train: bool = False) -> tuple[Array, Array]:
        """Encode input_ids [B, S]; attention_mask is 1 for tokens and 0 for padding."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        if self.pooling == "pooler" and not self.use_pooler:
            raise ValueError("pooling='pooler' needs use_pooler=True")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = BertEmbeddings(
            vocab_size=self.vocab_size, width=self.width, max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
            hidden_dropout=self.hidden_dropout, initializer_range=self.initializer_range, dtype=self.dtype,
            param_dtype=self.param_dtype, name="embeddings")(input_ids, token_type_ids, train)
        # A boolean key mask rather than HF's additive finfo.min bias: identical at non-pad positions
        # and it lets fused attention kernels skip the padding.
        mask = attention_mask.astype(bool)[:, None, None, :]
        # static_argnums counts self: (self, x, mask, train) -> train is 3.
        layer_cls = layers.remat_block(BertLayer, self.remat, static_argnums=(3,))
        for i in range(self.depth):
            x = layer_cls(num_heads=self.num_heads, mlp_dim=self.mlp_dim, layer_norm_eps=self.layer_norm_eps,
                          hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                          initializer_range=self.initializer_range, attention=self.attention,
                          dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer_{i}")(x, mask, train)
        if self.use_pooler:
            pooler = nn.Dense(self.width, kernel_init=nn.initializers.normal(self.initializer_range),
                              dtype=self.dtype, param_dtype=self.param_dtype, name="pooler")
            pooler_out = jnp.tanh(pooler(x[:, 0]))
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "mean":
            pooled = masked_mean(x, attention_mask).astype(x.dtype)
        else:
            pooled = pooler_out
        return x, pooled


def config_from_hf(config: Mapping[str, Any]) -> dict[str, Any]:
    """BERT field values from a Hugging Face BERT config.json dict (dropout rates included as HF sets them)."""
    act = config.get("hidden_act", "gelu")
    if act != "gelu":  # HF 'gelu' is the exact erf form; 'gelu_new' etc. would silently differ
        raise ValueError(f"unsupported hidden_act {act!r}: only exact 'gelu' is implemented")
    pos_type = config.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise ValueError(f"unsupported position_embedding_type {pos_type!r}: only 'absolute' is implemented")
    return dict(
        vocab_size=int(config["vocab_size"]),
        width=int(config["hidden_size"]),
        depth=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        mlp_dim=int(config["intermediate_size"]),
        max_position_embeddings=int(config.get("max_position_embeddings", 512)),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        initializer_range=float(config.get("initializer_range", 0.02)),
        hidden_dropout=float(config.get("hidden_dropout_prob", 0.0)),
        attention_dropout=float(config.get("attention_probs_dropout_prob", 0.0)),
    )


def bert_kwargs(cfg: Mapping[str, Any] | Any = None) -> dict[str, Any]:
    """BERT field values from a dict / ConfigDict (dtype strings such as 'bfloat16' accepted)."""
    kwargs = layers.to_dict(cfg)
    for key in ("dtype", "param_dtype"):
        if key in kwargs:
            kwargs[key] = layers.canonical_dtype(kwargs[key])
    return kwargs


def from_config(cfg: Mapping[str, Any] | Any = None) -> BERT:
    """Build a BERT from a dict / ConfigDict of its fields."""
    return BERT(**bert_kwargs(cfg))
