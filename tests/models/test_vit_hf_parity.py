"""Flax ViT against Hugging Face ViTModel (PyTorch) with the same random weights.

timm does not import here (it needs torchvision), so the reference is transformers.ViTModel configured
like timm's ViT (LayerNorm eps 1e-6, exact GELU, qkv bias); its separate q/k/v weights are concatenated
into our fused qkv kernel in q, k, v order, the layout timm's attn.qkv uses.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from phenolip_jax.models import posemb, vit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128)
TOL = 1e-4


def _randomise(model, seed=0):
    """Replace every weight (LayerNorms included) with random values so no mapping error hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if "layernorm" in name and name.endswith("weight") else noise)
    return model


def hf_vit_to_flax(t):
    """HF ViTModel checkpoint tensors (on-disk names) -> our ViT param tree."""
    lin = lambda k: {"kernel": t[k + ".weight"].T, "bias": t[k + ".bias"]}  # noqa: E731
    ln = lambda k: {"scale": t[k + ".weight"], "bias": t[k + ".bias"]}  # noqa: E731
    params = {
        "cls": t["embeddings.cls_token"],
        "pos_embedding": t["embeddings.position_embeddings"],
        "embedding": {"kernel": t["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
                      "bias": t["embeddings.patch_embeddings.projection.bias"]},
        "encoder_norm": ln("layernorm"),
    }
    depth = 1 + max(int(k.split(".")[2]) for k in t if k.startswith("encoder.layer."))
    for i in range(depth):
        p = f"encoder.layer.{i}."
        qkv = [p + f"attention.attention.{n}" for n in ("query", "key", "value")]
        params[f"encoderblock_{i}"] = {
            "norm1": ln(p + "layernorm_before"),
            "attn": {"qkv": {"kernel": np.concatenate([t[k + ".weight"].T for k in qkv], axis=1),
                             "bias": np.concatenate([t[k + ".bias"] for k in qkv])},
                     "out": lin(p + "attention.output.dense")},
            "norm2": ln(p + "layernorm_after"),
            "mlp": {"fc1": lin(p + "intermediate.dense"), "fc2": lin(p + "output.dense")},
        }
    return params


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random HF ViTModel and the same weights in our tree."""
    config = transformers.ViTConfig(
        image_size=SIZES["image_size"], patch_size=SIZES["patch_size"], hidden_size=SIZES["width"],
        num_hidden_layers=SIZES["depth"], num_attention_heads=SIZES["num_heads"],
        intermediate_size=SIZES["mlp_dim"], layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(0)
    model = _randomise(transformers.ViTModel(config, add_pooling_layer=False).eval())
    # transformers 5 renames ViT modules in memory; the saved checkpoint keeps the classic key names.
    out = tmp_path_factory.mktemp("hf_vit")
    model.save_pretrained(str(out))
    return model, hf_vit_to_flax(load_file(str(out / "model.safetensors")))


def _images(size, seed=1):
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def _torch_run(model, images, **kwargs):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)), output_hidden_states=True, **kwargs)


def test_param_tree_matches_init(pair):
    _, params = pair
    init = jax.eval_shape(vit.ViT(**SIZES).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert jax.tree.structure(init) == jax.tree.structure(params)
    assert jax.tree.map(lambda a: a.shape, init) == jax.tree.map(lambda a: a.shape, params)


def test_cls_output_matches_hf(pair):
    model, params = pair
    images = _images(32)
    tokens, pooled = vit.ViT(**SIZES).apply({"params": params}, images)
    ref = _torch_run(model, images).last_hidden_state.numpy()
    assert np.abs(np.asarray(pooled) - ref[:, 0]).max() <= TOL
    assert np.abs(np.asarray(tokens) - ref).max() <= TOL


def test_mean_pool_is_final_norm_of_patch_mean(pair):
    # timm global_pool='avg': mean of the patch tokens of the last block, then the norm (fc_norm).
    model, params = pair
    images = _images(32)
    _, pooled = vit.ViT(**SIZES, pool="mean").apply({"params": params}, images)
    last = _torch_run(model, images).hidden_states[-1]
    with torch.no_grad():
        ref = model.layernorm(last[:, 1:].mean(1)).numpy()
    assert np.abs(np.asarray(pooled) - ref).max() <= TOL


def test_larger_input_matches_hf_interpolate_pos_encoding(pair):
    model, params = pair
    images = _images(48)
    # HF resizes with F.interpolate(bicubic, align_corners=False) and no antialias.
    tokens, pooled = vit.ViT(**SIZES, posemb_antialias=False).apply({"params": params}, images)
    ref = _torch_run(model, images, interpolate_pos_encoding=True).last_hidden_state.numpy()
    assert tokens.shape == (2, 1 + 36, SIZES["width"])
    assert np.abs(np.asarray(tokens) - ref).max() <= TOL
    # The timm default (antialiased bicubic) is a different resize, so it must give other numbers.
    other, _ = vit.ViT(**SIZES).apply({"params": params}, images)
    assert np.abs(np.asarray(other) - ref).max() > 1e-3


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("old,new", [((4, 4), (6, 6)), ((7, 7), (5, 3)), ((14, 14), (16, 16))])
def test_resize_pos_embed_matches_torch_interpolate(method, antialias, old, new):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(1, 1 + old[0] * old[1], 8)).astype(np.float32)
    out = np.asarray(posemb.resize_pos_embed(jnp.asarray(pos), new, old, 1, method, antialias))
    grid = torch.from_numpy(pos[:, 1:].reshape(1, *old, 8)).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=new, mode=method, align_corners=False, antialias=antialias)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy()
    np.testing.assert_array_equal(out[:, :1], pos[:, :1])
    assert np.abs(out[:, 1:] - ref).max() <= 1e-5


def test_resize_pos_embed_same_size_is_identity_and_checks_grid():
    pos = jnp.arange(1 * 17 * 4, dtype=jnp.float32).reshape(1, 17, 4)
    assert posemb.resize_pos_embed(pos, (4, 4)) is pos
    with pytest.raises(ValueError, match="not a square"):
        posemb.resize_pos_embed(pos[:, :16], (5, 5))
    with pytest.raises(ValueError, match="unknown interpolation"):
        posemb.resize_pos_embed(pos, (5, 5), method="nearest")
