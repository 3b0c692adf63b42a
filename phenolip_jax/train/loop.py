"""The train loop: sharded init, AOT compile, steps, logging, evaluation, checkpoints, preemption.

The loop does I/O and bookkeeping only; all math lives in the jitted step.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from phenolip_jax.train import build as build_lib
from phenolip_jax.train import checkpoint as ckpt_lib
from phenolip_jax.train import mesh as mesh_lib
from phenolip_jax.train.logger import MetricLogger
from phenolip_jax.train.step import Objective, TrainState

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Raised after too many consecutive non-finite steps (a checkpoint of the last good state is written)."""


class _Preemption:
    """Turns SIGTERM into a stop between steps, so the current step finishes and is saved.

    One process: our handler sets a flag. Several processes: JAX's preemption service (started by
    jax.distributed.initialize, with its own SIGTERM handler) tells every host the same step to stop at.
    Installing ours there would replace that handler, and a host that stopped alone would leave the others
    waiting in the next collective.
    """

    def __init__(self):
        self.requested = False
        self._old = None
        self.multihost = jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)

    def __enter__(self):
        def handler(signum, frame):
            del frame
            log.warning("signal %d received: finishing the current step, then checkpointing", signum)
            self.requested = True

        if self.multihost:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. under some test runners)
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def should_stop(self, step: int) -> bool:
        """True once a preemption notice arrived (multi-host: at the step all hosts agreed on)."""
        if self.multihost:
            from jax.experimental import multihost_utils

            # Must be called with the current step on every host at every step (JAX's sync protocol).
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.requested


def init_state(
    cfg: Any, params: Any, teacher: Any, mesh: jax.sharding.Mesh, objective: Objective | None = None
) -> tuple[TrainState, Any, Any, Any]:
    """Places params/teacher on the mesh and builds the sharded initial state (+ tx, schedule, shardings)."""
    step = build_lib.build_step(cfg, mesh, objective, params, teacher)
    return _initial_state(cfg, step, params, teacher), step.tx, step.schedule, step.shardings


def _initial_state(cfg: Any, step: build_lib.ShardedStep, params: Any, teacher: Any) -> TrainState:
    teacher = teacher if teacher is not None else {}
    params = jax.device_put(params, step.shardings.params)
    teacher = jax.device_put(teacher, step.shardings.teacher)
    return step.make_state(params, teacher, jax.random.key_data(jax.random.key(cfg.seed)))


def _compile(step: build_lib.ShardedStep, batch: dict[str, np.ndarray]):
    shapes = {k: ((v.shape[0] * jax.process_count(),) + tuple(v.shape[1:]), v.dtype) for k, v in batch.items()}
    compiled, seconds = build_lib.compile_step(step, build_lib.abstract_batch(shapes, step.mesh))
    mem = compiled.memory_analysis()
    if mem is not None and jax.process_index() == 0:
        gib = 1 / 2**30
        print(
            f"compiled train step in {seconds:.1f}s; per-device memory: "
            f"args {mem.argument_size_in_bytes * gib:.2f} GiB, temps {mem.temp_size_in_bytes * gib:.2f} GiB, "
            f"outputs {mem.output_size_in_bytes * gib:.2f} GiB",
            flush=True,
        )
    return compiled


def train(
    cfg: Any,
    workdir: str,
    *,
    params: Any,
    objective: Objective,
    make_data_iter: Callable[[], Iterator[dict[str, np.ndarray]]],
    teacher: Any = None,
    evaluate: Callable[[TrainState], dict[str, float]] | None = None,
    progress_keys: tuple[str, ...] = ("loss",),
    eval_keys: tuple[str, ...] | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Runs `cfg.total_steps` steps (resuming from `workdir/checkpoints`); returns the state and last eval."""
    mesh = mesh_lib.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    step_build = build_lib.build_step(cfg, mesh, objective, params, teacher)
    state = _initial_state(cfg, step_build, params, teacher)
    shardings = step_build.shardings
    data_iter = make_data_iter()
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    newest = ckpt.latest_step()
    if newest is not None:
        abstract = ckpt_lib.abstract_like(state, shardings)
        step0, state, _ = ckpt.restore(abstract, data_iter)
        if step0 != newest:
            print(f"WARNING: checkpoint step {newest} in {ckpt.directory} is unreadable or corrupt; "
                  f"fell back to step {step0}", flush=True)
        print(f"resumed from {ckpt.directory} at step {step0}", flush=True)
    logger = MetricLogger(workdir, cfg.total_steps)
    start = int(jax.device_get(state.step))
    batch = next(data_iter)
    compiled = _compile(step_build, batch)
    last_eval: dict[str, float] = {}
    t_last, n_last = time.time(), start
    with _Preemption() as preempt:
        step = start
        while step < cfg.total_steps:
            state, metrics = compiled(state, mesh_lib.host_to_global(batch, mesh))
            step += 1
            # One scalar per step (a host sync, cheap next to a step): a skipped step must be noticed even
            # between log steps, or a streak shorter than log_every would never stop the run.
            streak = int(jax.device_get(metrics["nonfinite_streak"]))
            if streak:
                log.warning("step %d: non-finite loss or gradients, update skipped (%d in a row, %d in total)",
                            step, streak, int(jax.device_get(state.nonfinite_total)))
            if step % cfg.log_every == 0 or step == cfg.total_steps or streak >= cfg.max_nonfinite_steps:
                metrics = jax.device_get(metrics)
                now = time.time()
                metrics["pairs_per_s"] = (step - n_last) * batch_rows(batch) * jax.process_count() / (now - t_last)
                t_last, n_last = now, step
                scalars = logger.write(step, metrics)
                logger.progress(step, scalars, progress_keys)
            if streak >= cfg.max_nonfinite_steps:
                # Skipped steps leave params and optimizer state untouched: this is the last good state.
                ckpt.save(step, state, data_iter, meta={"step": step, "reason": "nonfinite"}, force=True)
                ckpt.close()
                logger.close()
                raise NonFiniteError(
                    f"{streak} consecutive non-finite steps (config.max_nonfinite_steps="
                    f"{cfg.max_nonfinite_steps}) at step {step}: stopped; the last good parameters are "
                    f"checkpointed in {ckpt.directory} (step {step}); lower config.optim.lr or check the data"
                )
            if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.total_steps):
                last_eval = evaluate(state)
                logger.write(step, last_eval, prefix="eval/")
                if jax.process_index() == 0:
                    shown = {k: v for k, v in last_eval.items() if eval_keys is None or k in eval_keys}
                    print("eval @ %d: %s" % (step, format_metrics(shown)), flush=True)
            stop = preempt.should_stop(step)
            if stop or step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                ckpt.save(step, state, data_iter, meta={"step": step}, force=stop)
            if stop:
                ckpt.close()
                logger.close()
                print(f"preempted: checkpoint at step {step} written to {ckpt.directory}; "
                      "rerun the same command to resume", flush=True)
                raise SystemExit(0)
            if step < cfg.total_steps:
                batch = next(data_iter)
    ckpt.close()
    logger.close()
    return state, last_eval


def batch_rows(batch: dict[str, np.ndarray]) -> int:
    """Rows (examples) in a host batch."""
    return int(next(iter(batch.values())).shape[0])


def format_metrics(metrics: dict[str, float]) -> str:
    """One-line rendering of a metric dict."""
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))
