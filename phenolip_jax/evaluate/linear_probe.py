"""Linear probe on frozen features: logistic regression, C swept on validation, label-fraction subsampling."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from phenolip_jax.evaluate.metrics import classification_metrics

# openai/CLIP's probe found C near 0.316; a half-decade grid around it covers the usual optimum.
DEFAULT_CS = (0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)


def print_progress(line: str) -> None:
    """Prints a progress line at once (the eval stage's output is often piped)."""
    print(line, flush=True)


def l2_normalise(x: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def subsample_per_class(labels: Any, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified subsample: round(fraction * n_c) per class, at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(len(idx), max(1, int(round(fraction * len(idx)))))
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int, max_iter: int) -> LogisticRegression:
    """One L-BFGS logistic regression."""
    with warnings.catch_warnings():
        # Few-shot fractions have many classes per sample; sklearn then warns on every fit.
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed).fit(x, y)


def _logits(model: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class log-probabilities over the full label space (classes unseen in training get -1e9)."""
    out = np.full((len(x), n_classes), -1e9)
    # log(0) = -inf for saturated probabilities; the metrics reject non-finite scores, so floor them.
    out[:, model.classes_.astype(np.int64)] = np.maximum(model.predict_log_proba(x), -1e9)
    return out


def linear_probe(
    train_x: Any, train_y: Any, val_x: Any, val_y: Any, test_x: Any, test_y: Any,
    cs: Sequence[float] = DEFAULT_CS, seeds: Iterable[int] = (0, 1, 2),
    fractions: Iterable[float] = (0.01, 0.1, 1.0), max_iter: int = 1000,
    log: Callable[[str], None] | None = print_progress,
) -> dict[float, dict[str, Any]]:
    """Per label fraction: test top-1 / mean per-class recall, mean and std over seeds, and the chosen Cs.

    For each seed, train and validation are subsampled per class at the fraction (>= 1 example per class),
    C is the best validation accuracy (ties: the first C in `cs`), and the final model is refit on
    train + validation subsets with that C. Labels are ints in [0, n_classes). A fraction of 1 uses every
    example, so it runs once (one seed) rather than repeating an identical fit. `log` gets one progress line
    per (fraction, seed) run, since a sweep can take minutes (None: silent).
    """
    tr_x, va_x, te_x = l2_normalise(train_x), l2_normalise(val_x), l2_normalise(test_x)
    tr_y, va_y, te_y = (np.asarray(y, np.int64) for y in (train_y, val_y, test_y))
    if not cs:
        raise ValueError("cs must not be empty")
    n_classes = int(max(tr_y.max(), va_y.max(), te_y.max())) + 1
    seeds, fractions = tuple(seeds), tuple(fractions)
    total = sum(len(seeds) if f < 1 else min(len(seeds), 1) for f in fractions)
    done, t0 = 0, time.time()
    results: dict[float, dict[str, Any]] = {}
    for fraction in fractions:
        runs = []
        for seed in seeds if fraction < 1 else seeds[:1]:
            tr_i = subsample_per_class(tr_y, fraction, seed)
            va_i = subsample_per_class(va_y, fraction, seed + 1_000_003)
            val_acc = [_fit(tr_x[tr_i], tr_y[tr_i], c, seed, max_iter).score(va_x[va_i], va_y[va_i]) for c in cs]
            best_c = float(cs[int(np.argmax(val_acc))])
            final = _fit(np.concatenate([tr_x[tr_i], va_x[va_i]]), np.concatenate([tr_y[tr_i], va_y[va_i]]),
                         best_c, seed, max_iter)
            m = classification_metrics(_logits(final, te_x, n_classes), te_y)
            runs.append(dict(top1=m["top1"], mean_per_class_recall=m["mean_per_class_recall"], best_c=best_c,
                             n_train=int(len(tr_i)), n_val=int(len(va_i))))
            done += 1
            if log is not None:
                log(f"linear probe [{done}/{total}] labels {fraction:g} seed {seed}: {len(cs)} Cs on "
                    f"{len(tr_i)} train / {len(va_i)} val, best C={best_c:g}, test top-1 {m['top1']:.4f} "
                    f"({time.time() - t0:.1f}s)")
        top1 = np.array([r["top1"] for r in runs])
        mpcr = np.array([r["mean_per_class_recall"] for r in runs])
        results[float(fraction)] = dict(
            top1_mean=float(top1.mean()), top1_std=float(top1.std()),
            mean_per_class_recall_mean=float(mpcr.mean()), mean_per_class_recall_std=float(mpcr.std()),
            best_c=[r["best_c"] for r in runs], n_train=[r["n_train"] for r in runs],
            n_val=[r["n_val"] for r in runs], n_seeds=len(runs),
        )
    return results
