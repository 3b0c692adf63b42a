"""Hugging Face BERT <-> Flax `models.bert.BERT` weights, and a checked tokenizer loader.

`load_hf_bert(dir)` reads a local HF BERT directory (config.json + model.safetensors, a sharded
safetensors index, or pytorch_model.bin) into (BERT field values, BERT param tree). The key map is the
one documented at the top of `phenolip_jax/models/bert.py`; `bert_params_to_hf_state_dict` is its inverse.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from phenolip_jax.models import bert as bert_lib

# Prefixes under which BertModel weights appear in task checkpoints (BertForMaskedLM, BertForPreTraining...).
_PREFIXES = ("bert.",)
# Heads and buffers that carry no encoder weights.
_DROPPED_PREFIXES = ("cls.",)
_DROPPED_SUFFIXES = ("position_ids",)
_LAYER_PARTS = {
    "attention.self.query": ("attention", "query"),
    "attention.self.key": ("attention", "key"),
    "attention.self.value": ("attention", "value"),
    "attention.output.dense": ("attention", "out"),
    "attention.output.LayerNorm": ("attention_norm",),
    "intermediate.dense": ("intermediate",),
    "output.dense": ("output",),
    "output.LayerNorm": ("output_norm",),
}


def _leaf_pairs(hf_module: str, flax_path: tuple[str, ...], kind: str) -> list[tuple[str, tuple[str, ...], bool]]:
    """(hf key, flax path, transpose) for one HF Linear / LayerNorm / Embedding."""
    if kind == "linear":
        return [(f"{hf_module}.weight", flax_path + ("kernel",), True),
                (f"{hf_module}.bias", flax_path + ("bias",), False)]
    if kind == "norm":
        return [(f"{hf_module}.weight", flax_path + ("scale",), False),
                (f"{hf_module}.bias", flax_path + ("bias",), False)]
    return [(f"{hf_module}.weight", flax_path + ("embedding",), False)]


def key_map(depth: int, use_pooler: bool) -> list[tuple[str, tuple[str, ...], bool]]:
    """Every (HF state-dict key, Flax param path, transpose?) of a BertModel with `depth` layers."""
    pairs = []
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        pairs += _leaf_pairs(f"embeddings.{name}", ("embeddings", name), "embed")
    pairs += _leaf_pairs("embeddings.LayerNorm", ("embeddings", "LayerNorm"), "norm")
    for i in range(depth):
        for hf_part, flax_part in _LAYER_PARTS.items():
            kind = "norm" if hf_part.endswith("LayerNorm") else "linear"
            pairs += _leaf_pairs(f"encoder.layer.{i}.{hf_part}", (f"layer_{i}",) + flax_part, kind)
    if use_pooler:
        pairs += _leaf_pairs("pooler.dense", ("pooler",), "linear")
    return pairs


def _read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Raw tensors of a local HF checkpoint as NumPy arrays (safetensors preferred)."""
    if (path / "model.safetensors").exists():
        from safetensors.numpy import load_file

        return dict(load_file(str(path / "model.safetensors")))
    index = path / "model.safetensors.index.json"
    if index.exists():
        from safetensors.numpy import load_file

        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(load_file(str(path / shard)))
        return out
    if (path / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError as err:
            raise ImportError(f"{path}/pytorch_model.bin needs torch to read; install torch or convert the "
                              "checkpoint to model.safetensors") from err
        raw = torch.load(str(path / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        # bf16/fp16 tensors have no direct .numpy(); fp32 holds them exactly.
        return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in raw.items()}
    raise FileNotFoundError(f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {path}")


def _normalise_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip task prefixes, rename legacy gamma/beta, drop buffers and MLM/NSP heads."""
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        if key.startswith(_DROPPED_PREFIXES) or key.endswith(_DROPPED_SUFFIXES):
            continue
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    return out


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    """tree[path[0]]...[path[-1]] = value, creating levels."""
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    """tree[path[0]]...[path[-1]]."""
    for name in path:
        tree = tree[name]
    return tree


def _expected_shape(hf_key: str, kwargs: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of an HF tensor under the given BERT field values (torch layout)."""
    d, m = kwargs["width"], kwargs["mlp_dim"]
    if "word_embeddings" in hf_key:
        return (kwargs["vocab_size"], d)
    if "position_embeddings" in hf_key:
        return (kwargs["max_position_embeddings"], d)
    if "token_type_embeddings" in hf_key:
        return (kwargs["type_vocab_size"], d)
    if "intermediate.dense" in hf_key:
        return (m, d) if hf_key.endswith("weight") else (m,)
    if ".output.dense" in hf_key and "attention" not in hf_key:
        return (d, m) if hf_key.endswith("weight") else (d,)
    return (d, d) if hf_key.endswith("weight") and "LayerNorm" not in hf_key else (d,)


def state_dict_to_bert_params(state: Mapping[str, np.ndarray], bert_kwargs: Mapping[str, Any],
                              dtype: Any = np.float32) -> dict[str, Any]:
    """Map a (prefix-free or 'bert.'-prefixed) BertModel state dict onto the Flax BERT param tree."""
    state = _normalise_keys(state)
    use_pooler = bool(bert_kwargs.get("use_pooler", False))
    if not use_pooler:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    pairs = key_map(int(bert_kwargs["depth"]), use_pooler)
    expected = {hf for hf, _, _ in pairs}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"HF BERT checkpoint does not match a {bert_kwargs['depth']}-layer BertModel"
                         f"{' with pooler' if use_pooler else ''}: missing keys {missing}; "
                         f"unexpected keys {unexpected}")
    wrong = [f"{hf}: {tuple(state[hf].shape)} != {_expected_shape(hf, bert_kwargs)}" for hf in sorted(expected)
             if tuple(state[hf].shape) != _expected_shape(hf, bert_kwargs)]
    if wrong:
        raise ValueError(f"HF BERT tensors with unexpected shapes: {wrong}")
    params: dict[str, Any] = {}
    for hf, path, transpose in pairs:
        value = np.asarray(state[hf], dtype=dtype)
        _set(params, path, np.ascontiguousarray(value.T) if transpose else value)
    return params


def bert_params_to_hf_state_dict(params: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Inverse of `state_dict_to_bert_params`: Flax BERT params -> HF BertModel state dict (NumPy)."""
    if set(params) == {"params"}:
        params = params["params"]
    depth = sum(1 for name in params if name.startswith("layer_"))
    out = {}
    for hf, path, transpose in key_map(depth, "pooler" in params):
        value = np.asarray(_get(params, path))
        out[prefix + hf] = np.ascontiguousarray(value.T) if transpose else value
    return out


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The config.json dict of a local Hugging Face model directory."""
    config_file = Path(path) / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"no config.json in {path}")
    return json.loads(config_file.read_text())


def load_hf_bert(path: str | Path, pooling: str = "cls", use_pooler: bool | None = None,
                 dtype: Any = np.float32) -> tuple[dict[str, Any], dict[str, Any]]:
    """(BERT field values, BERT param tree) from a local HF BERT directory.

    The pooler is loaded when pooling == 'pooler' (or use_pooler=True) and dropped otherwise, like the
    MLM/NSP heads. The returned params are the BERT tree itself (wrap as {'params': params} to apply).
    """
    path = Path(path)
    kwargs = bert_lib.config_from_hf(read_hf_config(path))
    kwargs["pooling"] = pooling
    kwargs["use_pooler"] = (pooling == "pooler") if use_pooler is None else bool(use_pooler)
    params = state_dict_to_bert_params(_read_state_dict(path), kwargs, dtype)
    return kwargs, params
