"""Linear probe: stratified subsampling, C selection, parity with a direct scikit-learn fit."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from phenolip_jax.evaluate import linear_probe as LP


def _clusters(rng, n_per_class, n_classes=3, d=6, noise=0.3):
    centres = np.eye(d)[:n_classes] * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + noise * rng.normal(size=(len(y), d)), y


def test_subsample_per_class_keeps_every_class():
    y = np.array([0] * 50 + [1] * 20 + [2] * 3)
    idx = LP.subsample_per_class(y, 0.1, seed=0)
    counts = np.bincount(y[idx], minlength=3)
    assert counts.tolist() == [5, 2, 1]  # round(0.3) = 0 -> at least one
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, LP.subsample_per_class(y, 0.1, seed=0))
    assert not np.array_equal(idx, LP.subsample_per_class(y, 0.1, seed=1))
    assert len(LP.subsample_per_class(y, 1.0, seed=0)) == len(y)
    with pytest.raises(ValueError, match="fraction"):
        LP.subsample_per_class(y, 0.0, seed=0)


def test_l2_normalise_rows():
    x = LP.l2_normalise([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])


def test_linear_probe_single_c_equals_direct_fit():
    rng = np.random.default_rng(0)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (_clusters(rng, n, noise=1.5) for n in (20, 10, 15))
    out = LP.linear_probe(tr_x, tr_y, va_x, va_y, te_x, te_y, cs=(0.316,), seeds=(0,), fractions=(1.0,))
    norm = LP.l2_normalise
    ref = LogisticRegression(C=0.316, solver="lbfgs", max_iter=1000, random_state=0).fit(
        np.concatenate([norm(tr_x), norm(va_x)]), np.concatenate([tr_y, va_y]))
    assert out[1.0]["top1_mean"] == pytest.approx(ref.score(norm(te_x), te_y))
    assert out[1.0]["n_seeds"] == 1 and out[1.0]["top1_std"] == 0.0 and out[1.0]["best_c"] == [0.316]


def test_linear_probe_fractions_and_seeds():
    rng = np.random.default_rng(1)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (_clusters(rng, n) for n in (40, 20, 20))
    out = LP.linear_probe(tr_x, tr_y, va_x, va_y, te_x, te_y, cs=(0.1, 10.0), seeds=(0, 1), fractions=(0.05, 1.0))
    assert set(out) == {0.05, 1.0}
    # 5% of 40 = 2 training and 5% of 20 = 1 validation example per class, 3 classes.
    assert out[0.05]["n_train"] == [6, 6] and out[0.05]["n_val"] == [3, 3] and out[0.05]["n_seeds"] == 2
    assert out[1.0]["n_train"] == [120]
    assert out[1.0]["top1_mean"] == 1.0  # well-separated clusters
    assert all(c in (0.1, 10.0) for c in out[0.05]["best_c"])
    assert 0.0 <= out[0.05]["top1_std"] <= 0.5
