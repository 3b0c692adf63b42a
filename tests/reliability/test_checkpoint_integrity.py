"""Checkpoint integrity: damaged newest checkpoints are detected (by orbax or by the leaf fingerprints), set
aside with a warning naming the step, and resume falls back to the newest good one, data iterator included."""
import logging
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phenolip_jax.train import checkpoint as ckpt_lib
from tests.reliability.corrupt import flip_middle_byte, largest_array_file, truncate_half


def make_state(step: int) -> dict:
    """A small state with the leaf dtypes a train state has (f32, bf16, i32, u32 key data)."""
    k = jax.random.key(step)
    return {"w": jax.random.normal(k, (64, 64)), "h": jnp.arange(40, dtype=jnp.bfloat16) * step,
            "step": jnp.int32(step), "rng": jax.random.key_data(k)}


def data_iter():
    return iter(grain.MapDataset.range(1000).batch(4).to_iter_dataset())


def save_steps(directory: str, steps=(1, 2, 3)) -> None:
    """Saves make_state(s) at each step with the data iterator advanced by s batches."""
    ckpt = ckpt_lib.Checkpointer(directory, keep=5)
    it = data_iter()
    for s in steps:
        while next(it)[0] != 4 * (s - 1):  # consume batches up to and including batch s
            pass
        ckpt.save(s, make_state(s), it, meta={"step": s})
    ckpt.close()


def abstract() -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), make_state(0))


def restore(directory: str, step=None):
    ckpt = ckpt_lib.Checkpointer(directory)
    it = data_iter()
    try:
        s, state, meta = ckpt.restore(abstract(), it, step=step)
    finally:
        ckpt.close()
    return s, state, meta, it


def assert_state_is(state: dict, step: int) -> None:
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(make_state(step))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def corrupt_meta(step_dir: str) -> None:
    with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
        f.write('{"step": ')


DAMAGE = {
    "flipped_array_byte": lambda d: flip_middle_byte(largest_array_file(d)),  # orbax restores this silently
    "truncated_array_file": lambda d: truncate_half(largest_array_file(d)),
    "broken_meta_json": corrupt_meta,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_with_a_warning(damage, tmp_path, caplog):
    directory = str(tmp_path / "ckpt")
    save_steps(directory)
    DAMAGE[damage](os.path.join(directory, "3"))
    with caplog.at_level(logging.WARNING, logger="phenolip_jax.train.checkpoint"):
        step, state, meta, it = restore(directory)
    assert step == 2 and meta == {"step": 2}
    assert_state_is(state, 2)
    assert list(next(it)) == [8, 9, 10, 11]  # batch 3: the iterator resumes where step 2 left it
    assert any("checkpoint at step 3" in r.getMessage() and "unreadable or corrupt" in r.getMessage()
               for r in caplog.records)
    # The damaged step is kept for inspection, out of orbax's view, so step 3 can be written again.
    names = os.listdir(directory)
    assert "3" not in names and any(n.startswith("unreadable-step-3-") for n in names), names
    ckpt = ckpt_lib.Checkpointer(directory)
    assert ckpt.all_steps() == [1, 2]
    assert ckpt.save(3, make_state(3), data_iter(), meta={"step": 3}, force=True)
    ckpt.close()
    assert restore(directory)[0] == 3
    DAMAGE[damage](os.path.join(directory, "3"))  # the same step going bad again is set aside again
    assert restore(directory)[0] == 2
    assert sum(n.startswith("unreadable-step-3-") for n in os.listdir(directory)) == 2


def test_the_fingerprints_catch_what_orbax_restores_silently(tmp_path):
    directory = str(tmp_path / "ckpt")
    save_steps(directory, steps=(1,))
    flip_middle_byte(largest_array_file(os.path.join(directory, "1")))
    with pytest.raises(RuntimeError, match="CorruptCheckpointError: 1 restored arrays differ"):
        restore(directory, step=1)
    assert "1" in os.listdir(directory)  # an explicitly requested step is reported, never moved


def test_falls_back_over_several_bad_steps_and_fails_clearly_when_none_is_good(tmp_path):
    directory = str(tmp_path / "ckpt")
    save_steps(directory)
    flip_middle_byte(largest_array_file(os.path.join(directory, "3")))
    truncate_half(largest_array_file(os.path.join(directory, "2")))
    step, state, _, _ = restore(directory)
    assert step == 1
    assert_state_is(state, 1)
    corrupt_meta(os.path.join(directory, "1"))
    with pytest.raises(RuntimeError, match=r"no readable checkpoint in .*step 1: "):
        restore(directory)


def test_fingerprint_sees_any_single_bit_flip_and_ignores_sharding():
    x = jax.random.normal(jax.random.key(0), (8, 16))
    base = ckpt_lib.fingerprints({"x": x})
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
    assert ckpt_lib.fingerprints({"x": sharded}) == base
    words = np.asarray(x).view(np.uint32).ravel()
    for i, bit in [(0, 0), (5, 31), (127, 17), (64, 3)]:
        flipped = words.copy()
        flipped[i] ^= np.uint32(1 << bit)
        assert ckpt_lib.fingerprints({"x": flipped.view(np.float32).reshape(8, 16)}) != base, (i, bit)
    swapped = np.asarray(x).copy()
    swapped[0, 0], swapped[0, 1] = swapped[0, 1], swapped[0, 0]
    assert ckpt_lib.fingerprints({"x": swapped}) != base
