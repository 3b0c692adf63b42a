"""config.loss.chunk: the chunked stage-2 objective equals the plain one (loss and every gradient)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax import config_lib
from phenolip_jax.models import two_tower
from phenolip_jax.train import objectives
from tests.train import test_step as step_tests

B = 12
L, S = step_tests.L, step_tests.S
tiny_model = step_tests.tiny_model


def loss_cfg(chunk: int, hierarchy: bool = True, kd_weight: float = 0.3) -> ml_collections.ConfigDict:
    """A stage-2 config holding only what the objective reads."""
    c = ml_collections.ConfigDict()
    c.loss = ml_collections.ConfigDict(dict(
        kind="softmax", it_weight=1.0, kd_weight=kd_weight, struct_weight=0.0, struct_temperature=0.1, chunk=chunk,
        hierarchy=config_lib.hierarchy_section(hierarchy, 2, 0.5, 0.2)))
    return c


def fake_batch() -> dict[str, np.ndarray]:
    """The train-step tests' random batch, at B=12 (chunk 5 then leaves a padded last block)."""
    return step_tests.fake_batch(0, batch=B)


def loss_and_grads(chunk: int, hierarchy: bool):
    """(loss, metrics, grads) of the stage-2 objective with the given chunk size."""
    model = tiny_model()
    params = model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"]
    teacher_model = two_tower.TextTower(**dict(model.text_config))
    teacher = {"params": {"text": jax.tree.map(lambda x: x * 0.9 + 0.01, params["text"])}}
    objective = objectives.stage2_objective(model, teacher_model, loss_cfg(chunk, hierarchy))
    fn = jax.jit(jax.value_and_grad(objective, has_aux=True))
    (loss, metrics), grads = fn(params, teacher, fake_batch(), jax.random.key(1))
    return float(loss), jax.device_get(metrics), jax.device_get(grads)


# Soft (hierarchical) targets for the image-text term, identity targets for the text-knowledge term;
# chunk 5 does not divide B=12, so the last block is padded. (Identity-only and other chunk sizes are
# covered loss-level in tests/test_losses.py.)
def test_chunked_objective_matches_plain(hierarchy=True, chunk=5):
    loss0, m0, g0 = loss_and_grads(0, hierarchy)
    loss1, m1, g1 = loss_and_grads(chunk, hierarchy)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    for key in ("loss_it", "loss_kd"):
        np.testing.assert_allclose(m1[key], m0[key], rtol=1e-5)
    leaves0 = jax.tree_util.tree_leaves_with_path(g0)
    leaves1 = jax.tree.leaves(g1)
    assert len(leaves0) == len(leaves1)
    # Absolute slack relative to the largest gradient: some leaves (e.g. biases ahead of a LayerNorm)
    # have gradients that are rounding noise (~1e-11) in both versions.
    biggest = max(float(np.abs(a).max()) for _, a in leaves0)
    for (path, a), b in zip(leaves0, leaves1):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * biggest, err_msg=jax.tree_util.keystr(path))
    # The objective's gradient is not trivially zero (the comparison above would then be vacuous).
    assert float(np.abs(g0["logit_scale"])) > 0
    assert max(float(np.abs(x).max()) for x in jax.tree.leaves(g0["image"])) > 0


def test_chunked_objective_never_builds_full_logits():
    """With identity targets the chunked objective's program holds [B, chunk] blocks, never [B, B] logits."""
    model = tiny_model()
    params = model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"]
    teacher_model = two_tower.TextTower(**dict(model.text_config))
    teacher = {"params": {"text": params["text"]}}
    programs = {}
    for chunk in (0, 4):
        objective = objectives.stage2_objective(model, teacher_model, loss_cfg(chunk, hierarchy=False))
        programs[chunk] = str(jax.make_jaxpr(jax.value_and_grad(objective, has_aux=True))(
            params, teacher, fake_batch(), jax.random.key(1)))
    assert f"f32[{B},{B}]" in programs[0]
    assert f"f32[{B},{B}]" not in programs[4] and f"f32[{B},4]" in programs[4]


def test_negative_chunk_is_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match="config.loss.chunk"):
        objectives.stage2_objective(model, two_tower.TextTower(**dict(model.text_config)), loss_cfg(-1))


def test_stage2_config_has_chunk_field():
    from tests.tasks.conftest import load_config

    cfg = load_config("stage2")
    assert cfg.loss.chunk == 0
