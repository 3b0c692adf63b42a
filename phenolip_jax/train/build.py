"""The one builder of a config's sharded train step, used by the run, the benchmarks and the AOT compile.

`build_step` takes concrete or abstract (jax.ShapeDtypeStruct) params, so the same function gives the step
that trains here and the step compiled for a TPU slice from a CPU host.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import optax

from phenolip_jax.train import mesh as mesh_lib
from phenolip_jax.train.optimizer import make_optimizer
from phenolip_jax.train.step import Objective, TrainState, create_state, halt_after_streak, make_train_step


@dataclasses.dataclass(frozen=True)
class ShardedStep:
    """A config's optimizer, state layout and jitted `(state, batch) -> (state, metrics)` on a mesh."""

    mesh: jax.sharding.Mesh
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shardings: Any  # TrainState of NamedShardings
    abstract_state: Any  # TrainState of ShapeDtypeStructs carrying those shardings
    make_state: Callable[[Any, Any, jax.Array], TrainState]  # jitted (params, teacher, rng) -> sharded state
    jitted: Any  # jax.jit of the step with in/out shardings, state donated (None without an objective)


def build_step(cfg: Any, mesh: jax.sharding.Mesh, objective: Objective | None, params: Any, teacher: Any = None
               ) -> ShardedStep:
    """Optimizer, shardings (config.sharding_rules, then FSDP) and the jitted step; params may be abstract."""
    rules = [tuple(r) for r in cfg.get("sharding_rules", [])]
    tx, schedule = make_optimizer(cfg.optim, params, cfg.total_steps)
    teacher = teacher if teacher is not None else {}
    rng = jax.ShapeDtypeStruct(jax.random.key_data(jax.random.key(0)).shape, jax.numpy.uint32)
    init = lambda p, t, r: create_state(p, tx, r, t)  # noqa: E731
    shapes = jax.eval_shape(init, params, teacher, rng)
    shardings = mesh_lib.tree_shardings(shapes, mesh, rules, min_size=cfg.mesh.get("fsdp_min_size", 2**14))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    jitted = None
    if objective is not None:
        # The host reads the non-finite streak late (at log steps): the device freezes the state at the limit.
        step_fn = halt_after_streak(make_train_step(objective, tx, schedule, grad_accum_steps=cfg.optim.grad_accum_steps,
                                                    max_logit_scale=cfg.max_logit_scale), cfg.max_nonfinite_steps)
        batch = mesh_lib.batch_sharding(mesh)
        jitted = jax.jit(step_fn, in_shardings=(shardings, batch),
                         out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
    return ShardedStep(mesh=mesh, tx=tx, schedule=schedule, shardings=shardings, abstract_state=abstract,
                       make_state=jax.jit(init, out_shardings=shardings), jitted=jitted)


def abstract_batch(shapes: dict[str, tuple[tuple[int, ...], Any]], mesh: jax.sharding.Mesh
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """Global-batch ShapeDtypeStructs, sharded along the batch axes, from {key: (shape, dtype)}."""
    sharding = mesh_lib.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


def compile_step(step: ShardedStep, batch: dict[str, jax.ShapeDtypeStruct]) -> tuple[Any, float]:
    """Lowers and compiles the step for abstract inputs (under the mesh, which fused kernels read); (compiled, s)."""
    t0 = time.time()
    with jax.set_mesh(step.mesh):
        compiled = step.jitted.lower(step.abstract_state, batch).compile()
    return compiled, time.time() - t0
