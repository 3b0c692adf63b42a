"""Length bucketing (data.length_buckets): same batches cut to their bucket, one bucket per global batch,
exact resume, and the same loss at any padded length."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from phenolip_jax.data.pipeline import bucket_of, make_train_iterator, resolve_config
from phenolip_jax.train.step import create_state, make_train_step
from tests.train import test_accumulation as acc_tests
from tests.train import test_step as step_tests

MAX_LEN, BUCKETS = 24, (6, 10)
CFG = dict(image_size=8, max_len=MAX_LEN, per_host_batch_size=4, max_hpo=3, max_ancestors=5, max_hops=2,
           max_organs=4, read_threads=1, prefetch=1)


def _batches(records, root, tok, onto, cfg, n=12, **kw):
    it = make_train_iterator(cfg, records, tok, onto, seed=3, image_root=root, **kw)
    return [next(it) for _ in range(n)]


def test_batches_are_cut_to_the_smallest_bucket_holding_their_longest_caption(mixed_lengths, tok, onto):
    root, records = mixed_lengths
    plain = _batches(records, root, tok, onto, CFG)
    bucketed = _batches(records, root, tok, onto, dict(CFG, length_buckets=BUCKETS))
    widths = set()
    for p, b in zip(plain, bucketed):
        longest = int(p["attention_mask"].sum(1).max())
        width = b["input_ids"].shape[1]
        widths.add(width)
        assert width == bucket_of(longest, BUCKETS, MAX_LEN) >= longest
        assert not p["attention_mask"][:, width:].any()  # only padding was cut
        for k in p:
            np.testing.assert_array_equal(b[k], p[k][:, :width] if k in ("input_ids", "attention_mask") else p[k],
                                          err_msg=k)
    assert len(widths) >= 2, widths  # the data exercises more than one bucket


def test_every_process_gets_its_global_batch_bucket(mixed_lengths, tok, onto):
    root, records = mixed_lengths
    one = _batches(records, root, tok, onto, dict(CFG, per_host_batch_size=4, length_buckets=BUCKETS), n=6)
    for pi in range(2):
        part = _batches(records, root, tok, onto, dict(CFG, per_host_batch_size=2, length_buckets=BUCKETS), n=6,
                        process_index=pi, process_count=2)
        assert [b["input_ids"].shape[1] for b in part] == [b["input_ids"].shape[1] for b in one]


def assert_resume_exact(cfg, mixed_lengths, tok, onto):
    """5 batches, save the iterator state, 3 more; a fresh iterator restored to that state yields the same 3."""
    root, records = mixed_lengths
    it = make_train_iterator(cfg, records, tok, onto, seed=5, image_root=root)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    fresh = make_train_iterator(cfg, records, tok, onto, seed=5, image_root=root)
    fresh.set_state(state)
    for a, b in zip(expected, [next(fresh) for _ in range(3)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_is_exact_with_buckets(mixed_lengths, tok, onto, workers):
    # 5 batches cross an epoch boundary (6 batches per epoch).
    assert_resume_exact(dict(CFG, length_buckets=BUCKETS, workers=workers), mixed_lengths, tok, onto)


@pytest.mark.parametrize("buckets", [(0, 8), (8, 6), (8, 8), (8, 30)])
def test_bad_buckets_fail_naming_the_field(buckets):
    with pytest.raises(ValueError, match="length_buckets"):
        resolve_config(dict(CFG, length_buckets=buckets))


def test_loss_and_update_do_not_depend_on_the_padded_length():
    """Stage 2 (distillation, structure KL, hierarchical targets): a batch padded to 16 or cut to 8, same step."""
    objective, params, teacher = acc_tests.stage2()
    tx = optax.sgd(1.0)
    step = jax.jit(make_train_step(objective, tx, optax.constant_schedule(1.0), max_logit_scale=1e30))
    batch = step_tests.fake_batch(0, batch=8)
    r = np.random.default_rng(1)
    lengths = r.integers(2, 9, size=8)
    long_len = step_tests.tiny_model().text_config["bert"]["max_position_embeddings"]  # 16
    mask = (np.arange(long_len)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask, r.integers(1, 50, size=(8, long_len)), 0).astype(np.int32)
    out = {}
    for width in (long_len, 8):
        state = create_state(params, tx, jax.random.key_data(jax.random.key(3)), teacher)
        b = dict(batch, input_ids=ids[:, :width], attention_mask=mask[:, :width])
        new, metrics = step(state, jax.tree.map(jnp.asarray, b))
        out[width] = jax.device_get((metrics, new.params))
    (m16, p16), (m8, p8) = out[long_len], out[8]
    for key in ("loss", "loss_it", "loss_kd", "loss_struct", "grad_norm"):
        np.testing.assert_allclose(m8[key], m16[key], rtol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(p16), jax.tree.leaves(p8)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
