"""Stage 2's use of the hierarchy: the pair itself keeps its share at any batch size, or related pairs are masked."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from phenolip_jax import config_checks, config_lib, losses
from phenolip_jax.train import objectives


def _batch(terms, organs=None):
    """Per-example HPO tables: one term each, its ancestors = itself + the given parent (1 hop), no organs."""
    n = len(terms)
    anc = np.full((n, 1, 2), -1, np.int32)
    hops = np.zeros((n, 1, 2), np.int32)
    for i, (term, parent) in enumerate(terms):
        anc[i, 0] = (term, parent)
        hops[i, 0] = (0, 1)
    return dict(hpo=jnp.asarray([[t] for t, _ in terms], jnp.int32), hpo_anc=jnp.asarray(anc),
                hpo_hops=jnp.asarray(hops), organs=jnp.full((n, 1), -1, jnp.int32))


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _plain_equals_chunked(a, b, valid, plain_kw, chunked_kw):
    """The plain and the chunked loss agree in value and gradients (a, b, scale); returns the plain value."""
    plain = jax.value_and_grad(lambda a, b, s: losses.softmax_contrastive(a, b, s, valid=valid, **plain_kw),
                               argnums=(0, 1, 2))
    chunked = jax.jit(jax.value_and_grad(
        lambda a, b, s: losses.chunked_softmax_contrastive(a, b, s, valid=valid, **chunked_kw), argnums=(0, 1, 2)))
    (v0, g0), (v1, g1) = plain(a, b, 7.0), chunked(a, b, 7.0)
    np.testing.assert_allclose(v1, v0, rtol=1e-5)
    for x, y in zip(g0, g1):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
    return v0


def _hierarchy(**kw):
    return config_lib.pair_hierarchy_section(True, **kw)


def _shares(batch, share):
    """The pair itself's share of its row and of its column in the loss's target distributions."""
    t = objectives.pair_targets(batch, _hierarchy(own_share=share))
    rows = np.asarray(losses.own_share_targets(t, share), np.float64)
    cols = np.asarray(losses.own_share_targets(t.T, share), np.float64)
    return np.diag(rows) / rows.sum(1), np.diag(cols) / cols.sum(1)


@pytest.mark.parametrize("batch_size", [4, 64, 512])
def test_own_pair_keeps_its_share_at_any_batch_size(batch_size):
    # Every example shows the same phenotype: uncapped soft targets give the pair itself 1/B of its row.
    batch = _batch([(7, 3)] * batch_size)
    np.testing.assert_allclose(_shares(batch, 0.0)[0], 1.0 / batch_size, rtol=1e-6)
    for share in (0.5, 0.8):
        rows, cols = _shares(batch, share)
        np.testing.assert_allclose(rows, max(share, 1.0 / batch_size), rtol=1e-5)
        np.testing.assert_allclose(cols, max(share, 1.0 / batch_size), rtol=1e-5)


def test_own_share_leaves_light_rows_alone_and_keeps_the_related_proportions():
    rng = np.random.default_rng(0)
    # 40 examples over 6 terms under 2 parents: mixed same-term, parent-child and unrelated pairs.
    terms = [(int(t), 100 + int(t) % 2) for t in rng.integers(0, 6, 40)] + [(100, 200), (101, 200)]
    batch = _batch(terms)
    t = np.asarray(objectives.pair_targets(batch, _hierarchy()), np.float64)
    share = 0.5
    capped = np.asarray(losses.own_share_targets(t, share), np.float64)
    np.testing.assert_allclose(capped.sum(1), 1.0, rtol=1e-5)
    natural = np.diag(t) / t.sum(1)
    np.testing.assert_allclose(np.diag(capped), np.maximum(share, natural), rtol=1e-5)
    assert natural.min() < 0.2  # the uncapped rows were drowned
    off = ~np.eye(len(terms), dtype=bool)
    ratio = np.where(off & (t > 0), capped / np.where(t > 0, t, 1), np.nan)
    for row in ratio:  # related pairs keep their proportions within a row
        vals = row[~np.isnan(row)]
        if len(vals):
            np.testing.assert_allclose(vals, vals[0], rtol=1e-5)


@pytest.mark.parametrize("chunk,padded", [(3, False), (8, True)])
def test_chunked_own_share_equals_plain(chunk, padded):
    rng = np.random.default_rng(chunk)
    batch = _batch([(int(t), 100 + int(t) % 2) for t in rng.integers(0, 4, 20)])
    h = _hierarchy(own_share=0.5)
    dense = objectives.pair_targets(batch, h)
    block = objectives.pair_targets(batch, h, blockwise=True)
    assert isinstance(block, losses.BlockTargets)
    valid = np.array([1] * 17 + [0] * 3, bool) if padded else None
    a, b = _unit(rng, 20, 8), _unit(rng, 20, 8)
    v0 = _plain_equals_chunked(a, b, valid, dict(targets=dense, own_share=0.5),
                               dict(targets=block, chunk=chunk, own_share=0.5))
    # own_share changes the loss (the rows were drowned), and 0 is the uncapped loss
    assert not np.isclose(v0, losses.softmax_contrastive(a, b, 7.0, dense, valid))
    np.testing.assert_allclose(losses.chunked_softmax_contrastive(a, b, 7.0, block, valid, chunk=chunk),
                               losses.softmax_contrastive(a, b, 7.0, dense, valid), rtol=1e-5)


def test_stage2_objective_passes_the_share_to_the_loss():
    # The whole objective: with own_share the image-text loss equals the loss of the own-share targets.
    rng = np.random.default_rng(5)
    batch = _batch([(7, 3)] * 16)
    v = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    t = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    t = t / jnp.linalg.norm(t, axis=1, keepdims=True)
    cfg = ml_collections.ConfigDict(dict(loss=dict(kind="softmax", it_weight=1.0, kd_weight=0.0, struct_weight=0.0,
                                                   chunk=0, hierarchy=_hierarchy(own_share=0.5))))
    obj = objectives.stage2_objective(None, None, cfg)
    params = {"logit_scale": jnp.log(jnp.float32(10.0))}
    value, _ = obj.loss(params, None, {"image": v, "text": t}, batch)
    targets = objectives.pair_targets(batch, cfg.loss.hierarchy)
    np.testing.assert_allclose(value, losses.softmax_contrastive(v, t, 10.0, targets, own_share=0.5), rtol=1e-5)
    assert not np.isclose(value, losses.softmax_contrastive(v, t, 10.0, targets))


def _ref_masked_contrastive(a, b, scale, exclude):
    logits = scale * a @ b.T
    def direction(lg, ex):
        out = []
        for i in range(lg.shape[0]):
            keep = ~ex[i]
            keep[i] = True
            row = lg[i][keep]
            out.append(np.log(np.exp(row - row.max()).sum()) + row.max() - lg[i, i])
        return np.mean(out)
    return 0.5 * (direction(logits, exclude) + direction(logits.T, exclude.T))


def test_mask_mode_takes_same_phenotype_pairs_out_of_the_denominators():
    rng = np.random.default_rng(3)
    batch = _batch([(1, 100), (1, 100), (2, 100), (3, 101), (1, 100), (2, 100)])
    h = _hierarchy(mode="mask")
    assert objectives.pair_targets(batch, h) is None  # the pair itself is the only positive
    exclude = np.asarray(objectives.pair_exclusions(batch, h))
    terms = np.array([1, 1, 2, 3, 1, 2])
    same = (terms[:, None] == terms[None, :]) & ~np.eye(6, dtype=bool)
    np.testing.assert_array_equal(exclude, same)  # mask_min_score=1: same phenotype only, never the pair itself
    a = rng.normal(size=(6, 5)); b = rng.normal(size=(6, 5))
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    got = losses.softmax_contrastive(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 5.0,
                                     exclude=exclude)
    np.testing.assert_allclose(got, _ref_masked_contrastive(a, b, 5.0, exclude), rtol=1e-5)
    assert not np.isclose(got, losses.softmax_contrastive(jnp.asarray(a, jnp.float32),
                                                          jnp.asarray(b, jnp.float32), 5.0))
    # A lower threshold also masks parent-child pairs (score 0.5 at one hop).
    family = _batch([(1, 100), (100, 200), (3, 101)])
    wider = np.asarray(objectives.pair_exclusions(family, _hierarchy(mode="mask", mask_min_score=0.5)))
    np.testing.assert_array_equal(wider, [[False, True, False], [True, False, False], [False, False, False]])
    assert not np.asarray(objectives.pair_exclusions(family, h)).any()


def test_hierarchy_mode_and_share_are_validated():
    for field, value, match in (("mode", "hard", "config.loss.hierarchy.mode"),
                                ("own_share", 1.5, "config.loss.hierarchy.own_share=1.5"),
                                ("mask_min_score", 0.0, "config.loss.hierarchy.mask_min_score=0.0")):
        h = _hierarchy()
        h[field] = value
        with pytest.raises(ValueError, match=match):
            config_checks._validate_hierarchy(h)


@pytest.mark.parametrize("chunk,padded", [(3, False), (8, True)])
def test_chunked_mask_mode_equals_plain(chunk, padded):
    rng = np.random.default_rng(chunk + 1)
    batch = _batch([(int(t), 100 + int(t) % 2) for t in rng.integers(0, 4, 20)])
    h = _hierarchy(mode="mask")
    dense = objectives.pair_exclusions(batch, h)
    rule = objectives.pair_exclusions(batch, h, blockwise=True)
    assert np.asarray(dense).any() and isinstance(rule, losses.BlockTargets)
    valid = np.array([1] * 17 + [0] * 3, bool) if padded else None
    a, b = _unit(rng, 20, 8), _unit(rng, 20, 8)
    v0 = _plain_equals_chunked(a, b, valid, dict(exclude=dense), dict(chunk=chunk, exclude=rule))
    assert not np.isclose(v0, losses.softmax_contrastive(a, b, 7.0, None, valid))
