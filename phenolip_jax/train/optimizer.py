"""Optimizer: AdamW with warmup + cosine, a weight-decay mask, gradient clipping and tower freezing."""
from __future__ import annotations

import re
from collections.abc import Callable
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


def check_frozen_are_pretrained(params: Any, cfg: Any, pretrained: str) -> None:
    """Refuses a freeze (config.optim) that would hold randomly initialised parameters fixed.

    `pretrained`: a regex of the param paths that came from pretrained weights; a frozen leaf outside it is
    random and would stay random for freeze_steps steps. The error names the towers.
    """
    if not (cfg.freeze_steps > 0 and cfg.freeze_pattern):
        return
    frozen = jax.tree_util.tree_leaves_with_path(path_mask(params, cfg.freeze_pattern))
    loaded = re.compile(pretrained)
    random = sorted({path_str(p) for p, hit in frozen if hit and not loaded.search(path_str(p))})
    if random:
        towers = sorted({p.split("/")[0] for p in random})
        raise ValueError(
            f"config.optim.freeze_pattern={cfg.freeze_pattern!r} would freeze {len(random)} randomly initialised "
            f"parameters of the {' and '.join(towers)} tower(s) (e.g. {random[0]}) for freeze_steps="
            f"{cfg.freeze_steps}: give config.init.checkpoint (BiomedCLIP) or set config.optim.freeze_steps=0")


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


def split(tree: Any, frozen: Any) -> tuple[Any, Any]:
    """(trainable, frozen) copies of `tree`, each with None where the leaf belongs to the other group."""
    trainable = jax.tree.map(lambda m, x: None if m else x, frozen, tree)
    fixed = jax.tree.map(lambda m, x: x if m else None, frozen, tree)
    return trainable, fixed


def merge(frozen: Any, trainable: Any, fixed: Any) -> Any:
    """The inverse of `split`: one tree from the two groups."""
    return jax.tree.map(lambda m, a, b: b if m else a, frozen, trainable, fixed, is_leaf=lambda x: x is None)


class PartitionedState(NamedTuple):
    count: jax.Array  # updates applied: drives the learning-rate schedule and the freeze
    trainable: Any  # Adam moments of the leaves never frozen (None at frozen leaves)
    frozen: Any  # Adam moments of the leaves frozen during the first freeze_steps updates (None elsewhere)


class Optimizer(NamedTuple):
    """AdamW over two leaf groups with the interface of an optax GradientTransformation (init, update).

    `update` steps every leaf (clipping by the global norm of all gradients); `update_trainable` takes the
    gradients of the trainable group only (None at frozen leaves), clips by their norm, and leaves the
    frozen group's moments untouched, so a frozen trunk costs neither a backward pass nor optimizer work
    and starts its Adam statistics (and bias correction) fresh when it is released.
    """

    init: Callable[[Any], PartitionedState]
    update: Callable[..., tuple[Any, PartitionedState]]
    update_trainable: Callable[..., tuple[Any, PartitionedState]]
    frozen: Any  # bool tree: True = frozen during the first `freeze_steps` updates
    freeze_steps: int


def make_optimizer(cfg: Any, params: Any, total_steps: int) -> tuple[Optimizer, optax.Schedule]:
    """AdamW (+clip, +decay mask, +freeze) from `config.optim`."""
    schedule = make_schedule(cfg, total_steps)
    freezing = cfg.freeze_steps > 0 and bool(cfg.freeze_pattern)
    frozen = path_mask(params, cfg.freeze_pattern if freezing else "")
    if freezing and not any(jax.tree.leaves(frozen)):
        raise ValueError(f"config.optim.freeze_pattern={cfg.freeze_pattern!r} matches no parameter path")
    # Moments and decay per group; the learning rate is applied once outside, from the shared count.
    inner = optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
    )
    clip = optax.clip_by_global_norm(cfg.grad_clip_norm) if cfg.grad_clip_norm and cfg.grad_clip_norm > 0 else None

    def clipped(grads):
        return grads if clip is None else clip.update(grads, clip.init(grads))[0]

    def scaled(updates, count):
        lr = schedule(count)
        return jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)

    def init_fn(p):
        trainable, fixed = split(p, frozen)
        return PartitionedState(jnp.zeros([], jnp.int32), inner.init(trainable), inner.init(fixed))

    def update_fn(grads, state, p):
        g_t, g_f = split(clipped(grads), frozen)
        p_t, p_f = split(p, frozen)
        u_t, s_t = inner.update(g_t, state.trainable, p_t)
        u_f, s_f = inner.update(g_f, state.frozen, p_f)
        return scaled(merge(frozen, u_t, u_f), state.count), PartitionedState(state.count + 1, s_t, s_f)

    def update_trainable_fn(grads_t, state, p_t):
        u_t, s_t = inner.update(clipped(grads_t), state.trainable, p_t)
        return scaled(u_t, state.count), PartitionedState(state.count + 1, s_t, state.frozen)

    return Optimizer(init_fn, update_fn, update_trainable_fn, frozen, cfg.freeze_steps if freezing else 0), schedule
