"""Fit table: compile paper-sized train steps for TPU slices on this host (`--aot`) and tabulate the reports.

    python benchmarks/aot_fit.py --runs=goal            # compile the named run set, one at a time
    python benchmarks/aot_fit.py --table                # print benchmarks/aot_fit.jsonl as a Markdown table
    python benchmarks/aot_fit.py --loss_traffic         # the stage-2 loss alone at 32K: hierarchy off vs on

Each run appends one JSON line (config, topology, overrides, the AotReport figures) to --out; a run that
fails to compile records its error. Needs libtpu (`pip install "jax[tpu]==0.10.2"`); set JAX_PLATFORMS=cpu.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from phenolip_jax import config_lib
from phenolip_jax.tasks import aot as aot_task
from phenolip_jax.train import aot

S2 = ("stage2", "biomedclip")
S1 = ("stage1", "pubmedbert")
FUSED_OK = {"text.attention_dropout": 0.0}  # BERT's 0.1 attention dropout blocks the fused kernels


def _s2(topology: str, batch: int, attention: str = "splash", remat: str = "full", extra: dict | None = None
        ) -> tuple:
    """A biomedclip stage-2 run: global batch, attention, remat, the blockwise loss, `extra` dotted fields."""
    overrides = {"data.batch_size": batch, **(extra or {}), "model.attention": attention, "model.remat": remat,
                 "loss.chunk": 512, **FUSED_OK}
    return (*S2, topology, overrides)


# (config, variant, topology, overrides); batches are global.
RUN_SETS: dict[str, list[tuple[str, str, str, dict]]] = {
    "goal": [_s2("v5p:4x4x4", 32768), _s2("v5p:4x4x4", 32768, "xla")],
    "baseline": [
        (*S2, "v5p:4x4x4", {"data.batch_size": 4096, "model.attention": "xla", **FUSED_OK}),
        (*S2, "v5p:4x4x4", {"data.batch_size": 4096, "model.attention": "splash", **FUSED_OK}),
    ],
    "ctx77": [_s2("v5p:4x4x4", 32768, extra={"data.max_len": 77})],
    "stage1": [
        (*S1, "v5p:2x2x2", {"data.terms_per_batch": 1024, "text.attention": "splash", "text.remat": "full",
                            **FUSED_OK}),
    ],
    # 8-chip slices of each generation, the per-chip batch sized to the chip's HBM
    "slices": [_s2("v5p:2x2x2", 4096), _s2("v4:2x2x2", 2048), _s2("v5e:2x4", 1024)],
    # the 8-chip v4 / v5e rows at twice the per-chip batch, and their XLA-attention twins
    "slices2": [_s2("v4:2x2x2", 4096), _s2("v5e:2x4", 2048), _s2("v4:2x2x2", 2048, "xla"),
                _s2("v5e:2x4", 1024, "xla")],
    # the goal step with less recomputation: XLA's FLOPs then count less repeated work
    "remat": [_s2("v5p:4x4x4", 32768, remat="save_dots"), _s2("v5p:4x4x4", 32768, remat="none")],
    "largest": [_s2("v5p:4x4x4", 131072)],  # 4x the goal batch on the same slice
    "small": [  # seconds-scale check of the script itself
        ("stage2", "demo", "v5e:2x2", {"data.batch_size": 16, "loss.kd_weight": 0.0}),
    ],
}


def make_config(config: str, variant: str, overrides: dict):
    """The config with dotted-field overrides applied."""
    cfg = config_lib.load_config(config, variant)
    for dotted, value in overrides.items():
        node = cfg
        *path, leaf = dotted.split(".")
        for key in path:
            node = node[key]
        if leaf == "remat" and isinstance(value, bool):  # records written when remat was a bool
            value = "full" if value else "none"
        node[leaf] = value
    return cfg


def _commit() -> str:
    """The checkout's short commit (+ '-dirty' with uncommitted changes): which code a record measured."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def run_one(config: str, variant: str, topology: str, overrides: dict) -> dict:
    """Compiles one run; its JSON record."""
    record = dict(config=config, variant=variant, topology=topology, overrides=overrides, when=time.strftime("%F %T"),
                  commit=_commit())
    try:
        report = aot_task.compile_config(make_config(config, variant, overrides), topology)
        record.update(aot.as_dict(report))
        print(aot.format_report(report, f"{config}:{variant} {overrides}"), flush=True)
    except Exception as e:  # recorded, so a sweep goes on
        record["error"] = f"{type(e).__name__}: {e}"[:500]
        print(f"{config}:{variant} on {topology} {overrides}: {record['error']}", flush=True)
    return record


def loss_traffic(topology: str = "v5p:4x4x4", batch: int = 32768, dim: int = 512, chunk: int = 512) -> None:
    """Compiles only the stage-2 image-text loss (+ grads) at a global batch, hierarchy off and on: its traffic."""
    import jax
    import jax.numpy as jnp

    from phenolip_jax import losses
    from phenolip_jax.train import mesh as mesh_lib
    from phenolip_jax.tasks import common
    from phenolip_jax.train import objectives

    cfg = config_lib.load_config("stage2", "biomedclip")
    mesh = aot.topology_mesh(topology)
    sharding = mesh_lib.batch_sharding(mesh)
    sd = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)  # noqa: E731
    m, a = cfg.data.max_hpo, common.ancestor_width(cfg)
    tables = dict(hpo=sd((batch, m), jnp.int32), hpo_anc=sd((batch, m, a), jnp.int32),
                  hpo_hops=sd((batch, m, a), jnp.int32), organs=sd((batch, cfg.data.max_organs), jnp.int32))
    emb = sd((batch, dim), jnp.float32)
    for hier in (False, True):
        cfg.loss.hierarchy.enabled = hier

        def loss(v, t, b):
            # As the stage-2 objective builds them for a chunked loss: per [B, chunk] block, never [B, B].
            targets = objectives.pair_targets(b, cfg.loss.hierarchy, blockwise=True)
            return losses.chunked_softmax_contrastive(v, t, jnp.float32(25.0), targets, chunk=chunk)

        t0 = time.time()
        with jax.set_mesh(mesh):
            c = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(emb, emb, tables).compile()
        cost, mem = c.cost_analysis(), c.memory_analysis()
        print(f"loss at B={batch} on {topology}, hierarchy={hier}: {cost['flops'] / 1e12:.3f} TFLOP, "
              f"{cost['bytes accessed'] / 1e9:.1f} GB per chip, temps {mem.temp_size_in_bytes / 2**30:.2f} GiB, "
              f"{time.time() - t0:.0f}s", flush=True)


def table(path: str) -> str:
    """Markdown rows of the records in `path`."""
    gib = 2.0**30
    rows = ["| config | slice | global batch (/chip) | attention | remat | fsdp | chunk | GiB/chip (HBM) | fits |"
            " TFLOP/chip | GB/chip | roofline ms | bound | MFU ceiling | compile s | commit |",
            "|---" * 16 + "|"]
    for line in open(path):
        r = json.loads(line)
        o = r["overrides"]
        cfg = make_config(r["config"], r["variant"], o)
        batch = config_lib.global_batch(cfg)
        attention = cfg.model.attention if "model" in cfg else cfg.text.attention
        remat = cfg.model.remat if "model" in cfg else cfg.text.remat
        chunk = cfg.loss.get("chunk", "-")
        ctx = f" ctx {cfg.data.max_len}"
        head = (f"| {r['config']}:{r['variant']}{ctx} | {r['topology']} | {batch}"
                f" ({batch // max(r.get('chips', 1), 1)}) | {attention} | {remat} | {cfg.mesh.fsdp} | {chunk} |")
        if "error" in r:
            rows.append(head + f" error: {r['error'][:80]} |" + " |" * 7 + f" {r.get('commit', '-')} |")
            continue
        rows.append(head + f" {r['total_bytes'] / gib:.1f} ({r['hbm_bytes'] / gib:.0f}) | {'yes' if r['fits'] else 'NO'}"
                    f" | {r['flops'] / 1e12:.1f} | {r['bytes_accessed'] / 1e9:.0f} | {1e3 * r['step_time_bound_s']:.0f}"
                    f" | {r['bound']} | {100 * r['mfu_ceiling']:.0f}% | {r['compile_s']:.0f} | {r.get('commit', '-')} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="", help=f"comma-separated run sets: {sorted(RUN_SETS)}")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "aot_fit.jsonl"))
    p.add_argument("--table", action="store_true", help="print the records in --out as a Markdown table")
    p.add_argument("--loss_traffic", action="store_true", help="compile the stage-2 loss alone at 32K, hierarchy off/on")
    args = p.parse_args()
    if args.loss_traffic:
        loss_traffic()
    for name in filter(None, args.runs.split(",")):
        for run in RUN_SETS[name]:
            record = run_one(*run)
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    if args.table:
        print(table(args.out))


if __name__ == "__main__":
    main()
