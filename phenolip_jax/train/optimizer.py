"""Optimizer: AdamW with warmup + cosine, a weight-decay mask, gradient clipping and tower freezing."""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from phenolip_jax.train.mesh import path_str

# open_clip's rule: only matmul / conv weights are decayed. A leaf is exempt when it is 0-D or 1-D (biases,
# norm scales, the logit scale/bias) or when its name marks a norm, an embedding table (nn.Embed's
# `embedding`: word / position / token-type), a learned position table or class token, or the logit scale/bias.
# The table names are matched on the leaf's own name, so the ViT's patch-embedding *conv* kernel
# (`embedding/kernel`) is decayed, as open_clip decays `conv1.weight`; "norm" on any path component.
NO_DECAY_LEAF = re.compile(r"^(bias|scale|embedding|pos_embedding|cls|cls_token|logit_scale|logit_bias)$")
NORM = re.compile(r"norm", re.I)


def decay_mask(params: Any) -> Any:
    """A bool tree: True where AdamW's decoupled weight decay applies (open_clip's rule, above)."""

    def one(path, leaf):
        names = path_str(path).split("/")
        exempt = NO_DECAY_LEAF.match(names[-1]) or any(NORM.search(n) for n in names)
        return len(getattr(leaf, "shape", ())) >= 2 and not exempt

    return jax.tree_util.tree_map_with_path(one, params)


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
    chain = []
    if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    chain.append(
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    )
    if cfg.freeze_steps > 0 and cfg.freeze_pattern:
        chain.append(freeze_until(path_mask(params, cfg.freeze_pattern), cfg.freeze_steps))
    return optax.chain(*chain), schedule
