"""Fixtures for the reliability tests: the tiny BERT / demo data of tests/tasks, a tiny stage-2 config file for
`python -m phenolip_jax.main` subprocesses, and helpers to start, watch, signal and read those runs."""
import json
import os
import subprocess
import sys
import time

import pytest

from tests.tasks.conftest import REPO

# A config file loaded by absl's config_flags: configs/stage2.py shrunk like tests/tasks::tiny_stage2, without
# the distillation teacher (kd_weight=0), so a run is one process and a few seconds.
TINY_STAGE2 = '''
import importlib.util

_spec = importlib.util.spec_from_file_location("stage2_base", {stage2!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg=None):
    cfg = _base.get_config(arg)
    cfg.text.hf_dir = {bert!r}
    cfg.text.head_hidden = 16
    cfg.data.demo_dir = {demo!r}
    cfg.data.demo = dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16)
    cfg.data.image_size = 16
    cfg.data.batch_size = 16
    cfg.data.max_len = 32
    cfg.model.image = dict(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64, pool="cls")
    cfg.model.embed_dim = 16
    cfg.loss.kd_weight = 0.0
    cfg.total_steps = 16
    cfg.log_every = 1
    cfg.eval_every = 0
    cfg.checkpoint_every = 1
    cfg.optim.schedule = "constant"
    cfg.optim.warmup_steps = 0
    cfg.eval.batch_size = 16
    cfg.eval.ks = (1, 5, 10)
    return cfg
'''


@pytest.fixture(scope="session")
def tiny_stage2_config(tiny_bert_dir, tiny_demo_dir, tmp_path_factory):  # noqa: F811
    """Path of a config file for a 16-step tiny stage-2 run (checkpoint every step, loss logged every step)."""
    path = tmp_path_factory.mktemp("cfg") / "tiny_stage2.py"
    path.write_text(TINY_STAGE2.format(stage2=os.path.join(REPO, "configs", "stage2.py"), bert=tiny_bert_dir,
                                       demo=tiny_demo_dir))
    return str(path)


@pytest.fixture(scope="session")
def main_env(tmp_path_factory):
    """Environment of the subprocess runs: 2 CPU devices and a shared persistent compilation cache.

    The cache makes every run after the first skip XLA compilation (~29 s -> ~12 s a run on 2 cores); a cached
    executable is the same binary, so it cannot hide a resume difference.
    """
    env = dict(os.environ)
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               PYTHONUNBUFFERED="1")
    return env


class MainRun:
    """One `python -m phenolip_jax.main` subprocess with its output in files (no pipe can fill up)."""

    def __init__(self, config: str, workdir: str, env: dict, *overrides: str):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.log_path = os.path.join(workdir, f"run-{time.time_ns()}.log")
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "phenolip_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 600) -> int:
        """Exit code (negative: killed by that signal)."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    @property
    def output(self) -> str:
        """Everything the run printed so far."""
        with open(self.log_path) as f:
            return f.read()

    def wait_for_lines(self, n: int, timeout: float = 600) -> int:
        """Blocks until metrics.jsonl has >= n lines (returns the count); fails if the run ends first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            count = len(metric_rows(self.workdir))
            if count >= n:
                return count
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended (rc={self.proc.returncode}) before {n} metric lines:\n"
                                     + self.output[-4000:])
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"no {n} metric lines within {timeout}s:\n" + self.output[-4000:])


def metric_rows(workdir: str) -> list[dict]:
    """Complete rows of workdir/metrics.jsonl (all runs appended), in file order."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]  # the last piece may be a partial line


def losses_by_step(workdir: str) -> dict[int, list[float]]:
    """Every logged train loss per step: a step run twice (before and after a resume) has two entries."""
    out: dict[int, list[float]] = {}
    for row in metric_rows(workdir):
        if "loss" in row:
            out.setdefault(row["step"], []).append(row["loss"])
    return out
