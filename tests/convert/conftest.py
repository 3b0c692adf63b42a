"""Tiny TwoTower fields and randomised params shared by the conversion tests."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

VIT = dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128, pool="cls")
BERT = dict(vocab_size=100, width=64, depth=2, num_heads=4, mlp_dim=128, max_position_embeddings=32,
            type_vocab_size=2, layer_norm_eps=1e-12, pooling="cls", use_pooler=False)
EMBED = 32


def tiny_fields(image_head="linear", text_head="mlp", logit_bias=None, pooling="cls", vit_pool="cls"):
    """BiomedCLIP-shaped TwoTower fields at test size (text mlp hidden (64 + 32) // 2 = 48, as open_clip)."""
    fields = dict(
        image_config=dict(vit=dict(VIT, pool=vit_pool), head=image_head, embed_dim=EMBED,
                          head_hidden_dim=2 * EMBED if image_head == "mlp" else None, head_bias=False),
        text_config=dict(bert=dict(BERT, pooling=pooling, use_pooler=pooling == "pooler"), head=text_head,
                         embed_dim=EMBED, head_hidden_dim=(64 + EMBED) // 2 if text_head == "mlp" else None,
                         head_bias=False),
        logit_scale_init=float(np.log(25.0)),
    )
    if logit_bias is not None:
        fields["logit_bias_init"] = logit_bias
    return fields


def random_params(fields, seed=0):
    """TwoTower params with every leaf perturbed (norm scales around 1), so no mapping error can hide."""
    from phenolip_jax.models import two_tower

    model = two_tower.from_config(fields)
    img = jnp.zeros((1, 32, 32, 3))
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.device_get(model.init(jax.random.key(seed), img, ids, jnp.ones_like(ids))["params"])
    rng = np.random.default_rng(seed)

    def perturb(path, x):
        x = np.asarray(x, np.float32)
        noise = rng.standard_normal(x.shape).astype(np.float32) * 0.2
        name = jax.tree_util.keystr(path)
        return (1.0 + noise) if "'scale'" in name else x + noise

    return jax.tree_util.tree_map_with_path(perturb, params)


@pytest.fixture
def fields():
    return tiny_fields()


@pytest.fixture
def params(fields):
    return random_params(fields)
