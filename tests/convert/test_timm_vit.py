"""timm ViT map: the torch reference against transformers.ViTModel, Flax against the reference, round trips."""
import jax.numpy as jnp
import numpy as np
import pytest

from phenolip_jax.convert import timm_vit
from phenolip_jax.models import vit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from phenolip_jax.convert import torch_reference  # noqa: E402

SIZES = dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128)
TOL = 1e-4


def _randomise(model, seed=0):
    """Random weights everywhere (norm weights around 1) so a swapped or mis-transposed tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            is_norm = "norm" in name.lower() and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm else noise)
    return model


def _reference(pool="token", seed=0):
    return _randomise(torch_reference.TimmViT(**SIZES, global_pool=pool), seed).eval()


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_reference_matches_transformers_vit():
    """Validates the timm-layout reference itself against a library implementation (HF ViTModel)."""
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=128, layer_norm_eps=1e-6,
                                 hidden_act="gelu", qkv_bias=True, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    hf = _randomise(transformers.ViTModel(cfg, add_pooling_layer=False), seed=1).eval()
    t = {k: v for k, v in hf.state_dict().items()}
    ref = torch_reference.TimmViT(**SIZES)
    mapped = {"cls_token": t["embeddings.cls_token"], "pos_embed": t["embeddings.position_embeddings"],
              "patch_embed.proj.weight": t["embeddings.patch_embeddings.projection.weight"],
              "patch_embed.proj.bias": t["embeddings.patch_embeddings.projection.bias"],
              "norm.weight": t["layernorm.weight"], "norm.bias": t["layernorm.bias"]}
    # transformers 5 in-memory names (layers.N.attention.q_proj ...); q, k, v concatenate into timm's qkv.
    for i in range(2):
        p, b = f"layers.{i}.", f"blocks.{i}."
        qkv = [p + f"attention.{n}_proj" for n in ("q", "k", "v")]
        mapped[b + "attn.qkv.weight"] = torch.cat([t[k + ".weight"] for k in qkv])
        mapped[b + "attn.qkv.bias"] = torch.cat([t[k + ".bias"] for k in qkv])
        for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for leaf in ("weight", "bias"):
                mapped[f"{b}{ours}.{leaf}"] = t[f"{p}{theirs}.{leaf}"]
    ref.load_state_dict(mapped, strict=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state
        got = ref.eval().forward_features(x)
    diff = float((want - got).abs().max())
    print(f"timm-layout reference vs transformers.ViTModel tokens: max abs diff {diff:.2e}")
    assert diff < TOL


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_flax_vit_matches_reference(pool):
    ref = _reference(pool)
    ours = "cls" if pool == "token" else "mean"
    params = timm_vit.state_dict_to_vit_params(_state(ref), dict(SIZES, pool=ours))
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
    _, pooled = vit.ViT(**SIZES, pool=ours).apply({"params": params}, jnp.asarray(x))
    with torch.no_grad():
        want = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    diff = float(np.abs(np.asarray(pooled) - want).max())
    print(f"timm ViT ({pool}) pooled max abs diff {diff:.2e}")
    assert diff < TOL


def test_state_dict_round_trip_is_bit_exact():
    state = _state(_reference())
    back = timm_vit.vit_params_to_state_dict(timm_vit.state_dict_to_vit_params(state, SIZES))
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k


def test_bad_state_dicts_name_every_problem():
    state = _state(_reference())
    state.pop("blocks.1.mlp.fc2.bias")
    state["head.weight"] = np.zeros((10, 64), np.float32)
    state["pos_embed"] = np.zeros((1, 5, 64), np.float32)
    with pytest.raises(ValueError) as err:
        timm_vit.state_dict_to_vit_params(state, SIZES)
    msg = str(err.value)
    assert "blocks.1.mlp.fc2.bias" in msg and "head.weight" in msg and "pos_embed: (1, 5, 64)" in msg


def test_sizes_from_names_and_shapes():
    assert timm_vit.sizes_from_timm_name("vit_base_patch16_224") == dict(
        image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072)
    with pytest.raises(ValueError, match="timm_model_kwargs"):
        timm_vit.sizes_from_timm_name("vit_base_patch16_clip_224.openai")
    name, kwargs = timm_vit.open_clip_vision_names(dict(SIZES))
    cfg = dict(timm_model_name=name, timm_model_kwargs=kwargs, image_size=32)
    assert timm_vit.sizes_from_open_clip_vision_cfg(cfg) == SIZES
    assert timm_vit.open_clip_vision_names(timm_vit.sizes_from_timm_name("vit_small_patch32_224")) == (
        "vit_small_patch32_224", {})
    derived = timm_vit.sizes_from_state_dict(_state(_reference()), num_heads=4)
    assert derived == SIZES
