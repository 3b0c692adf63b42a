"""The train loop: sharded init, AOT compile, steps, logging, evaluation, checkpoints, preemption.

The loop does I/O and bookkeeping only; all math lives in the jitted step.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
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
    """Turns SIGTERM and Ctrl-C (SIGINT) into a stop between steps, so the current step finishes and is saved.

    A second Ctrl-C aborts at once (the default SIGINT action: no checkpoint). One process: our handler sets a
    flag. Several processes: JAX's preemption service (started by jax.distributed.initialize, with its own
    SIGTERM handler) tells every host the same step to stop at. Installing ours there would replace that
    handler, and a host that stopped alone would leave the others waiting in the next collective; Ctrl-C there
    keeps its default action too.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        # The last step handed to the device (the loop runs ahead of the progress line, which shows the last
        # step read back), and the last step checked for a stop: a stop finishes and checkpoints `started`, or
        # the next step when `started` was already checked (the loop hands out one more before it looks again).
        self.started = 0
        self.checked = -1
        self._old: dict[int, Any] = {}
        self.multihost = jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)

    def _handler(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.requested:
            # The second Ctrl-C: the user wants out now. Re-deliver SIGINT with its default action.
            print("second interrupt: aborting at once, without a checkpoint", file=sys.stderr, flush=True)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else f"signal {signum}"
        last = self.started + 1 if self.checked >= self.started else self.started
        print(f"{name} received: finishing step {last} (steps are started ahead of the progress line), then "
              "checkpointing it (press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)
        self.requested = True

    def __enter__(self):
        if self.multihost:
            return self
        for signum in self.SIGNALS:
            try:
                self._old[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread (e.g. under some test runners)
                pass
        return self

    def __exit__(self, *exc):
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old = {}

    def should_stop(self, step: int) -> bool:
        """True once a preemption notice arrived (multi-host: at the step all hosts agreed on)."""
        if self.multihost:
            from jax.experimental import multihost_utils

            # Must be called with the current step on every host at every step (JAX's sync protocol).
            return bool(multihost_utils.reached_preemption_sync_point(step))
        stop = self.requested
        self.checked = step
        return stop


def resume_command() -> str:
    """The command line of this process, to print after a preemption ('python -m phenolip_jax.main ...')."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("phenolip_jax", "main.py")):
        argv[0:1] = ["python", "-m", "phenolip_jax.main"]
    return " ".join(shlex.quote(a) for a in argv)


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


def _signature(batch: dict[str, np.ndarray]) -> tuple:
    """A host batch's shapes and dtypes: batches with equal signatures share one compiled step."""
    return tuple(sorted((k, v.shape, v.dtype.str) for k, v in batch.items()))


def _compile(step: build_lib.ShardedStep, batch: dict[str, np.ndarray]):
    shapes = {k: ((v.shape[0] * jax.process_count(),) + tuple(v.shape[1:]), v.dtype) for k, v in batch.items()}
    compiled, seconds = build_lib.compile_step(step, build_lib.abstract_batch(shapes, step.mesh))
    mem = compiled.memory_analysis()
    if mem is not None and jax.process_index() == 0:
        gib = 1 / 2**30
        text = f" for captions of {batch['input_ids'].shape[1]} tokens" if "input_ids" in batch else ""
        print(
            f"compiled train step{text} in {seconds:.1f}s; per-device memory: "
            f"args {mem.argument_size_in_bytes * gib:.2f} GiB, temps {mem.temp_size_in_bytes * gib:.2f} GiB, "
            f"outputs {mem.output_size_in_bytes * gib:.2f} GiB",
            flush=True,
        )
    return compiled


class _StepCache:
    """One compiled step per batch shape (a caption length bucket), compiled on first use."""

    def __init__(self, step: build_lib.ShardedStep):
        self.step, self.compiled = step, {}

    def __call__(self, batch: dict[str, np.ndarray]):
        key = _signature(batch)
        if key not in self.compiled:
            self.compiled[key] = _compile(self.step, batch)
        return self.compiled[key]


class _Position:
    """A data-iterator position recorded earlier, saved in its place: the loop draws (and stages) the next
    batch before the checkpoint of the current step, so the live iterator is one batch ahead of it."""

    def __init__(self, state: Any):
        self.state = state

    def get_state(self) -> bytes:
        return self.state if isinstance(self.state, bytes) else json.dumps(self.state, indent=4).encode()


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
    """Runs `cfg.total_steps` steps (resuming from `workdir/checkpoints`); returns the state and last eval.

    The host never waits on the device between looks: steps are dispatched asynchronously, the next batch is
    drawn and copied to the device while a step runs, and metrics (the non-finite streak included) are fetched
    in one transfer at log, evaluation and checkpoint steps. A streak of `max_nonfinite_steps` freezes the
    state on the device (`halt_after_streak`) until the host sees it there. Batches of another shape (caption
    length buckets, `data.length_buckets`) get their own compiled step, compiled when first drawn.
    """
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
    start = int(jax.device_get(state.step))
    # Rows past the restored step are dropped: those steps run again, and each is logged once.
    logger = MetricLogger(workdir, cfg.total_steps, resume_step=start)
    batch = next(data_iter)
    steps = _StepCache(step_build)
    compiled = steps(batch)
    staged = mesh_lib.host_to_global(batch, mesh)
    rows = batch_rows(batch) * jax.process_count()
    last_eval: dict[str, float] = {}
    pending: list[tuple[int, Any, Any]] = []  # (step, device metrics, data position) not yet looked at
    t_last, n_last = time.time(), start

    def finish() -> None:
        ckpt.close()
        logger.close()

    with _Preemption() as preempt:
        step = start
        while step < cfg.total_steps:
            preempt.started = step + 1
            state, metrics = compiled(state, staged)  # dispatched: returns before the device is done
            step += 1
            position = data_iter.get_state()  # where a checkpoint at `step` resumes the data
            pending.append((step, metrics, position))
            if step < cfg.total_steps:  # the next batch is read and copied while this step runs
                batch = next(data_iter)
                compiled = steps(batch)  # its caption-length bucket's step (compiled while this step runs)
                staged = mesh_lib.host_to_global(batch, mesh)
            stop = preempt.should_stop(step)
            evaluating = evaluate is not None and cfg.eval_every and (
                step % cfg.eval_every == 0 or step == cfg.total_steps)
            saving = stop or step % cfg.checkpoint_every == 0 or step == cfg.total_steps
            if not (saving or evaluating or step % cfg.log_every == 0):
                continue
            # The one device-to-host transfer of this stretch of steps.
            fetched = jax.device_get([m for _, m, _ in pending])
            now = time.time()
            for (s, _, pos), m in zip(pending, fetched):
                streak = int(m["nonfinite_streak"])
                if streak:
                    log.warning("step %d: non-finite loss or gradients, update skipped (%d in a row, %d in total)",
                                s, streak, int(m.pop("nonfinite_total")))
                m.pop("nonfinite_total", None)
                if s == step or streak >= cfg.max_nonfinite_steps:
                    m["pairs_per_s"] = (s - n_last) * rows / max(now - t_last, 1e-9)
                    logger.progress(s, logger.write(s, m), progress_keys)
                if streak >= cfg.max_nonfinite_steps:
                    # The device froze the state at step s (halt_after_streak): skipped steps leave params and
                    # optimizer state untouched, so this is the last good state.
                    ckpt.save(s, state, _Position(pos), meta={"step": s, "reason": "nonfinite"}, force=True)
                    finish()
                    raise NonFiniteError(
                        f"{streak} consecutive non-finite steps (config.max_nonfinite_steps="
                        f"{cfg.max_nonfinite_steps}) at step {s}: stopped; the last good parameters are "
                        f"checkpointed in {ckpt.directory} (step {s}); lower config.optim.lr or check the data"
                    )
            pending.clear()
            t_last, n_last = now, step
            if evaluating:
                last_eval = evaluate(state)
                logger.write(step, last_eval, prefix="eval/")
                if jax.process_index() == 0:
                    shown = {k: v for k, v in last_eval.items() if eval_keys is None or k in eval_keys}
                    print("eval @ %d: %s" % (step, format_metrics(shown)), flush=True)
            if saving:
                ckpt.save(step, state, _Position(position), meta={"step": step}, force=stop)
            if stop:
                finish()
                print(f"preempted: checkpoint at step {step} written to {ckpt.directory}; "
                      f"rerun the same command to resume: {resume_command()}", flush=True)
                raise SystemExit(0)
    finish()
    return state, last_eval


def batch_rows(batch: dict[str, np.ndarray]) -> int:
    """Rows (examples) in a host batch."""
    return int(next(iter(batch.values())).shape[0])


def format_metrics(metrics: dict[str, float]) -> str:
    """One-line rendering of a metric dict."""
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))
