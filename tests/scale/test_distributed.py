"""When main initialises JAX's distributed runtime (no processes are started here)."""
import pytest

from phenolip_jax import distributed


@pytest.mark.parametrize("env,expected", [
    ({}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False),  # a single-task allocation is one process
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, True),
    ({"SLURM_NTASKS": "16"}, False),  # no job id: not inside a SLURM job step
    ({"TPU_WORKER_HOSTNAMES": "t1v-a-w-0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1v-a-w-0,t1v-a-w-1"}, True),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, True),
])
def test_multiprocess_env_detection(env, expected):
    assert distributed.is_multiprocess_env(env) is expected


def test_mode_parsing():
    assert distributed.mode({}) == "auto"
    assert distributed.mode({"PHENOLIP_DISTRIBUTED": " 1 "}) == "1"
    with pytest.raises(ValueError, match="PHENOLIP_DISTRIBUTED"):
        distributed.mode({"PHENOLIP_DISTRIBUTED": "yes"})


def test_single_process_env_does_not_initialise(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert distributed.initialize(environ={}) is False
    assert distributed.initialize(environ={"PHENOLIP_DISTRIBUTED": "0", "SLURM_JOB_ID": "1",
                                           "SLURM_NTASKS": "4"}) is False
    assert calls == []


def test_forced_mode_initialises_with_autodetection(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert distributed.initialize(environ={"PHENOLIP_DISTRIBUTED": "1"}) is True
    assert calls == [((), {})]
    assert distributed.initialize("127.0.0.1:1", 2, 1, environ={}) is True
    assert calls[-1] == ((), dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=1))


def test_bad_explicit_flags_are_rejected():
    with pytest.raises(ValueError, match="--num_processes"):
        distributed.initialize("127.0.0.1:1", None, 0)
    with pytest.raises(ValueError, match="--process_id"):
        distributed.initialize("127.0.0.1:1", 2, 2)
