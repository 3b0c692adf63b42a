"""Non-finite losses through the real train loop: skipped steps leave the state alone, are counted and logged,
and a streak of `max_nonfinite_steps` stops the run with a clear error and a checkpoint of the last good state.

The objective is a toy regression whose loss is NaN exactly on the batches marked `poison`, so the test picks
which steps fail; everything around it (jitted step, loop, logger, orbax checkpoint, grain iterator) is real.
"""
import json
import logging
import os

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax import config_lib
from phenolip_jax.train import checkpoint as ckpt_lib
from phenolip_jax.train import loop

ROWS = 8  # global batch: one row per virtual device
POISON_STEPS = (4, 5, 7, 8, 9)  # a streak of 2 (< max), one good step, then a streak of 3 (= max)


def toy_cfg(total_steps: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "toy"
    # log_every > max_nonfinite_steps: the streak 7..9 ends between log steps and must still stop the run.
    config_lib.run_section(c, total_steps=total_steps, log_every=5, eval_every=0, checkpoint_every=100)
    c.max_nonfinite_steps = 3
    c.mesh.fsdp_min_size = 0
    c.optim = config_lib.optim_section(lr=0.1, warmup_steps=0, weight_decay=0.0)
    c.optim.schedule = "constant"
    return c


def toy_params():
    r = np.random.default_rng(0)
    return {"w": r.normal(size=(4, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}


def toy_objective(params, teacher, batch, rng):
    del teacher, rng
    loss = jnp.mean(jnp.square(batch["x"] @ params["w"] + params["b"] - 1.0))
    loss = jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 1.0) * loss  # NaN loss and NaN gradients
    return loss, {}


def example(i: int) -> dict:
    step = i // ROWS + 1  # batches are consumed one per step, in order
    x = np.random.default_rng(i).normal(size=4).astype(np.float32)
    return {"x": x, "poison": np.float32(step in POISON_STEPS)}


def data_iter():
    return iter(grain.MapDataset.range(10_000).map(example).batch(ROWS, drop_remainder=True).to_iter_dataset())


def run(total_steps: int, workdir: str):
    return loop.train(toy_cfg(total_steps), workdir, params=toy_params(), objective=toy_objective,
                      make_data_iter=data_iter)[0]


def same_tree(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_nonfinite_steps_are_skipped_counted_logged_and_a_streak_stops_the_run(tmp_path, caplog):
    after3, after5, after6 = (run(n, str(tmp_path / f"upto{n}")) for n in (3, 5, 6))
    # Steps 4 and 5 were skipped: params and optimizer state as after step 3; counters say so.
    assert same_tree(after5.params, after3.params) and same_tree(after5.opt_state, after3.opt_state)
    assert (int(after5.nonfinite_streak), int(after5.nonfinite_total)) == (2, 2)
    assert not same_tree(after6.params, after5.params)  # step 6 is finite and trains
    assert int(after6.nonfinite_streak) == 0

    workdir = str(tmp_path / "full")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="phenolip_jax.train.loop"):
        with pytest.raises(loop.NonFiniteError, match=r"3 consecutive non-finite steps .* at step 9: stopped"):
            run(20, workdir)
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert [w.split(":")[0] for w in warnings] == [f"step {s}" for s in POISON_STEPS], warnings
    assert "(3 in a row, 5 in total)" in warnings[-1]

    # The stop wrote a checkpoint at step 9 holding the last good state (= after step 6), counters included.
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    assert ckpt.all_steps() == [9]
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), after6)
    replicated = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), template)
    step, saved, meta = ckpt.restore(ckpt_lib.abstract_like(template, replicated))
    ckpt.close()
    assert (step, meta["reason"]) == (9, "nonfinite")
    assert same_tree(saved.params, after6.params) and same_tree(saved.opt_state, after6.opt_state)
    assert (int(saved.step), int(saved.nonfinite_streak), int(saved.nonfinite_total)) == (9, 3, 5)

    # The stop step is logged even though it is not a log step.
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = {r["step"]: r for r in map(json.loads, f)}
    assert sorted(rows) == [5, 9]
    assert rows[9]["finite"] == 0.0 and rows[9]["nonfinite_streak"] == 3.0 and rows[9]["loss"] == "nan"
