"""Gradient accumulation (optim.grad_accum_steps) equals the large batch, with one micro-batch's memory."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from phenolip_jax import config_lib
from phenolip_jax.models import two_tower
from phenolip_jax.train import objectives
from phenolip_jax.train.step import create_state, make_train_step
from tests.train import test_step as step_tests

B, L, S = 16, step_tests.L, step_tests.S
LR = 1e4  # SGD with a large step: (old - new) / LR recovers the gradients to ~1e-7 relative


def stage2(chunk: int = 0):
    """Model, stage-2 objective (distillation, structure KL, hierarchical targets) and params + teacher."""
    c = ml_collections.ConfigDict()
    c.loss = ml_collections.ConfigDict(dict(
        kind="softmax", it_weight=1.0, kd_weight=0.3, struct_weight=0.2, struct_temperature=0.1, chunk=chunk,
        hierarchy=config_lib.hierarchy_section(True, 2, 0.5, 0.2)))
    model = step_tests.tiny_model()
    params = model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"]
    phen = jax.random.normal(jax.random.key(2), (7, 16))
    teacher = {"params": {"text": jax.tree.map(lambda x: x * 0.9 + 0.01, params["text"])},
               "phenotypes": phen / jnp.linalg.norm(phen, axis=1, keepdims=True)}
    objective = objectives.stage2_objective(model, two_tower.TextTower(**dict(model.text_config)), c)
    return objective, params, teacher


def one_sgd_step(accum: int, chunk: int = 0):
    """(loss, gradients) of one train step with k = accum micro-batches, read back through plain SGD."""
    objective, params, teacher = stage2(chunk)
    tx = optax.sgd(LR)
    state = create_state(params, tx, jax.random.key_data(jax.random.key(3)), teacher)
    step = jax.jit(make_train_step(objective, tx, optax.constant_schedule(LR), grad_accum_steps=accum,
                                   max_logit_scale=1e30))
    new, metrics = step(state, jax.tree.map(jnp.asarray, step_tests.fake_batch(0, batch=B)))
    grads = jax.tree.map(lambda a, b: (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / LR,
                         jax.device_get(state.params), jax.device_get(new.params))
    return jax.device_get(metrics), grads


@pytest.mark.parametrize("chunk", [0, 5])
def test_accumulated_step_equals_full_batch(chunk):
    full, g_full = one_sgd_step(1, chunk)
    acc, g_acc = one_sgd_step(4, chunk)
    for key in ("loss", "loss_it", "loss_kd", "loss_struct", "grad_norm"):
        np.testing.assert_allclose(acc[key], full[key], rtol=1e-5, err_msg=key)
    biggest = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_full))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_full), jax.tree.leaves(g_acc)):
        # Leaves whose gradient is rounding noise (biases ahead of a LayerNorm) get an absolute slack.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * biggest, err_msg=jax.tree_util.keystr(path))
    assert float(np.abs(g_full["logit_scale"])) > 0 and biggest > 0


def test_accumulation_keeps_one_micro_batch_of_activation_memory():
    """memory_analysis() temps: k=4 at 4B stays near k=1 at B, far below k=1 at 4B."""
    objective, params, teacher = stage2()
    tx = optax.adamw(1e-3)
    state = create_state(params, tx, jax.random.key_data(jax.random.key(3)), teacher)

    def temps(accum, batch):
        step = make_train_step(objective, tx, optax.constant_schedule(1e-3), grad_accum_steps=accum)
        data = jax.tree.map(jnp.asarray, step_tests.fake_batch(0, batch=batch))
        return jax.jit(step).lower(state, data).compile().memory_analysis().temp_size_in_bytes

    small, accumulated, large = temps(1, B), temps(4, 4 * B), temps(1, 4 * B)
    assert accumulated < 1.6 * small, (small, accumulated, large)
    assert large > 2.5 * small, (small, accumulated, large)  # the comparison has teeth at this size


def test_accumulation_needs_a_split_objective():
    objective, params, teacher = stage2()
    tx = optax.sgd(0.1)
    state = create_state(params, tx, jax.random.key_data(jax.random.key(3)), teacher)
    step = make_train_step(lambda p, t, b, r: objective(p, t, b, r), tx, optax.constant_schedule(0.1),
                           grad_accum_steps=2)
    with pytest.raises(ValueError, match="grad_accum_steps=2"):
        jax.eval_shape(step, state, jax.tree.map(jnp.asarray, step_tests.fake_batch(0, batch=B)))
