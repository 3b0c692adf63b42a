"""Entry point: `python -m phenolip_jax.main --config=configs/stage2.py [--config.field=value] [--workdir=DIR]`.

The config's `stage` field picks what runs: stage1, stage2, eval, export, predict, link, serve or ablation. The
whole config is validated before anything is loaded; a mistake is reported in one line naming the field (exit
code 2). `--list_config` prints a config's fields with their comments and its variants. Training stages save the
config in the workdir and refuse to resume with one that changes the run's meaning (`--allow_config_change`
overrides).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from phenolip_jax import config_checks, config_lib, config_tools, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: workdirs/<stage>).")
_LIST_CONFIG = flags.DEFINE_bool("list_config", False, "Print the config's fields, comments and variants; exit.")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False,
                                  "Resume a workdir although the config differs from its saved config.json in "
                                  "fields that change the run (model, data, loss, optimizer).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
_AOT = flags.DEFINE_string("aot", None, "Compile the train step for a TPU slice (e.g. v5p:4x4x4) ahead of time on "
                           "this host, print its fit and roofline, run nothing; exit 1 if it does not fit.")

TRAINING_STAGES = ("stage1", "stage2")
# The module whose `run` each stage calls. They are imported only after the config has been validated: they pull
# in flax, transformers, torch and sklearn (seconds a config mistake should not wait for). Importing them touches
# no device, so jax.distributed.initialize() still comes first.
STAGE_MODULES = {
    "stage1": "phenolip_jax.tasks.stage1",
    "stage2": "phenolip_jax.tasks.stage2",
    "ablation": "phenolip_jax.tasks.ablation",
    "eval": "phenolip_jax.evaluate.run",
    "export": "phenolip_jax.convert.export",
    "predict": "phenolip_jax.evaluate.predict",
    "link": "phenolip_jax.link.run",
    "serve": "phenolip_jax.serve.server",
}
AOT_MODULE = "phenolip_jax.tasks.aot"


def _fail(message: str) -> None:
    """Exits with code 2 after one line on stderr (no traceback: the line says what to change)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad `--config...` flag reported in one line instead of chained tracebacks."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 (config_flags raises AttributeError/KeyError/ValueError/flags.Error)
        _fail(config_tools.flag_error_line(e, argv))


@contextlib.contextmanager
def one_line_errors():
    """Turns config_lib.UserError, and ValueError / FileNotFoundError naming a config field ('config.x...'), into
    one line. Any other exception keeps its traceback (it is ours to fix)."""
    try:
        yield
    except config_lib.UserError as e:
        _fail(str(e))
    except (ValueError, FileNotFoundError) as e:
        if not str(e).startswith("config."):
            raise
        _fail(str(e))


def prepare(cfg, workdir: str) -> None:
    """Validation and the run's config memory: everything that can refuse a run, before any data is loaded."""
    if cfg.stage == "export" and not cfg.output:
        cfg.output = workdir  # as predict and eval write into the --workdir
    config_checks.validate(cfg, jax.device_count())
    if cfg.stage in TRAINING_STAGES:
        changes = config_tools.check_resume_config(cfg, workdir, allow_changes=_ALLOW_CHANGE.value)
        if changes:
            print(f"WARNING: --allow_config_change: resuming with {len(changes)} changed fields: "
                  + "; ".join(f"config.{k}: {a!r} -> {b!r}" for k, a, b in changes), flush=True)
        if jax.process_index() == 0:
            config_tools.save_run_config(cfg, workdir)


def dispatch(cfg, workdir: str) -> None:
    """Runs the stage the config names."""
    if cfg.stage in TRAINING_STAGES and not cfg.eval_only:
        step = config_tools.finished_step(workdir, cfg.total_steps)
        if step is not None:
            print(f"{workdir} is a finished run (step {step} of {cfg.total_steps}; results in "
                  f"{os.path.join(workdir, 'eval.json')}): nothing to do. --config.eval_only=True evaluates it again; "
                  "a larger --config.total_steps trains on", flush=True)
            return
    module = importlib.import_module(STAGE_MODULES[cfg.stage])
    if cfg.stage == "export":
        module.run(cfg)
    else:
        module.run(cfg, workdir)


def main(argv: list[str]) -> None:
    """Validates the config, initialises the runtime and dispatches to the stage."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = _CONFIG.value
    if cfg is None:
        _fail("--config is required, e.g. --config=configs/stage2.py")
    if _LIST_CONFIG.value:
        print(config_tools.describe_config(config_flags.get_config_filename(flags.FLAGS["config"]), cfg))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "grain", "etils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if _AOT.value:  # compile for a TPU slice on this host: no accelerator, no distributed runtime
        # Nothing runs on local devices: keep JAX off any local TPU/GPU (jax is imported already, so through its
        # config rather than JAX_PLATFORMS), and let libtpu load next to another process using it.
        jax.config.update("jax_platforms", "cpu")
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        with one_line_errors():
            raise SystemExit(importlib.import_module(AOT_MODULE).run(cfg, _AOT.value))
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    workdir = _WORKDIR.value or os.path.join("workdirs", str(cfg.stage))
    try:
        prepare(cfg, workdir)
    except ValueError as e:  # config mistakes (config_tools.ConfigMismatchError included)
        _fail(str(e))
    try:
        with one_line_errors():
            dispatch(cfg, workdir)
    except KeyboardInterrupt:
        # Ctrl-C inside the train loop checkpoints and exits 0 (train/loop.py); this is Ctrl-C outside it.
        print("interrupted (Ctrl-C) outside the training steps: nothing to checkpoint", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
