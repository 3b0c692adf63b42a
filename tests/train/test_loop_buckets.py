"""The train loop keeps one compiled step per caption-length bucket: compiled on first use, announced once."""
import re

import grain
import jax.numpy as jnp
import numpy as np

from phenolip_jax.train import loop
from tests.reliability import test_nonfinite as toy

WIDTHS = (4, 8, 4, 16, 8, 4)  # caption width of steps 1..6 (three buckets)


def example(i: int) -> dict:
    step = i // toy.ROWS + 1
    x = np.random.default_rng(i).normal(size=4).astype(np.float32)
    return {"x": x, "input_ids": np.ones(WIDTHS[(step - 1) % len(WIDTHS)], np.int32)}


def objective(params, teacher, batch, rng):
    del teacher, rng
    loss = jnp.mean(jnp.square(batch["x"] @ params["w"] + params["b"] - 1.0))
    return loss + 0.0 * jnp.mean(batch["input_ids"]), {}


def test_one_compiled_step_per_bucket_compiled_once(tmp_path, capsys):
    def data_iter():
        return iter(grain.MapDataset.range(10_000).map(example).batch(toy.ROWS, drop_remainder=True)
                    .to_iter_dataset())

    state, _ = loop.train(toy.toy_cfg(len(WIDTHS)), str(tmp_path), params=toy.toy_params(), objective=objective,
                          make_data_iter=data_iter)
    assert int(state.step) == len(WIDTHS)
    compiled = re.findall(r"compiled train step for captions of (\d+) tokens", capsys.readouterr().out)
    assert sorted(map(int, compiled)) == sorted(set(WIDTHS)), compiled
