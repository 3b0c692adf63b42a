"""End to end in subprocesses: SIGKILL and SIGTERM mid-run, a corrupt newest checkpoint, then resume; the
losses of every step and the final parameters must equal those of a run that was never interrupted."""
import os
import signal

import jax
import numpy as np
import pytest

from tests.reliability.conftest import MainRun, losses_by_step
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
    """Every logged loss (including steps replayed after a resume) equals the reference bit for bit."""
    got = losses_by_step(workdir)
    assert sorted(got) == sorted(reference_losses), (sorted(got), sorted(reference_losses))
    for step, values in got.items():
        assert all(v == reference_losses[step][0] for v in values), (step, values, reference_losses[step])


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
    with loop._Preemption() as preempt:
        assert not preempt.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the flag, not by dying
        assert preempt.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) is before


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
