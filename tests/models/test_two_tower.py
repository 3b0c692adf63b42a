"""TwoTower / towers: unit-norm embeddings, param-tree layout, bf16, remat, dropout, configs, presets."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax.models import bert, two_tower, vit

VIT = dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128)
BERT = dict(vocab_size=100, width=32, depth=2, num_heads=4, mlp_dim=64, max_position_embeddings=16)
IMAGE_CFG = dict(vit=VIT, head="linear", embed_dim=16)
TEXT_CFG = dict(bert=BERT, head="mlp", head_hidden_dim=24, embed_dim=16, head_bias=True)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(1, 100, size=(3, 10)).astype(np.int32)
    mask = np.ones((3, 10), np.int32)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return jnp.asarray(images), jnp.asarray(ids * mask), jnp.asarray(mask)


def _apply(model, params, *args, **kwargs):
    """Jitted model.apply (eager op-by-op dispatch is far slower on CPU)."""
    return jax.jit(functools.partial(model.apply, **kwargs))({"params": params}, *args)


def _shapes(tree):
    return jax.tree.map(lambda a: a.shape, tree)


@pytest.fixture(scope="module")
def model_and_params():
    model = two_tower.TwoTower(image_config=IMAGE_CFG, text_config=TEXT_CFG, logit_bias_init=-10.0)
    return model, jax.jit(model.init)(jax.random.key(0), *_batch())["params"]


def test_embeddings_are_unit_norm_and_scalars_initialised(model_and_params):
    model, params = model_and_params
    out = _apply(model, params, *_batch())
    assert out["image"].shape == out["text"].shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out["image"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["text"], axis=-1), 1.0, atol=1e-5)
    assert float(params["logit_scale"]) == pytest.approx(math.log(1 / 0.07))
    assert float(out["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
    assert float(out["logit_bias"]) == -10.0
    no_bias = two_tower.TwoTower(image_config=IMAGE_CFG, text_config=TEXT_CFG)
    assert "logit_bias" not in jax.eval_shape(no_bias.init, jax.random.key(0), *_batch())["params"]


def test_text_tower_tree_is_identical_standalone_and_inside(model_and_params):
    model, params = model_and_params
    tower = two_tower.TextTower(**TEXT_CFG)
    images, ids, mask = _batch()
    alone = jax.eval_shape(tower.init, jax.random.key(1), ids, mask)["params"]
    assert jax.tree.structure(alone) == jax.tree.structure(params["text"])
    assert _shapes(alone) == _shapes(params["text"])
    # A stage-1 checkpoint drops in: the standalone tower reproduces TwoTower's text embeddings.
    np.testing.assert_allclose(_apply(tower, params["text"], ids, mask),
                               _apply(model, params, images, ids, mask)["text"], atol=1e-6)
    assert set(params) == {"image", "text", "logit_scale", "logit_bias"}
    assert set(params["image"]) == {"encoder", "head"} and set(params["text"]) == {"encoder", "head"}
    assert set(params["image"]["head"]["proj"]) == {"kernel"}  # BiomedCLIP's visual.head.proj has no bias
    assert set(params["text"]["head"]["fc1"]) == {"kernel", "bias"}


def test_encode_methods_need_only_their_tower(model_and_params):
    model, params = model_and_params
    images, ids, mask = _batch()
    full = _apply(model, params, images, ids, mask)
    img = _apply(model, {"image": params["image"]}, images, method="encode_image")
    txt = _apply(model, {"text": params["text"]}, ids, mask, method="encode_text")
    np.testing.assert_allclose(img, full["image"], atol=1e-6)
    np.testing.assert_allclose(txt, full["text"], atol=1e-6)


def test_padding_does_not_change_text_embedding(model_and_params):
    model, params = model_and_params
    _, ids, mask = _batch()
    short = _apply(model, params, ids[2:, :3], mask[2:, :3], method="encode_text")
    padded = _apply(model, params, ids[2:], mask[2:], method="encode_text")
    np.testing.assert_allclose(short, padded, atol=1e-5)


def test_bf16_compute_stays_close_to_fp32(model_and_params):
    model, params = model_and_params
    low = two_tower.TwoTower(image_config=IMAGE_CFG, text_config=TEXT_CFG, logit_bias_init=-10.0,
                             dtype=jnp.bfloat16)
    # fp32 params are shared: param_dtype stays fp32, only the compute is bf16.
    assert _shapes(jax.eval_shape(low.init, jax.random.key(0), *_batch())["params"]) == _shapes(params)
    ref, out = _apply(model, params, *_batch()), _apply(low, params, *_batch())
    for key in ("image", "text"):
        assert out[key].dtype == jnp.float32
        cosine = np.sum(np.asarray(ref[key]) * np.asarray(out[key]), axis=-1)
        assert cosine.min() > 0.99, (key, cosine)
        assert np.abs(np.asarray(ref[key]) - np.asarray(out[key])).max() < 0.05
    hidden, _ = _apply(bert.BERT(**BERT, dtype=jnp.bfloat16), params["text"]["encoder"], *_batch()[1:])
    assert hidden.dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_remat_gives_same_tree_outputs_and_gradients(kind):
    images, ids, mask = _batch()
    if kind == "vit":
        make = lambda remat: vit.ViT(**VIT, remat=remat)  # noqa: E731
        args = (images,)
    else:
        make = lambda remat: bert.BERT(**BERT, pooling="mean", remat=remat)  # noqa: E731
        args = (ids, mask)
    params = jax.jit(make(False).init)(jax.random.key(0), *args)["params"]
    assert _shapes(jax.eval_shape(make(True).init, jax.random.key(0), *args)["params"]) == _shapes(params)

    def loss(p, remat):
        tokens, pooled = make(remat).apply({"params": p}, *args, train=True)
        return jnp.sum(pooled ** 2) + jnp.mean(tokens)

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (l0, g0), (l1, g1) = grad(params, False), grad(params, True)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    # Same math; XLA may fuse the recomputed forward differently, so allow float rounding.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g0, g1)


@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_dropout_only_when_training(kind):
    images, ids, mask = _batch()
    if kind == "vit":
        model, args = vit.ViT(**VIT, dropout=0.1, attention_dropout=0.1), (images,)
    else:
        model, args = bert.BERT(**BERT, hidden_dropout=0.1, attention_dropout=0.1), (ids, mask)
    params = jax.jit(model.init)(jax.random.key(0), *args)["params"]
    jitted = jax.jit(lambda seed, train: model.apply({"params": params}, *args, train=train,
                                                     rngs={"dropout": jax.random.key(seed)})[1],
                     static_argnums=1)
    run = lambda seed, train: np.asarray(jitted(seed, train))  # noqa: E731
    np.testing.assert_array_equal(run(1, False), run(2, False))
    assert np.abs(run(1, True) - run(2, True)).max() > 1e-4
    np.testing.assert_array_equal(run(1, True), run(1, True))


def test_from_config_accepts_configdict_and_dtype_strings():
    cfg = ml_collections.ConfigDict(dict(image_config=IMAGE_CFG, text_config=TEXT_CFG, dtype="bfloat16"))
    model = two_tower.from_config(cfg)
    assert model.dtype == jnp.bfloat16
    params = jax.eval_shape(model.init, jax.random.key(0), *_batch())["params"]
    assert params["image"]["encoder"]["pos_embedding"].dtype == jnp.float32
    hash(model)  # nested configs are frozen, so the module can be a static jit argument
    with pytest.raises(ValueError, match="dtype"):
        bad = two_tower.TwoTower(image_config=dict(IMAGE_CFG, dtype="bfloat16"), text_config=TEXT_CFG)
        jax.eval_shape(bad.init, jax.random.key(0), *_batch())
    tower = two_tower.text_tower_from_config(ml_collections.ConfigDict(TEXT_CFG))
    tower_params = jax.eval_shape(tower.init, jax.random.key(0), *_batch()[1:])["params"]
    assert tower_params["head"]["fc2"]["kernel"].shape == (24, 16)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_vit_b16_preset_has_timm_parameter_count():
    model = vit.from_config({"variant": "B/16"})
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    assert _count(params) == 85_798_656  # timm vit_base_patch16_224 with num_classes=0
    assert params["encoderblock_0"]["attn"]["qkv"]["kernel"].shape == (768, 2304)
    assert params["pos_embedding"].shape == (1, 197, 768)
    assert set(vit.PRESETS) >= {"Ti/16", "S/16", "B/16", "L/14"}
    with pytest.raises(ValueError, match="unknown ViT variant"):
        vit.from_config({"variant": "X/3"})


def test_bad_options_raise():
    images, ids, mask = _batch()
    with pytest.raises(ValueError, match="pool"):
        jax.eval_shape(vit.ViT(**VIT, pool="max").init, jax.random.key(0), images)
    with pytest.raises(ValueError, match="use_pooler"):
        jax.eval_shape(bert.BERT(**BERT, pooling="pooler").init, jax.random.key(0), ids, mask)
    with pytest.raises(ValueError, match="head kind"):
        jax.eval_shape(two_tower.ImageTower(vit=VIT, head="conv").init, jax.random.key(0), images)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        jax.eval_shape(bert.BERT(**BERT).init, jax.random.key(0), jnp.ones((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="hidden_act"):
        bert.config_from_hf(dict(vocab_size=5, hidden_size=4, num_hidden_layers=1, num_attention_heads=1,
                                 intermediate_size=8, hidden_act="gelu_new"))
