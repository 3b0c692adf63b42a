"""The shared train step: sharded == single device, non-finite skip, accumulation, freezing."""
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax import config_lib
from phenolip_jax.models import two_tower
from phenolip_jax.train import loop, mesh as mesh_lib, objectives, optimizer
from phenolip_jax.train.step import create_state, make_train_step

B, L, S = 16, 8, 16


def tiny_cfg(**optim):
    c = ml_collections.ConfigDict()
    c.stage = "stage2"
    config_lib.run_section(c, total_steps=10, log_every=1, eval_every=0, checkpoint_every=10)
    c.mesh.fsdp_min_size = 0
    c.optim = config_lib.optim_section(lr=1e-2, warmup_steps=0, **optim)
    c.loss = ml_collections.ConfigDict(dict(kind="softmax", it_weight=1.0, kd_weight=0.3, struct_weight=0.0,
                                            struct_temperature=0.1,
                                            hierarchy=config_lib.hierarchy_section(True, 2, 0.5, 0.1)))
    return c


def tiny_model():
    image = dict(vit=dict(image_size=S, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64), head="linear",
                 embed_dim=16)
    text = dict(bert=dict(vocab_size=50, width=32, depth=1, num_heads=2, mlp_dim=64, max_position_embeddings=16),
                head="mlp", embed_dim=16, head_hidden_dim=24)
    return two_tower.TwoTower(image_config=image, text_config=text, logit_scale_init=math.log(10.0))


def fake_batch(seed=0, batch=B):
    """Random images/tokens with HPO tables that make some off-diagonal pairs soft positives."""
    r = np.random.default_rng(seed)
    hpo = r.integers(0, 6, size=(batch, 2)).astype(np.int32)
    hpo[:, 1] = -1
    anc = np.stack([hpo, np.where(hpo >= 0, hpo // 2 + 10, -1)], axis=-1).astype(np.int32)
    hops = np.where(anc >= 0, np.array([0, 1])[None, None, :], -1).astype(np.int32)
    return dict(image=r.normal(size=(batch, S, S, 3)).astype(np.float32),
                input_ids=r.integers(1, 50, size=(batch, L)).astype(np.int32),
                attention_mask=np.ones((batch, L), np.int32),
                hpo=hpo, hpo_anc=anc, hpo_hops=hops,
                organs=(hpo[:, :1] % 2).astype(np.int32))


def setup(cfg, model, data, fsdp):
    p = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"])
    teacher = {"params": {"text": jax.tree.map(lambda x: x * 0.9, p["text"])}}
    teacher_model = two_tower.TextTower(**dict(model.text_config))
    mesh = mesh_lib.make_mesh(data, fsdp, devices=jax.devices()[: data * fsdp])
    state, tx, schedule, shardings = loop.init_state(cfg, p, teacher, mesh)
    step = make_train_step(objectives.stage2_objective(model, teacher_model, cfg), tx, schedule,
                           grad_accum_steps=cfg.optim.grad_accum_steps)
    jitted = jax.jit(step, in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
                     out_shardings=(shardings, mesh_lib.replicated(mesh)))
    return state, jitted, mesh


def run_steps(cfg, data, fsdp, n=3):
    state, jitted, mesh = setup(cfg, tiny_model(), data, fsdp)
    losses = []
    for i in range(n):
        state, m = jitted(state, mesh_lib.host_to_global(fake_batch(i), mesh))
        losses.append(float(m["loss"]))
    return state, losses


def test_sharded_step_matches_single_device():
    cfg = tiny_cfg()
    s1, l1 = run_steps(cfg, 1, 1)
    s8, l8 = run_steps(cfg, 4, 2)
    np.testing.assert_allclose(l1, l8, rtol=2e-5)
    flat1 = jax.tree.leaves(jax.device_get(s1.params))
    flat8 = jax.tree.leaves(jax.device_get(s8.params))
    for a, b in zip(flat1, flat8):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # FSDP actually shards something: at least one parameter is split over the fsdp axis.
    specs = [x.sharding.spec for x in jax.tree.leaves(s8.params)]
    assert any("fsdp" in tuple(s) for s in specs)


def test_loss_decreases_and_kd_term_logged():
    state, jitted, mesh = setup(tiny_cfg(), tiny_model(), 1, 1)
    batch = mesh_lib.host_to_global(fake_batch(0), mesh)
    first = None
    for _ in range(8):
        state, m = jitted(state, batch)
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < first
    assert "loss_kd" in m and "loss_it" in m


def test_nonfinite_step_is_skipped():
    state, jitted, mesh = setup(tiny_cfg(), tiny_model(), 1, 1)
    bad = fake_batch(0)
    bad["image"][0, 0, 0, 0] = np.nan
    before = jax.device_get(state.params)
    state, m = jitted(state, mesh_lib.host_to_global(bad, mesh))
    assert float(m["finite"]) == 0.0 and int(m["nonfinite_streak"]) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_array_equal(a, b)
    state, m = jitted(state, mesh_lib.host_to_global(fake_batch(1), mesh))
    assert float(m["finite"]) == 1.0 and int(m["nonfinite_streak"]) == 0 and int(state.nonfinite_total) == 1


def test_grad_accumulation_runs_and_matches_shapes():
    cfg = tiny_cfg()
    cfg.optim.grad_accum_steps = 2
    state, jitted, mesh = setup(cfg, tiny_model(), 1, 1)
    state, m = jitted(state, mesh_lib.host_to_global(fake_batch(0), mesh))
    assert np.isfinite(float(m["loss"]))


def test_freeze_keeps_towers_fixed_then_releases():
    cfg = tiny_cfg(freeze_steps=2, freeze_pattern=r"^(image|text)/encoder/")
    state, jitted, mesh = setup(cfg, tiny_model(), 1, 1)
    p0 = jax.device_get(state.params)
    batch = mesh_lib.host_to_global(fake_batch(0), mesh)
    state, _ = jitted(state, batch)
    state, _ = jitted(state, batch)
    p2 = jax.device_get(state.params)
    np.testing.assert_array_equal(p0["image"]["encoder"]["cls"], p2["image"]["encoder"]["cls"])
    assert not np.array_equal(p0["image"]["head"]["proj"]["kernel"], p2["image"]["head"]["proj"]["kernel"])
    state, _ = jitted(state, batch)
    p3 = jax.device_get(state.params)
    assert not np.array_equal(p2["image"]["encoder"]["cls"], p3["image"]["encoder"]["cls"])


def test_logit_scale_is_clamped():
    cfg = tiny_cfg()
    state, jitted, mesh = setup(cfg, tiny_model(), 1, 1)
    state = state.replace(params={**state.params, "logit_scale": jnp.asarray(10.0)})
    state, _ = jitted(state, mesh_lib.host_to_global(fake_batch(0), mesh))
    assert float(state.params["logit_scale"]) <= math.log(100.0) + 1e-6


def test_mesh_errors_name_the_field():
    with pytest.raises(ValueError, match="fsdp"):
        mesh_lib.make_mesh(-1, 3)


FREEZE = r"^(image|text)/encoder/"


def test_freeze_phase_clips_and_moves_trainable_leaves_only():
    """While frozen: grad_norm (the clipping norm) covers the trainable leaves, frozen moments stay zero."""
    cfg = tiny_cfg(freeze_steps=1, freeze_pattern=FREEZE)
    model = tiny_model()
    state, jitted, mesh = setup(cfg, model, 1, 1)
    batch = mesh_lib.host_to_global(fake_batch(0), mesh)
    objective = objectives.stage2_objective(model, two_tower.TextTower(**dict(model.text_config)), cfg)
    _, step_rng = jax.random.split(state.rng)
    grads = jax.jit(jax.grad(lambda p: objective(p, state.teacher, batch, step_rng)[0]))(state.params)
    flat = [(mesh_lib.path_str(p), np.asarray(g)) for p, g in jax.tree_util.tree_leaves_with_path(grads)]
    trainable_norm = math.sqrt(sum(float((g**2).sum()) for name, g in flat if not re.search(FREEZE, name)))
    full_norm = math.sqrt(sum(float((g**2).sum()) for _, g in flat))
    assert trainable_norm < 0.99 * full_norm  # the two norms are distinguishable here

    state, m = jitted(state, batch)
    np.testing.assert_allclose(float(m["grad_norm"]), trainable_norm, rtol=1e-4)
    frozen_moments = jax.tree.leaves(jax.device_get(state.opt_state.frozen))
    assert frozen_moments and all(not np.any(x) for x in frozen_moments)  # counts and moments untouched
    state, m = jitted(state, batch)  # released: every leaf's gradient and moments now count
    assert any(np.any(x) for x in jax.tree.leaves(jax.device_get(state.opt_state.frozen)))


def test_freeze_phase_step_skips_the_trunks_backward_pass():
    """XLA's FLOP count of the freeze-phase step is well below the full step's (no trunk backward)."""
    cfg = tiny_cfg(freeze_steps=5, freeze_pattern=FREEZE)
    model = tiny_model()
    p = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"])
    teacher = {"params": {"text": p["text"]}}
    tx, schedule = optimizer.make_optimizer(cfg.optim, p, cfg.total_steps)
    state = create_state(p, tx, jax.random.key_data(jax.random.key(0)), teacher)
    objective = objectives.stage2_objective(model, two_tower.TextTower(**dict(model.text_config)), cfg)
    batch = jax.tree.map(jnp.asarray, fake_batch(0))
    flops = {}
    for phase in ("freeze", "full"):
        step = make_train_step(objective, tx, schedule, phase=phase)
        cost = jax.jit(step).lower(state, batch).compile().cost_analysis()
        flops[phase] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    assert flops["freeze"] < 0.8 * flops["full"], flops
