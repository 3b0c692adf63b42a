"""XLA FLOPs and bytes of the stage-2 train step in the tower-freeze phase against the full step.

Run: python benchmarks/freeze_flops.py [--preset small|vit_b16_bert_base] [--context N] [--batch N]

The model, loss and optimizer are benchmarks/train_step.py's (`build`), with the config's
`optim.freeze_pattern` (the two towers' trunks) frozen. Both phases of `train.step.make_train_step` are
compiled for one device from abstract shapes (nothing is run) and XLA's `cost_analysis()` is read:
the freeze phase differentiates the trainable leaves only (no trunk backward pass, no trunk moments).
"""
from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from phenolip_jax.models import layers, two_tower
from phenolip_jax.train import objectives, optimizer
from phenolip_jax.train.step import create_state, make_train_step
from train_step import PRESETS, build  # benchmarks/train_step.py: the benchmarked model, one definition


def phase_costs(preset: str, context: int | None, batch: int | None) -> tuple[dict[str, dict[str, float]], int]:
    """{phase: {'flops', 'bytes accessed'}} of the compiled step, and the batch size."""
    cfg, fields = build(preset, context, batch, "float32")
    cfg.optim.freeze_steps = 1
    dtype = layers.canonical_dtype(cfg.model.dtype)
    model = two_tower.TwoTower(image_config=fields["image_config"], text_config=fields["text_config"],
                               logit_scale_init=math.log(cfg.model.logit_scale_init), dtype=dtype)
    teacher_model = two_tower.TextTower(**fields["text_config"], dtype=dtype)
    s, n, length = cfg.data.image_size, cfg.data.batch_size, cfg.data.max_len
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, s, s, 3)),
                                               jnp.zeros((1, 8), jnp.int32))["params"])
    tx, schedule = optimizer.make_optimizer(cfg.optim, params, cfg.total_steps)
    teacher = {"params": {"text": params["text"]}}
    state = jax.eval_shape(lambda p, t: create_state(p, tx, jax.random.key_data(jax.random.key(0)), t), params, teacher)
    batch_shapes = dict(image=jax.ShapeDtypeStruct((n, s, s, 3), jnp.float32),
                        input_ids=jax.ShapeDtypeStruct((n, length), jnp.int32),
                        attention_mask=jax.ShapeDtypeStruct((n, length), jnp.int32))
    objective = objectives.stage2_objective(model, teacher_model, cfg)
    out = {}
    for phase in ("freeze", "full"):
        step = make_train_step(objective, tx, schedule, phase=phase, max_logit_scale=cfg.max_logit_scale)
        cost = jax.jit(step).lower(state, batch_shapes).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out[phase] = {k: float(cost.get(k, float("nan"))) for k in ("flops", "bytes accessed")}
    return out, n


def main() -> None:
    """Prints both phases' FLOPs and bytes per step and per pair, and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--context", type=int, default=None, help="text tokens (default: the config's max_len)")
    p.add_argument("--batch", type=int, default=None, help="batch (default: the config's batch_size)")
    args = p.parse_args()
    costs, n = phase_costs(args.preset, args.context, args.batch)
    print(f"jax {jax.__version__} on {jax.default_backend()}; preset {args.preset}, batch {n}, "
          f"context {args.context or 'config'}")
    for phase, c in costs.items():
        print(f"{phase:>6}: {c['flops'] / 1e9:10.2f} GFLOP/step ({c['flops'] / n / 1e9:.3f} per pair), "
              f"{c['bytes accessed'] / 1e9:8.2f} GB accessed/step")
    print(f"freeze / full: FLOPs {costs['freeze']['flops'] / costs['full']['flops']:.3f}, "
          f"bytes {costs['freeze']['bytes accessed'] / costs['full']['bytes accessed']:.3f}")


if __name__ == "__main__":
    main()
