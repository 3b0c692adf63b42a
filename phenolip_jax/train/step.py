"""The train state and the one jitted train step shared by both stages."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from phenolip_jax.train import optimizer
from phenolip_jax.train.mesh import path_str

# objective(params, teacher, batch, rng) -> (loss, metrics); teacher is a frozen pytree (or {}).
Objective = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class SplitObjective:
    """An objective written as embeddings, then a loss of the whole batch's embeddings.

    The split lets the step cache embeddings (exact gradient accumulation, GradCache / open_clip
    accum-freq): `embed` computes what carries gradients, `frozen_embed` what does not (the teacher's).
    Called whole it is an `Objective`.
    """

    embed: Callable[[Any, dict, jax.Array], dict]  # (params, batch, rng) -> {name: [B, ...]}
    frozen_embed: Callable[[Any, dict], dict]  # (teacher, batch) -> {name: [B, ...]}, no gradient
    loss: Callable[[Any, Any, dict, dict], tuple[jax.Array, dict]]  # (params, teacher, embeddings, batch)

    def __call__(self, params: Any, teacher: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        """The loss of the batch, embeddings and loss in one go."""
        emb = {**self.embed(params, batch, rng), **self.frozen_embed(teacher, batch)}
        return self.loss(params, teacher, emb, batch)


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


def _split_micro(tree: Any, accum: int) -> Any:
    # Row r of micro-batch k is example r*accum + k: every device keeps contributing its own rows.
    return jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 1, 0), tree)


def _join_micro(tree: Any) -> Any:
    """The inverse of _split_micro: [accum, B/accum, ...] back to [B, ...] in the batch's order."""
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def accumulated_loss_and_grads(
    objective: SplitObjective, rebuild: Callable[[Any], Any], diff: Any, teacher: Any, batch: dict,
    rng: jax.Array, accum: int,
) -> tuple[tuple[jax.Array, dict], Any]:
    """The full batch's loss and gradients w.r.t. `diff` with the activations of one micro-batch at a time.

    1. every micro-batch's embeddings, without gradients; 2. the loss of all of them, and its gradients
    w.r.t. the embeddings (and the params the loss reads directly, e.g. the logit scale); 3. each
    micro-batch recomputed with its own dropout key, its embeddings' VJP pulling those gradients back to
    the params. Equal to the full batch's (up to float summation order) when the embeddings are
    deterministic; with dropout each micro-batch draws its own masks. `rebuild(diff)` gives the full params.
    """
    micro = _split_micro(batch, accum)
    rngs = jax.random.split(rng, accum)
    params = rebuild(diff)

    def embed_one(xs):
        mb, r = xs
        return objective.embed(params, mb, r), objective.frozen_embed(teacher, mb)

    emb_t, emb_f = jax.lax.stop_gradient(_join_micro(jax.lax.map(embed_one, (micro, rngs))))

    def loss_of(d, e):
        return objective.loss(rebuild(d), teacher, {**e, **emb_f}, batch)

    (loss, metrics), (g_direct, g_emb) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(diff, emb_t)
    cotangents = _split_micro(g_emb, accum)

    def backward_one(acc, xs):
        mb, r, ct = xs
        _, vjp = jax.vjp(lambda d: objective.embed(rebuild(d), mb, r), diff)
        return jax.tree.map(jnp.add, acc, vjp(ct)[0]), None

    grads, _ = jax.lax.scan(backward_one, g_direct, (micro, rngs, cotangents))
    return (loss, metrics), grads


def loss_and_grads(
    objective: Objective, rebuild: Callable[[Any], Any], diff: Any, teacher: Any, batch: dict,
    rng: jax.Array, accum: int = 1,
) -> tuple[tuple[jax.Array, dict], Any]:
    """((loss, metrics), d loss / d diff) of the whole batch; accum > 1 caches embeddings (needs a SplitObjective)."""
    if accum == 1:
        return jax.value_and_grad(lambda d: objective(rebuild(d), teacher, batch, rng), has_aux=True)(diff)
    if not isinstance(objective, SplitObjective):
        raise ValueError(f"config.optim.grad_accum_steps={accum} needs an objective split into embeddings "
                         "and a loss of embeddings (train.step.SplitObjective)")
    return accumulated_loss_and_grads(objective, rebuild, diff, teacher, batch, rng, accum)


def make_train_step(
    objective: Objective,
    tx: optax.GradientTransformation | optimizer.Optimizer,
    schedule: optax.Schedule,
    *,
    grad_accum_steps: int = 1,
    max_logit_scale: float = 100.0,
    phase: str = "auto",
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds `(state, batch) -> (state, metrics)`; jit it with shardings in the loop.

    Non-finite loss or gradients leave params and optimizer state unchanged and bump the counters.
    grad_accum_steps = k > 1 gives the gradients of the whole batch (every micro-batch's negatives)
    with the activation memory of one micro-batch (`accumulated_loss_and_grads`).
    With an `optimizer.Optimizer` that freezes, phase 'auto' runs the freeze-phase step (gradients,
    clipping and moments of the trainable leaves only) while fewer than freeze_steps updates were
    applied, then the full step (a `lax.cond`: only the taken branch runs); 'freeze' / 'full' pick one.
    """
    if phase not in ("auto", "freeze", "full"):
        raise ValueError(f"phase={phase!r}: use 'auto', 'freeze' or 'full'")
    freezes = isinstance(tx, optimizer.Optimizer) and tx.freeze_steps > 0
    if phase == "freeze" and not freezes:
        raise ValueError("phase='freeze' needs config.optim.freeze_steps > 0 and a freeze_pattern")

    def step_fn(state: TrainState, batch: dict, frozen_phase: bool) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)
        if frozen_phase:
            diff, fixed = optimizer.split(state.params, tx.frozen)
            rebuild = lambda d: optimizer.merge(tx.frozen, d, fixed)  # noqa: E731
        else:
            diff, rebuild = state.params, lambda d: d  # noqa: E731
        (loss, metrics), grads = loss_and_grads(
            objective, rebuild, diff, state.teacher, batch, step_rng, grad_accum_steps
        )
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if frozen_phase:
            updates, new_opt_state = tx.update_trainable(grads, state.opt_state, diff)
            new_params = rebuild(optax.apply_updates(diff, updates))
        else:
            updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
            new_params = optax.apply_updates(state.params, updates)
        new_params = clamp_logit_scale(new_params, max_scale=max_logit_scale)
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

    if phase == "freeze":
        return lambda state, batch: step_fn(state, batch, True)
    if phase == "full" or not freezes:
        return lambda state, batch: step_fn(state, batch, False)

    def auto(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        in_freeze = state.opt_state.count < tx.freeze_steps
        return jax.lax.cond(in_freeze, lambda s, b: step_fn(s, b, True), lambda s, b: step_fn(s, b, False),
                            state, batch)

    return auto


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
