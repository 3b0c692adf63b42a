"""Stage-1 identity head init: the untrained encoder is exactly the pretrained one (mean-pooled, no head)."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax.models import two_tower
from phenolip_jax.tasks import common, stage1


@pytest.mark.parametrize("head,hidden,embed", [("linear", 0, 48), ("mlp", 64, 40)])
def test_identity_head_reproduces_the_raw_encoder(tiny_bert_dir, head, hidden, embed):
    text = ml_collections.ConfigDict(dict(hf_dir=tiny_bert_dir, pool="mean", head=head, head_hidden=hidden,
                                          embed_dim=embed, head_bias=True))
    model, params, _, fields = common.load_text_encoder(text, "float32", 0)
    params["head"] = stage1.identity_head(params["head"], head)
    raw = two_tower.text_tower_from_config({**fields, "head": "none"})
    ids = jnp.asarray(np.random.default_rng(0).integers(1000, 2000, (3, 7)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 4:].set(0)
    got = np.asarray(model.apply({"params": params}, ids, mask))
    want = np.asarray(raw.apply({"params": {"encoder": params["encoder"]}}, ids, mask))
    np.testing.assert_allclose(got[:, :32], want, atol=1e-5)
    np.testing.assert_allclose(got[:, 32:], 0.0, atol=1e-6)


def test_identity_head_needs_room(tiny_bert_dir):
    text = ml_collections.ConfigDict(dict(hf_dir=tiny_bert_dir, pool="mean", head="mlp", head_hidden=40,
                                          embed_dim=40, head_bias=True))
    _, params, _, _ = common.load_text_encoder(text, "float32", 0)
    with pytest.raises(ValueError, match="head_hidden >= 2"):
        stage1.identity_head(params["head"], "mlp")


def test_zero_steps_allowed_for_stage1_only():
    from phenolip_jax import config_checks
    from tests.tasks.conftest import load_config

    cfg = load_config("stage1")
    cfg.total_steps = 0  # saves the starting encoder: the untrained-teacher baseline
    config_checks.validate(cfg, 1)
    cfg = load_config("stage2")
    cfg.total_steps = 0
    with pytest.raises(ValueError, match="config.total_steps=0"):
        config_checks.validate(cfg, 1)
    cfg = load_config("stage1")
    cfg.text.head_init = "zeros"
    with pytest.raises(ValueError, match="head_init"):
        from phenolip_jax.tasks import stage1

        stage1.run(cfg, "/nonexistent/never-written")
