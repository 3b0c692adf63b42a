"""timm VisionTransformer <-> Flax `models.vit.ViT` weights, and timm model names <-> ViT sizes.

Key map (timm on the left, see the docstring of `phenolip_jax/models/vit.py` for the Flax side):

    patch_embed.proj.{weight [D, C, p, p] (OIHW), bias}  -> embedding/{kernel [p, p, C, D] (HWIO), bias}
    cls_token [1, 1, D], pos_embed [1, 1 + N, D]          -> cls, pos_embedding
    blocks.{i}.norm1 / norm2 .{weight, bias}              -> encoderblock_{i}/norm1 / norm2 /{scale, bias}
    blocks.{i}.attn.qkv / attn.proj / mlp.fc1 / mlp.fc2   -> encoderblock_{i}/attn/qkv / attn/out / mlp/fc1 / mlp/fc2
    norm (global_pool 'token') or fc_norm ('avg')         -> encoder_norm

Linear weights are transposed to kernels. The qkv output columns stay in timm's [3, heads, head_dim]
order, which is the order `layers.SelfAttention(fused_qkv=True)` splits.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

# timm's ViT families: width, depth, heads (mlp_ratio 4). A name vit_{family}_patch{p}_{size} is a
# plain pre-LN ViT with a class token; other timm ViTs (clip, dinov2, reg...) differ in details.
FAMILIES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
# (family, patch) pairs that timm registers at 224 px.
_REGISTERED_224 = {("tiny", 16), ("small", 16), ("small", 32), ("base", 16), ("base", 32), ("large", 16),
                   ("large", 32), ("huge", 14)}
_NAME = re.compile(r"^vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)(\.\w+)?$")
SIZE_KEYS = ("image_size", "patch_size", "width", "depth", "num_heads", "mlp_dim")


def sizes_from_timm_name(name: str) -> dict[str, int]:
    """ViT sizes of a plain timm ViT name such as 'vit_base_patch16_224' (a '.tag' suffix is ignored)."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"timm model {name!r} is not a plain vit_<tiny|small|base|large|huge>_patch<P>_<S> "
                         "ViT; give its sizes in vision_cfg.timm_model_kwargs")
    width, depth, heads = FAMILIES[match.group(1)]
    return dict(image_size=int(match.group(3)), patch_size=int(match.group(2)), width=width, depth=depth,
                num_heads=heads, mlp_dim=4 * width)


def sizes_from_open_clip_vision_cfg(vision_cfg: Mapping[str, Any]) -> dict[str, int]:
    """ViT sizes from an open_clip vision_cfg: the timm name, then timm_model_kwargs and image_size on top."""
    kwargs = dict(vision_cfg.get("timm_model_kwargs") or {})
    try:
        sizes = sizes_from_timm_name(vision_cfg["timm_model_name"])
    except ValueError:
        if not {"embed_dim", "depth", "num_heads", "patch_size"} <= set(kwargs):
            raise
        sizes = {}
    if "embed_dim" in kwargs:
        sizes["width"] = int(kwargs["embed_dim"])
    for key in ("depth", "num_heads", "patch_size"):
        if key in kwargs:
            sizes[key] = int(kwargs[key])
    if "mlp_ratio" in kwargs or "mlp_dim" not in sizes or "embed_dim" in kwargs:
        sizes["mlp_dim"] = int(round(float(kwargs.get("mlp_ratio", 4.0)) * sizes["width"]))
    image_size = vision_cfg.get("image_size", kwargs.get("img_size", sizes.get("image_size", 224)))
    if isinstance(image_size, (list, tuple)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"non-square image_size {image_size} is not supported")
        image_size = image_size[0]
    sizes["image_size"] = int(image_size)
    return sizes


def open_clip_vision_names(vit: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(timm_model_name, timm_model_kwargs) that rebuild ViT sizes in timm; kwargs is {} for a timm preset."""
    width, depth, heads, patch = (int(vit[k]) for k in ("width", "depth", "num_heads", "patch_size"))
    family = next((f for f, s in FAMILIES.items() if s == (width, depth, heads)), None)
    if family is not None and (family, patch) in _REGISTERED_224 and int(vit["mlp_dim"]) == 4 * width:
        return f"vit_{family}_patch{patch}_224", {}
    # Not a timm preset: name the closest base model and override every size (open_clip forwards
    # vision_cfg.timm_model_kwargs to timm.create_model, whose kwargs override the preset's).
    return "vit_base_patch16_224", dict(patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                                        mlp_ratio=int(vit["mlp_dim"]) / width)


def key_map(depth: int, pool: str = "cls") -> list[tuple[str, tuple[str, ...], str]]:
    """Every (timm key, Flax path, conversion) of a `depth`-block ViT; conversion: 'linear', 'conv' or 'copy'."""
    lin = lambda t, f: [(f"{t}.weight", f + ("kernel",), "linear"), (f"{t}.bias", f + ("bias",), "copy")]  # noqa: E731
    norm = lambda t, f: [(f"{t}.weight", f + ("scale",), "copy"), (f"{t}.bias", f + ("bias",), "copy")]  # noqa: E731
    pairs = [("patch_embed.proj.weight", ("embedding", "kernel"), "conv"),
             ("patch_embed.proj.bias", ("embedding", "bias"), "copy"),
             ("cls_token", ("cls",), "copy"), ("pos_embed", ("pos_embedding",), "copy")]
    for i in range(depth):
        b, f = f"blocks.{i}", (f"encoderblock_{i}",)
        pairs += norm(f"{b}.norm1", f + ("norm1",)) + lin(f"{b}.attn.qkv", f + ("attn", "qkv"))
        pairs += lin(f"{b}.attn.proj", f + ("attn", "out")) + norm(f"{b}.norm2", f + ("norm2",))
        pairs += lin(f"{b}.mlp.fc1", f + ("mlp", "fc1")) + lin(f"{b}.mlp.fc2", f + ("mlp", "fc2"))
    pairs += norm("norm" if pool == "cls" else "fc_norm", ("encoder_norm",))
    return pairs


def _to_flax(value: np.ndarray, conversion: str) -> np.ndarray:
    """A timm tensor in Flax layout."""
    if conversion == "linear":
        return np.ascontiguousarray(value.T)
    if conversion == "conv":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    return value


def _to_torch(value: np.ndarray, conversion: str) -> np.ndarray:
    """A Flax param in timm layout (inverse of `_to_flax`)."""
    if conversion == "linear":
        return np.ascontiguousarray(value.T)
    if conversion == "conv":
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO -> OIHW
    return value


def expected_shapes(sizes: Mapping[str, Any], channels: int = 3) -> dict[str, tuple[int, ...]]:
    """timm tensor shapes of a ViT with the given sizes."""
    d, m, p = int(sizes["width"]), int(sizes["mlp_dim"]), int(sizes["patch_size"])
    n = (int(sizes["image_size"]) // p) ** 2
    shapes = {"patch_embed.proj.weight": (d, channels, p, p), "patch_embed.proj.bias": (d,),
              "cls_token": (1, 1, d), "pos_embed": (1, 1 + n, d)}
    for key, _, _ in key_map(int(sizes["depth"]), sizes.get("pool", "cls"))[4:]:
        if key.endswith("attn.qkv.weight"):
            shapes[key] = (3 * d, d)
        elif key.endswith("attn.qkv.bias"):
            shapes[key] = (3 * d,)
        elif key.endswith("fc1.weight"):
            shapes[key] = (m, d)
        elif key.endswith("fc1.bias"):
            shapes[key] = (m,)
        elif key.endswith("fc2.weight"):
            shapes[key] = (d, m)
        elif key.endswith("proj.weight"):
            shapes[key] = (d, d)
        else:
            shapes[key] = (d,)
    return shapes


def sizes_from_state_dict(state: Mapping[str, np.ndarray], num_heads: int | None = None) -> dict[str, int]:
    """ViT sizes read off timm tensor shapes; num_heads is not in the shapes (default width // 64, as timm's presets)."""
    d, c, p, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    tokens = state["pos_embed"].shape[1] - 1
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise ValueError(f"pos_embed has {tokens} patch positions, not a square grid")
    if num_heads is None:
        num_heads = max(1, d // 64)
        log.warning("ViT num_heads not given; assuming width // 64 = %d", num_heads)
    return dict(image_size=side * p, patch_size=p, width=d, depth=depth, num_heads=int(num_heads),
                mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0])


def check_keys(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise one error naming every missing key, unexpected key and shape mismatch."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(np.shape(state[k]))} != expected {tuple(v)}" for k, v in sorted(expected.items())
             if k in state and tuple(np.shape(state[k])) != tuple(v)]
    if missing or unexpected or wrong:
        raise ValueError(f"{what} does not match: missing keys {missing}; unexpected keys {unexpected}; "
                         f"shape mismatches {wrong}")


def state_dict_to_vit_params(state: Mapping[str, np.ndarray], sizes: Mapping[str, Any],
                             dtype: Any = np.float32) -> dict[str, Any]:
    """timm ViT state dict (prefix-free, no classifier) -> Flax ViT param tree; checks keys and shapes."""
    pool = sizes.get("pool", "cls")
    check_keys(state, expected_shapes(sizes, state["patch_embed.proj.weight"].shape[1]
                                      if "patch_embed.proj.weight" in state else 3), f"timm ViT ({pool} pool)")
    params: dict[str, Any] = {}
    for key, path, conversion in key_map(int(sizes["depth"]), pool):
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = _to_flax(np.asarray(state[key], dtype=dtype), conversion)
    return params


def vit_params_to_state_dict(params: Mapping[str, Any], pool: str = "cls", prefix: str = "") -> dict[str, np.ndarray]:
    """Inverse of `state_dict_to_vit_params`: Flax ViT params -> timm state dict (NumPy)."""
    depth = sum(1 for name in params if name.startswith("encoderblock_"))
    out = {}
    for key, path, conversion in key_map(depth, pool):
        node = params
        for name in path:
            node = node[name]
        out[prefix + key] = _to_torch(np.asarray(node), conversion)
    return out
