"""Multi-process start-up: `jax.distributed.initialize()` only when this is one of several processes."""
from __future__ import annotations

import os

import jax


def is_multiprocess_env(environ: dict[str, str] | None = None) -> bool:
    """True on a TPU pod slice, under a multi-task SLURM job, or with a JAX coordinator set in the env."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return True
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    return len(hosts) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Initialises JAX's distributed runtime when needed; returns whether it did."""
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        return True
    if is_multiprocess_env():
        jax.distributed.initialize()  # cluster auto-detection (TPU pod, SLURM, env coordinator)
        return True
    return False
