"""The optimizer: open_clip's weight-decay rule on the real param trees, and its wiring into AdamW."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from phenolip_jax import config_lib
from phenolip_jax.models import bert, two_tower
from phenolip_jax.train import optimizer
from phenolip_jax.train.mesh import path_str
from tests.train import test_step as step_tests

S, L = step_tests.S, step_tests.L


def two_tower_params():
    """Abstract params of a TwoTower with a logit bias (every kind of leaf the stage-2 model has)."""
    m = step_tests.tiny_model()
    m = two_tower.TwoTower(image_config=m.image_config, text_config=m.text_config,
                           logit_scale_init=math.log(10.0), logit_bias_init=-10.0)
    return jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, S, S, 3)),
                                         jnp.zeros((1, L), jnp.int32))["params"])


def bert_params():
    """Abstract params of a bare BERT (the stage-1 encoder's trunk)."""
    m = bert.from_config(dict(vocab_size=50, width=32, depth=2, num_heads=2, mlp_dim=64, max_position_embeddings=16))
    return jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, L), jnp.int32)))["params"]


def decayed_paths(params):
    """{path: decayed?} for every leaf."""
    flat = jax.tree_util.tree_leaves_with_path(optimizer.decay_mask(params))
    return {path_str(p): bool(v) for p, v in flat}


def test_decay_mask_on_two_tower_follows_open_clip():
    decayed = decayed_paths(two_tower_params())
    # Only matmul / conv kernels are decayed (the ViT's patch-embedding conv included, as open_clip does).
    assert {p for p, d in decayed.items() if d} == {p for p in decayed if p.endswith("/kernel")}
    assert decayed["image/encoder/embedding/kernel"]
    for exempt in ("text/encoder/embeddings/word_embeddings/embedding",
                   "text/encoder/embeddings/position_embeddings/embedding",
                   "text/encoder/embeddings/token_type_embeddings/embedding",
                   "image/encoder/pos_embedding", "image/encoder/cls", "logit_scale", "logit_bias",
                   "text/encoder/embeddings/LayerNorm/scale", "image/encoder/encoder_norm/bias"):
        assert not decayed[exempt], exempt


def test_decay_mask_on_bert():
    decayed = decayed_paths(bert_params())
    assert not decayed["embeddings/word_embeddings/embedding"]
    assert {p for p, d in decayed.items() if d} == {p for p in decayed if p.endswith("/kernel")}


def test_adamw_decays_only_masked_leaves():
    """With zero gradients an AdamW step moves exactly the matmul / conv kernels (by lr * wd * w)."""
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), two_tower_params())
    cfg = config_lib.optim_section(lr=0.1, warmup_steps=0, weight_decay=0.5)
    cfg.schedule = "constant"
    tx, _ = optimizer.make_optimizer(ml_collections.ConfigDict(cfg), params, total_steps=10)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        name = path_str(path)
        np.testing.assert_allclose(np.asarray(u), -0.05 if name.endswith("/kernel") else 0.0, rtol=1e-6, err_msg=name)
