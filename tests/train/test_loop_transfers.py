"""The train loop never waits on the device between looks: at most one blocking device-to-host transfer per
`log_every` steps, and the next batch is drawn (and staged on the device) before the host looks at a step."""
import jax
import pytest

from phenolip_jax.train import checkpoint as ckpt_lib
from phenolip_jax.train import loop
from tests.reliability import test_nonfinite as toy


class _NoCheckpoints:
    """Stands in for the orbax Checkpointer: the test counts the loop's own transfers."""

    def __init__(self, *args, **kwargs):
        self.saved = []

    def latest_step(self):
        return None

    def save(self, step, *args, **kwargs):
        self.saved.append(step)

    def close(self):
        pass


@pytest.fixture
def transfers(monkeypatch):
    """Counts blocking device-to-host transfers: jax.device_get calls, and array reads outside them
    (np.asarray / float / int / .item of a jax.Array all go through ArrayImpl._value)."""
    from jax._src import array as array_impl

    events, depth = [], [0]
    real_get, real_value = jax.device_get, array_impl.ArrayImpl._value

    def device_get(x):
        events.append("device_get")
        depth[0] += 1
        try:
            return real_get(x)
        finally:
            depth[0] -= 1

    def value(self):
        if depth[0] == 0:
            events.append("read")
        return real_value.fget(self)

    monkeypatch.setattr(jax, "device_get", device_get)
    monkeypatch.setattr(array_impl.ArrayImpl, "_value", property(value))
    monkeypatch.setattr(ckpt_lib, "Checkpointer", _NoCheckpoints)
    return events


def test_at_most_one_transfer_per_log_every_steps_and_batches_are_staged_ahead(transfers, tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "POISON_STEPS", ())
    cfg = toy.toy_cfg(12)
    cfg.log_every = 4

    class Counting:
        """The toy data iterator, noting each batch drawn in the same event list as the transfers."""

        def __init__(self):
            self.it = toy.data_iter()

        def __next__(self):
            transfers.append("draw")
            return next(self.it)

        def get_state(self):
            return self.it.get_state()

        def set_state(self, state):
            self.it.set_state(state)

    state, _ = loop.train(cfg, str(tmp_path), params=toy.toy_params(), objective=toy.toy_objective,
                          make_data_iter=Counting)
    events = "".join({"device_get": "G", "read": "R", "draw": "d"}[e] for e in transfers)
    # G: the start step; then per log step (4, 8, 12) one fetch, made after the next batch was drawn and
    # staged (step k's fetch follows draw k+1), and nothing in between.
    assert events == "G" + "ddddd" + "G" + "dddd" + "G" + "ddd" + "G", events
    assert int(state.step) == 12


def test_uint8_images_normalised_on_the_device_give_the_host_normalised_loss():
    """The pipelines ship uint8 pixels; the stage-2 objective normalises them inside jit with config.data's
    mean/std, exactly as the host used to (float batches are taken as already normalised)."""
    import ml_collections
    import numpy as np

    from phenolip_jax.data import images
    from phenolip_jax.train import objectives
    from tests.train import test_step as ts

    cfg = ts.tiny_cfg()
    cfg.data = ml_collections.ConfigDict(dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
    model = ts.tiny_model()
    params = model.init(jax.random.key(0), np.zeros((1, ts.S, ts.S, 3), np.float32),
                        np.zeros((1, ts.L), np.int32))["params"]
    cfg.loss.kd_weight = 0.0  # no teacher needed for this check
    objective = jax.jit(objectives.stage2_objective(model, None, cfg))
    batch = ts.fake_batch(0)
    raw = np.random.default_rng(1).integers(0, 256, batch["image"].shape, dtype=np.uint8)
    on_device, _ = objective(params, {}, dict(batch, image=raw), jax.random.key(0))
    on_host, _ = objective(params, {}, dict(batch, image=images.normalize(raw, cfg.data.mean, cfg.data.std)),
                           jax.random.key(0))
    np.testing.assert_allclose(float(on_device), float(on_host), rtol=1e-6)
