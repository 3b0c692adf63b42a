"""The train state and the one jitted train step shared by both stages."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from phenolip_jax.train.mesh import path_str

# objective(params, teacher, batch, rng) -> (loss, metrics); teacher is a frozen pytree (or {}).
Objective = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; checkpointed whole, so a resume is exact."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    teacher: Any
    nonfinite_streak: jax.Array  # consecutive skipped (non-finite) steps
    nonfinite_total: jax.Array


def create_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array, teacher: Any = None) -> TrainState:
    """A fresh state at step 0."""
    return TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        teacher=teacher if teacher is not None else {},
        nonfinite_streak=jnp.zeros([], jnp.int32),
        nonfinite_total=jnp.zeros([], jnp.int32),
    )


def clamp_logit_scale(params: Any, max_scale: float) -> Any:
    """Clamps every `logit_scale` leaf (stored as a log) to log(max_scale), as CLIP does."""
    limit = math.log(max_scale)

    def one(path, x):
        return jnp.minimum(x, limit) if path_str(path).endswith("logit_scale") else x

    return jax.tree_util.tree_map_with_path(one, params)


def _split_micro(batch: dict, accum: int) -> dict:
    # Row r of micro-batch k is example r*accum + k: every device keeps contributing its own rows.
    return jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 1, 0), batch)


def make_train_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum_steps: int = 1,
    max_logit_scale: float = 100.0,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds `(state, batch) -> (state, metrics)`; jit it with shardings in the loop.

    Non-finite loss or gradients leave params and optimizer state unchanged and bump the counters.
    With grad_accum_steps > 1 gradients of micro-batch losses are averaged (each micro-batch's
    contrastive loss uses the micro-batch's negatives).
    """

    def loss_and_grad(params, teacher, batch, rng):
        return jax.value_and_grad(objective, has_aux=True)(params, teacher, batch, rng)

    def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)
        if grad_accum_steps == 1:
            (loss, metrics), grads = loss_and_grad(state.params, state.teacher, batch, step_rng)
        else:
            micro = _split_micro(batch, grad_accum_steps)
            rngs = jax.random.split(step_rng, grad_accum_steps)

            def body(carry, xs):
                mb, r = xs
                (l, m), g = loss_and_grad(state.params, state.teacher, mb, r)
                acc = jax.tree.map(jnp.add, carry, (l, m, g))
                return acc, None

            zero = jax.eval_shape(loss_and_grad, state.params, state.teacher, jax.tree.map(lambda x: x[0], micro), rngs[0])
            zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), ((zero[0][0], zero[0][1], zero[1])))
            (loss, metrics, grads), _ = jax.lax.scan(body, zero, (micro, rngs))
            loss, metrics, grads = jax.tree.map(lambda x: x / grad_accum_steps, (loss, metrics, grads))

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = clamp_logit_scale(optax.apply_updates(state.params, updates), max_scale=max_logit_scale)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            rng=rng,
            nonfinite_streak=streak,
            nonfinite_total=state.nonfinite_total + (1 - finite.astype(jnp.int32)),
        )
        metrics = dict(metrics)
        metrics.update(
            loss=loss,
            grad_norm=grad_norm,
            lr=schedule(state.step),
            finite=finite.astype(jnp.float32),
            nonfinite_streak=streak,
        )
        return new_state, metrics

    return step_fn


def halt_after_streak(step_fn: Callable, limit: int) -> Callable:
    """The step, turned into a no-op (state and step count unchanged) once `limit` non-finite steps in a row
    were reached, so the host may look at the streak late (at its next log step) and still find the state of
    the step where the streak ended. Adds `nonfinite_total` to the metrics, for the warnings."""

    def guarded(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        new_state, metrics = step_fn(state, batch)
        halted = state.nonfinite_streak >= limit
        keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(halted, a, b), old, new)  # noqa: E731
        new_state = new_state.replace(**{f: keep(getattr(state, f), getattr(new_state, f)) for f in (
            "step", "params", "opt_state", "rng", "nonfinite_streak", "nonfinite_total")})  # not the frozen teacher
        return new_state, dict(metrics, nonfinite_total=new_state.nonfinite_total)

    return guarded
