"""End to end in subprocesses: SIGKILL, SIGTERM and Ctrl-C (SIGINT) mid-run, a corrupt newest checkpoint, then
resume; the losses of every step and the final parameters must equal those of a run that was never interrupted,
and metrics.jsonl holds every step exactly once."""
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.reliability.conftest import MainRun, losses_by_step, metric_rows
from tests.reliability.corrupt import flip_middle_byte, largest_array_file

TOTAL_STEPS = 16  # tiny_stage2_config's total_steps


@pytest.fixture(scope="module")
def reference(tiny_stage2_config, main_env, tmp_path_factory):
    """An uninterrupted run: (workdir, losses by step, final params)."""
    from phenolip_jax import artifacts

    workdir = str(tmp_path_factory.mktemp("reference"))
    run = MainRun(tiny_stage2_config, workdir, main_env)
    assert run.wait() == 0, run.output[-4000:]
    losses = losses_by_step(workdir)
    assert sorted(losses) == list(range(1, TOTAL_STEPS + 1))
    return workdir, losses, artifacts.load_params(os.path.join(workdir, "params"))


def assert_same_losses(reference_losses, workdir):
    """Every step is logged once, in order, across the resume, and its loss equals the reference bit for bit."""
    steps = [row["step"] for row in metric_rows(workdir) if "loss" in row]
    assert steps == list(range(1, TOTAL_STEPS + 1)), steps  # no step repeated or skipped
    got = losses_by_step(workdir)
    for step, values in got.items():
        assert values == [reference_losses[step][0]], (step, values, reference_losses[step])


def assert_same_params(reference_params, workdir):
    from phenolip_jax import artifacts

    params = artifacts.load_params(os.path.join(workdir, "params"))
    ref = jax.tree_util.tree_leaves_with_path(reference_params)
    got = jax.tree_util.tree_leaves_with_path(params)
    assert [p for p, _ in ref] == [p for p, _ in got]
    for (path, a), (_, b) in zip(ref, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def test_sigterm_checkpoints_and_exits_cleanly_then_resume_is_exact(reference, tiny_stage2_config, main_env,
                                                                    tmp_path):
    _, ref_losses, ref_params = reference
    workdir = str(tmp_path / "run")
    run = MainRun(tiny_stage2_config, workdir, main_env)
    run.wait_for_lines(3)
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.output[-4000:]
    out = run.output
    assert "preempted: checkpoint at step" in out, out[-4000:]
    stopped = int(out.split("preempted: checkpoint at step ")[1].split()[0])
    assert 3 <= stopped < TOTAL_STEPS, "the run finished before the signal: make it longer"
    assert max(losses_by_step(workdir)) == stopped  # it finished the step it was in, and no more
    assert not os.path.exists(os.path.join(workdir, "params"))  # it did not pretend to be done

    again = MainRun(tiny_stage2_config, workdir, main_env)
    assert again.wait() == 0, again.output[-4000:]
    assert f"resumed from {os.path.join(workdir, 'checkpoints')} at step {stopped}" in again.output
    assert_same_losses(ref_losses, workdir)
    assert_same_params(ref_params, workdir)


def test_ctrl_c_checkpoints_prints_the_resume_command_and_exits_cleanly_then_resume_is_exact(
        reference, tiny_stage2_config, main_env, tmp_path):
    _, ref_losses, ref_params = reference
    workdir = str(tmp_path / "run")
    run = MainRun(tiny_stage2_config, workdir, main_env)
    run.wait_for_lines(3)
    run.proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
    assert run.wait() == 0, run.output[-4000:]
    out = run.output
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert "Ctrl-C (SIGINT) received: finishing step " in out
    stopped = int(out.split("preempted: checkpoint at step ")[1].split()[0])
    announced = int(out.split("received: finishing step ")[1].split()[0])
    assert stopped == announced, "the step it said it would finish is the step it checkpointed"
    assert 3 <= stopped < TOTAL_STEPS, "the run finished before the signal: make it longer"
    assert f"rerun the same command to resume: python -m phenolip_jax.main --config={tiny_stage2_config}" in out
    assert max(losses_by_step(workdir)) == stopped  # the step it was in finished and was saved; none lost
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped)))

    again = MainRun(tiny_stage2_config, workdir, main_env)
    assert again.wait() == 0, again.output[-4000:]
    assert f"resumed from {os.path.join(workdir, 'checkpoints')} at step {stopped}" in again.output
    assert_same_losses(ref_losses, workdir)
    assert_same_params(ref_params, workdir)


SECOND_CTRL_C = """
import os, signal, sys, time
from phenolip_jax.train import loop
with loop._Preemption() as preempt:
    os.kill(os.getpid(), signal.SIGINT)
    assert preempt.should_stop(1)
    print("first Ctrl-C: stop requested", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
    print("still running after the second Ctrl-C", flush=True)
"""


def test_second_ctrl_c_aborts_at_once(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert "first Ctrl-C: stop requested" in proc.stdout, proc.stderr[-2000:]
    assert "still running" not in proc.stdout
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr[-2000:])
    assert "second interrupt: aborting at once" in proc.stderr


def test_resumed_logger_drops_rows_of_replayed_steps_and_partial_lines(tmp_path):
    from phenolip_jax.train.logger import MetricLogger

    path = tmp_path / "metrics.jsonl"
    rows = "".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 8)) + '{"step": 3, "eval/r@1": 0.5}\n'
    path.write_text(rows + '{"step": 8, "lo')  # a writer killed mid-line
    logger = MetricLogger(str(tmp_path), 10, tensorboard=False, console=False, resume_step=5)
    logger.write(6, {"loss": 2.0})
    logger.close()
    assert [(r["step"], "loss" in r) for r in metric_rows(str(tmp_path))] == [
        (1, True), (2, True), (3, True), (4, True), (5, True), (3, False), (6, True)]


def test_sigkill_and_corrupt_newest_checkpoint_then_resume_is_exact(reference, tiny_stage2_config, main_env,
                                                                    tmp_path):
    _, ref_losses, ref_params = reference
    workdir = str(tmp_path / "run")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    run = MainRun(tiny_stage2_config, workdir, main_env)
    # Checkpoints are async and written every step: the kill may land in the middle of one.
    run.wait_for_lines(5)
    run.proc.kill()
    assert run.wait() == -signal.SIGKILL
    killed_at = max(losses_by_step(workdir))
    assert killed_at < TOTAL_STEPS, "the run finished before the kill: make it longer"
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert len(steps) >= 2, steps
    # Damage the newest finished checkpoint in the way orbax alone does not notice (see checkpoint.py).
    newest = steps[-1]
    flip_middle_byte(largest_array_file(os.path.join(ckpt_dir, str(newest))))

    again = MainRun(tiny_stage2_config, workdir, main_env)
    assert again.wait() == 0, again.output[-4000:]
    out = again.output
    assert f"checkpoint step {newest} in {ckpt_dir} is unreadable or corrupt; fell back to step {steps[-2]}" in out
    assert f"checkpoint at step {newest}" in out and "CorruptCheckpointError" in out  # the logged warning
    assert f"resumed from {ckpt_dir} at step {steps[-2]}" in out
    assert any(d.startswith(f"unreadable-step-{newest}-") for d in os.listdir(ckpt_dir))  # kept, set aside
    assert not [d for d in os.listdir(ckpt_dir) if "orbax-checkpoint-tmp" in d]  # half-written saves cleaned
    assert_same_losses(ref_losses, workdir)
    assert_same_params(ref_params, workdir)


def test_sigterm_handler_single_process_sets_a_flag_and_restores_the_old_handler():
    from phenolip_jax.train import loop

    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    with loop._Preemption() as preempt:
        assert not preempt.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the flag, not by dying
        assert preempt.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is before_int
    with loop._Preemption() as preempt:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the same flag, no KeyboardInterrupt
        assert preempt.should_stop(1)
    assert signal.getsignal(signal.SIGINT) is before_int


def test_multihost_preemption_leaves_sigterm_to_jax_and_syncs_on_the_current_step(monkeypatch):
    from jax.experimental import multihost_utils

    from phenolip_jax.train import loop

    asked = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", lambda s: asked.append(s) or s == 7)
    before = signal.getsignal(signal.SIGTERM)
    with loop._Preemption() as preempt:
        # JAX's preemption service owns SIGTERM on multi-host runs; replacing its handler would lose the notice.
        assert signal.getsignal(signal.SIGTERM) is before
        assert [preempt.should_stop(s) for s in (5, 6, 7)] == [False, False, True]
    assert asked == [5, 6, 7]  # the sync protocol needs every host's real step id
