"""Remat policies (config.model.remat / config.text.remat): same outputs and gradients, and each one really
rematerialises what it says (counted in the jaxpr of the backward pass)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phenolip_jax.models import bert, layers, vit
from tests.models.test_two_tower import BERT, VIT, _batch


def _model_and_args(kind, remat):
    images, ids, mask = _batch()
    if kind == "vit":
        return vit.ViT(**VIT, remat=remat), (images,)
    return bert.BERT(**BERT, pooling="mean", remat=remat), (ids, mask)


def _value_and_grad(kind, remat, params):
    model, args = _model_and_args(kind, remat)

    def loss(p):
        tokens, pooled = model.apply({"params": p}, *args, train=True)
        return jnp.sum(pooled ** 2) + jnp.mean(tokens)

    return jax.jit(jax.value_and_grad(loss))(params), jax.make_jaxpr(jax.grad(loss))(params)


@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_every_policy_gives_the_same_loss_and_gradients(kind):
    model, args = _model_and_args(kind, "none")
    params = jax.jit(model.init)(jax.random.key(0), *args)["params"]
    (l0, g0), plain = _value_and_grad(kind, "none", params)
    assert "remat" not in str(plain) and "checkpoint" not in str(plain)
    for policy in ("full", "save_dots"):
        (l1, g1), jaxpr = _value_and_grad(kind, policy, params)
        assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr), policy  # the blocks are rematerialised
        np.testing.assert_allclose(l0, l1, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g0, g1)


def _remat_policies(kind, remat):
    """The `policy` of every checkpoint (remat) equation in the forward jaxpr."""
    model, args = _model_and_args(kind, remat)
    params = jax.eval_shape(model.init, jax.random.key(0), *args)["params"]
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, *args, train=True))(params)
    found = []

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
                found.append(eqn.params["policy"])
                continue
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_each_policy_remats_every_block_with_its_jax_policy(kind):
    depth = (VIT if kind == "vit" else BERT)["depth"]
    assert _remat_policies(kind, "none") == []
    assert _remat_policies(kind, "full") == [None] * depth
    assert _remat_policies(kind, True) == [None] * depth  # bool remat in model_config.json of older runs
    saved = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    assert _remat_policies(kind, "save_dots") == [saved] * depth


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match=r"remat='partial': use one of \('none', 'full', 'save_dots'\)"):
        layers.remat_block(vit.EncoderBlock, "partial", (2,))
