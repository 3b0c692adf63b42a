"""Optimizer: AdamW with warmup + cosine, a weight-decay mask, gradient clipping and tower freezing."""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from phenolip_jax.train.mesh import path_str

# Biases, norm scales, embeddings' positional tables and the logit scale/bias are not decayed
# (as in CLIP / open_clip / KEP: decay only on matmul weights).
NO_DECAY_PATTERN = r"(bias|scale|LayerNorm|layernorm|norm|logit_|cls|pos_embedding|position_embeddings|token_type_embeddings)"


def path_mask(params: Any, pattern: str, match: bool = True) -> Any:
    """A bool tree: True where the leaf's path matches `pattern` (or does not, with match=False)."""
    regex = re.compile(pattern) if pattern else None

    def one(path, _):
        hit = bool(regex.search(path_str(path))) if regex else False
        return hit if match else not hit

    return jax.tree_util.tree_map_with_path(one, params)


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
    """Linear warmup then cosine decay to `lr * end_factor` (or constant with schedule='constant')."""
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1)), optax.constant_schedule(cfg.lr)],
            [cfg.warmup_steps],
        )
    if cfg.schedule != "cosine":
        raise ValueError(f"config.optim.schedule={cfg.schedule!r}: use 'cosine' or 'constant'")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(total_steps, cfg.warmup_steps + 1),
        end_value=cfg.lr * cfg.end_factor,
    )


class FreezeState(NamedTuple):
    count: jax.Array


def freeze_until(mask: Any, steps: int) -> optax.GradientTransformation:
    """Zeros the updates of masked leaves during the first `steps` updates (tower freezing)."""

    def init_fn(params):
        del params
        return FreezeState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        active = state.count >= steps
        updates = jax.tree.map(lambda u, m: jnp.where(active | (not m), u, jnp.zeros_like(u)), updates, mask)
        return updates, FreezeState(count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: Any, params: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (+clip, +decay mask, +freeze) from `config.optim`."""
    schedule = make_schedule(cfg, total_steps)
    decay_mask = path_mask(params, NO_DECAY_PATTERN, match=False)
    chain = []
    if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    chain.append(
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    )
    if cfg.freeze_steps > 0 and cfg.freeze_pattern:
        chain.append(freeze_until(path_mask(params, cfg.freeze_pattern), cfg.freeze_steps))
    return optax.chain(*chain), schedule
