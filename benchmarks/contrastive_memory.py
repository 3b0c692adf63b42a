"""Largest batch per device whose contrastive loss (+ gradients) fits a memory budget: plain vs chunked,
hierarchy off and on.

Run: python benchmarks/contrastive_memory.py [--dim 512] [--chunk 256] [--budget_gib 16] [--hierarchy both]

For each batch size B the loss's value-and-gradient w.r.t. both embedding matrices is compiled (on one
device; nothing is run or allocated) and XLA's `memory_analysis()` gives its temporary bytes. A fit of
temp(B) = c2 B^2 + c1 B + c0 (plain) or c1 B + c0 (chunked; its blocks are [B, chunk]) extrapolates to the
batch at which temps reach the budget; a second fit adds the inputs and outputs (the [B, D] embeddings,
their gradients and the HPO tables), which bound the chunked loss long before its temps do.
Hierarchy on: the stage-2 image-text targets are built from per-example HPO tables (config.data's
max_hpo terms x max_ancestors ancestors, max_organs organ systems), exactly as the objective builds them:
a [B, B] matrix for the plain loss, one [B, chunk] block at a time for the chunked loss.
"""
from __future__ import annotations

import argparse
import functools
import math
import platform

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import losses

GIB = 2**30
MAX_HPO, MAX_ANCESTORS, MAX_ORGANS = 4, 8, 4  # configs/stage2.py data.max_hpo / max_ancestors / max_organs


def _tables(batch: int) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Shapes of the HPO tables (terms, ancestors, hops, organs) of a batch."""
    i32 = jnp.int32
    return (jax.ShapeDtypeStruct((batch, MAX_HPO), i32), jax.ShapeDtypeStruct((batch, MAX_HPO, MAX_ANCESTORS), i32),
            jax.ShapeDtypeStruct((batch, MAX_HPO, MAX_ANCESTORS), i32), jax.ShapeDtypeStruct((batch, MAX_ORGANS), i32))


def temp_bytes(kind: str, batch: int, dim: int, chunk: int, hierarchy: bool) -> tuple[int, int]:
    """(temp bytes, argument + output bytes) of the compiled loss value-and-grad at this batch size."""
    a = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
    args = [a, a, jax.ShapeDtypeStruct((), jnp.float32)] + ([_tables(batch)] if hierarchy else [])
    rule = functools.partial(losses.hierarchical_pair_targets, hop_decay=0.5, organ_weight=0.0)

    def loss(x, y, scale, tables=None):
        targets = None
        if tables is not None and kind == "plain":
            ids = jnp.arange(batch)
            targets = rule(tables, tables, ids, ids)
        elif tables is not None:
            targets = losses.BlockTargets(rule, tables, tables)
        if kind == "plain":
            return losses.softmax_contrastive(x, y, scale, targets)
        return losses.chunked_softmax_contrastive(x, y, scale, targets, chunk=chunk)

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(*args).compile()
    mem = compiled.memory_analysis()
    return int(mem.temp_size_in_bytes), int(mem.argument_size_in_bytes + mem.output_size_in_bytes)


def fit_max_batch(batches: list[int], temps: list[int], quadratic: bool, budget: float) -> tuple[int, np.ndarray]:
    """Largest B with fitted temp(B) <= budget, and the fit's coefficients (highest power first)."""
    x = np.asarray(batches, np.float64)
    design = np.stack(([x**2] if quadratic else []) + [x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.asarray(temps, np.float64), rcond=None)
    if quadratic and coef[0] > 0:
        c2, c1, c0 = coef
        b = (-c1 + math.sqrt(c1 * c1 - 4 * c2 * (c0 - budget))) / (2 * c2)
    else:
        c1, c0 = coef[-2], coef[-1]
        b = (budget - c0) / c1 if c1 > 0 else float("inf")
    return int(b), coef


def report(batches: list[int], dim: int, chunk: int, hierarchy: bool, budget_gib: float) -> None:
    """Measures, fits and prints one table (hierarchy on or off) and its max-batch comparison."""
    print(f"\nhierarchy {'on' if hierarchy else 'off'}")
    print(f"{'B':>7} {'plain temp MiB':>15} {'chunked temp MiB':>17} {'in+out MiB':>11}")
    temps = {"plain": [], "chunked": []}
    io = []
    for b in batches:
        tp, arg = temp_bytes("plain", b, dim, chunk, hierarchy)
        tc, _ = temp_bytes("chunked", b, dim, chunk, hierarchy)
        temps["plain"].append(tp)
        temps["chunked"].append(tc)
        io.append(arg)
        print(f"{b:>7} {tp / 2**20:>15.1f} {tc / 2**20:>17.1f} {arg / 2**20:>11.1f}", flush=True)
    budget = budget_gib * GIB
    b_plain, c_plain = fit_max_batch(batches, temps["plain"], True, budget)
    b_chunk, c_chunk = fit_max_batch(batches, temps["chunked"], False, budget)
    print(f"fit plain:   temp(B) ~ {c_plain[0]:.2f} B^2 + {c_plain[1]:.0f} B + {c_plain[2]:.0f} bytes")
    print(f"fit chunked: temp(B) ~ {c_chunk[0]:.0f} B + {c_chunk[1]:.0f} bytes")
    print(f"largest batch per device with loss temps <= {budget_gib:g} GiB: plain {b_plain:,}, "
          f"chunked {b_chunk:,} (ratio {b_chunk / b_plain:.1f}x)")
    t_plain, _ = fit_max_batch(batches, [t + x for t, x in zip(temps["plain"], io)], True, budget)
    t_chunk, _ = fit_max_batch(batches, [t + x for t, x in zip(temps["chunked"], io)], False, budget)
    print(f"same with inputs/outputs counted (temps + args + outputs <= {budget_gib:g} GiB): plain {t_plain:,}, "
          f"chunked {t_chunk:,} (ratio {t_chunk / t_plain:.1f}x)")


def main() -> None:
    """Prints the tables and the max-batch comparisons for the chosen hierarchy settings."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--budget_gib", type=float, default=16.0)
    p.add_argument("--batches", default="1024,2048,4096,8192")
    p.add_argument("--hierarchy", choices=("off", "on", "both"), default="both")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); "
          f"{platform.processor() or platform.machine()}; D={args.dim}, chunk={args.chunk}, "
          f"HPO tables {MAX_HPO} terms x {MAX_ANCESTORS} ancestors, {MAX_ORGANS} organs")
    for hierarchy in {"off": [False], "on": [True], "both": [False, True]}[args.hierarchy]:
        report(batches, args.dim, args.chunk, hierarchy, args.budget_gib)


if __name__ == "__main__":
    main()
