"""Multi-process start-up: `jax.distributed.initialize()` only when this is one of several processes.

How a run finds out (first match wins):
  1. explicit flags: `--coordinator_address=host:port --num_processes=N --process_id=i` (any platform;
     how the CPU multi-process tests and hand-rolled launches start);
  2. `PHENOLIP_DISTRIBUTED=1`: always call `jax.distributed.initialize()` and let JAX detect the cluster
     (Cloud TPU VM slices, whose workers learn their peers from the metadata server; launch/tpu_pod.sh
     sets it); `PHENOLIP_DISTRIBUTED=0` never initialises (e.g. a single-task debug run inside SLURM);
  3. otherwise (`auto`) the environment: a JAX coordinator variable, a SLURM step with several tasks, or
     several TPU worker hostnames.
Under SLURM JAX gives each process the one GPU numbered by SLURM_LOCALID, so launch one task per GPU
(launch/slurm_gpu.sbatch does).
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

MODES = ("auto", "1", "0")


def mode(environ: dict[str, str] | None = None) -> str:
    """`PHENOLIP_DISTRIBUTED` ('auto' when unset); rejects values other than auto, 1, 0."""
    env = os.environ if environ is None else environ
    value = env.get("PHENOLIP_DISTRIBUTED", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"PHENOLIP_DISTRIBUTED={value!r}: use one of {MODES}")
    return value


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
               process_id: int | None = None, environ: dict[str, str] | None = None) -> bool:
    """Initialises JAX's distributed runtime when needed; returns whether it did."""
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes})")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        how = mode(environ)
        if how == "0" or (how == "auto" and not is_multiprocess_env(environ)):
            return False
        jax.distributed.initialize()  # cluster auto-detection (TPU pod, SLURM, env coordinator)
    log.info("%s", describe())
    return True


def describe() -> str:
    """One line: this process's index, the process count and the local / global devices."""
    local = jax.local_devices()
    kind = local[0].device_kind if local else "none"
    return (f"process {jax.process_index()}/{jax.process_count()}: {len(local)} local of "
            f"{jax.device_count()} {jax.default_backend()} devices ({kind})")
