"""Entry point: `python -m phenolip_jax.main --config=configs/stage2.py [--config.field=value] [--workdir=DIR]`.

The config's `stage` field picks what runs: stage1, stage2, eval or export.
"""
from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: workdirs/<stage>).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")


def main(argv: list[str]) -> None:
    """Initialises the runtime, validates the config and dispatches to the stage."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "grain", "etils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from phenolip_jax import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    cfg = _CONFIG.value
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config=configs/stage2.py")
    workdir = _WORKDIR.value or os.path.join("workdirs", cfg.stage)
    if cfg.stage == "stage1":
        from phenolip_jax.tasks import stage1

        stage1.run(cfg, workdir)
    elif cfg.stage == "stage2":
        from phenolip_jax.tasks import stage2

        stage2.run(cfg, workdir)
    elif cfg.stage == "eval":
        from phenolip_jax.evaluate import run as evaluate_run

        evaluate_run.run(cfg, workdir)
    elif cfg.stage == "export":
        from phenolip_jax.convert import export

        export.run(cfg)
    elif cfg.stage == "predict":
        from phenolip_jax.evaluate import predict

        predict.run(cfg, workdir)
    else:
        raise app.UsageError(f"config.stage={cfg.stage!r} is not one of stage1, stage2, eval, export")


if __name__ == "__main__":
    app.run(main)
