"""`--aot=TOPOLOGY`: compile a config's real train step for a TPU slice from this host and report the fit."""
from __future__ import annotations

from typing import Any

from phenolip_jax import config_checks, config_lib
from phenolip_jax.tasks import stage1, stage2
from phenolip_jax.train import aot

ABSTRACT_STEPS = {"stage1": stage1.abstract_step, "stage2": stage2.abstract_step}


def compile_config(cfg: Any, topology: str) -> aot.AotReport:
    """Builds the config's step (the run's builder, abstract inputs) on the topology's mesh and compiles it."""
    if cfg.stage not in ABSTRACT_STEPS:
        raise ValueError(f"--aot compiles a training stage; config.stage={cfg.stage!r} is not one of "
                         f"{sorted(ABSTRACT_STEPS)}")
    mesh = aot.topology_mesh(topology, cfg.mesh.data, cfg.mesh.fsdp)
    config_checks.validate(cfg, mesh.size, aot=True)
    step, batch = ABSTRACT_STEPS[cfg.stage](cfg, mesh)
    return aot.compile_report(topology, step, batch)


def run(cfg: Any, topology: str) -> int:
    """Prints the AOT report; returns the exit status (1 when the step does not fit)."""
    report = compile_config(cfg, topology)
    print(aot.format_report(report, f"{cfg.stage} batch {config_lib.global_batch(cfg)}"), flush=True)
    return 0 if report.fits else 1
