"""Temperature scaling of zero-shot phenotype probabilities: fit, expected calibration error, reliability bins.

Pure NumPy. Logits are the model's `logit_scale x cosine` over a candidate set; the calibrated probabilities are
softmax(logits / T). T is fitted on a validation split by minimising the negative log-likelihood of each image's
gold mass: the log of the summed softmax probability of its gold candidates (a multi-label image counts its
whole gold set, so the model is not penalised for splitting its mass among several right answers). T does not
change the ranking, so accuracy is the same before and after; only the confidence moves.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

CALIBRATION_FILE = "calibration.json"
DEFAULT_BINS = 15  # Guo et al. (2017)'s ECE bins
# log T is searched in [1e-3, 1e3]: logits are logit_scale (<= 100) x cosine, so a useful T lies far inside.
LOG_T_BOUNDS = (math.log(1e-3), math.log(1e3))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclasses.dataclass
class Calibration:
    """A fitted temperature and what it did: fitted on `split`, ECE / NLL measured on `test_split`."""

    temperature: float
    n: int  # images the temperature was fitted on
    ece_before: float  # on the test split, T = 1 ...
    ece_after: float  # ... and T = temperature
    nll_before: float  # gold-mass NLL per image, test split
    nll_after: float
    candidates: int  # size of the candidate set the softmax ran over: T depends on it
    split: str = "val"
    logit_scale: float = 1.0  # the model's scale the logits were computed with (logits = scale x cosine)
    test_split: str = "test"
    n_test: int = 0
    bins: int = DEFAULT_BINS
    at_bound: bool = False  # the search stopped at an end of LOG_T_BOUNDS: the fit is degenerate

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return dataclasses.asdict(self)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of logits / temperature, float64."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logsumexp(z: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Row log-sum-exp (over `where` only when given; each row must have one True)."""
    if where is not None:
        z = np.where(where, z, -np.inf)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _check(logits: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits and bool positives of the same [N, C] shape, every row with a positive."""
    logits, positives = np.asarray(logits, np.float64), np.asarray(positives, bool)
    if logits.ndim != 2 or logits.shape != positives.shape:
        raise ValueError(f"logits {logits.shape} and positives {positives.shape} must both be [N, C]")
    if not len(logits) or not positives.any(axis=1).all():
        raise ValueError("every row needs at least one gold candidate (drop the others first), and N > 0")
    return logits, positives


def gold_nll(logits: np.ndarray, positives: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log(summed softmax(logits / T) probability of each row's positives)."""
    logits, positives = _check(logits, positives)
    z = logits / float(temperature)
    return float(np.mean(_logsumexp(z) - _logsumexp(z, positives)))


def fit_temperature(logits: np.ndarray, positives: np.ndarray, tol: float = 1e-6) -> float:
    """The T > 0 minimising `gold_nll` (golden-section search on log T within LOG_T_BOUNDS)."""
    logits, positives = _check(logits, positives)
    # The NLL is convex in 1/T for one positive per row, so unimodal in log T; a gold set keeps it so in practice.
    f = lambda log_t: gold_nll(logits, positives, math.exp(log_t))  # noqa: E731
    a, b = LOG_T_BOUNDS
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def at_bound(temperature: float, rel: float = 1e-3) -> bool:
    """Whether a fitted T sits at an end of the search interval (e.g. chance-level logits push T to infinity)."""
    log_t = math.log(temperature)
    return any(abs(log_t - edge) < rel * (LOG_T_BOUNDS[1] - LOG_T_BOUNDS[0]) for edge in LOG_T_BOUNDS)


def top1(probs: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 confidence [N], whether the top-1 candidate is gold [N])."""
    probs, positives = np.asarray(probs, np.float64), np.asarray(positives, bool)
    best = np.argmax(probs, axis=1)
    rows = np.arange(len(probs))
    return probs[rows, best], positives[rows, best]


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins (lo, hi] of [0, 1], the convention of Guo et al.; a confidence of 0 joins the first."""
    return np.clip(np.ceil(np.asarray(conf, np.float64) * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(probs_top1: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, list]:
    """Per equal-width bin: edges (bins + 1), count, mean confidence and accuracy (NaN for an empty bin)."""
    if bins < 1:
        raise ValueError(f"bins={bins} must be >= 1")
    conf, correct = np.asarray(probs_top1, np.float64), np.asarray(correct, np.float64)
    if conf.shape != correct.shape or conf.ndim != 1:
        raise ValueError(f"probs_top1 {conf.shape} and correct {correct.shape} must both be [N]")
    idx = _bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=bins) / count
        acc = np.bincount(idx, correct, minlength=bins) / count
    return dict(edges=np.linspace(0.0, 1.0, bins + 1).tolist(), count=count.tolist(), confidence=mean_conf.tolist(),
                accuracy=acc.tolist())


def expected_calibration_error(probs_top1: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """ECE: sum over equal-width confidence bins of (share of images) x |accuracy - mean confidence|."""
    b = reliability_bins(probs_top1, correct, bins)
    count = np.asarray(b["count"], np.float64)
    if not count.sum():
        raise ValueError("ECE of no predictions")
    gap = np.abs(np.nan_to_num(np.asarray(b["accuracy"]) - np.asarray(b["confidence"])))
    return float((count / count.sum() * gap).sum())


def summary(logits: np.ndarray, positives: np.ndarray, temperature: float, bins: int = DEFAULT_BINS
            ) -> dict[str, Any]:
    """ECE, gold NLL, top-1 accuracy, mean top-1 confidence and the reliability bins at one temperature."""
    conf, correct = top1(softmax(logits, temperature), positives)
    return dict(ece=expected_calibration_error(conf, correct, bins), nll=gold_nll(logits, positives, temperature),
                accuracy=float(correct.mean()), confidence=float(conf.mean()),
                reliability=reliability_bins(conf, correct, bins))


def save(cal: Calibration, folder: str) -> str:
    """Writes folder/calibration.json; returns its path."""
    path = os.path.join(folder, CALIBRATION_FILE)
    with open(path, "w") as f:
        json.dump(cal.to_dict(), f, indent=2, sort_keys=True)
    return path


def load(folder: str) -> Calibration | None:
    """The Calibration saved in `folder` (a run's workdir), or None when it holds none."""
    path = os.path.join(folder, CALIBRATION_FILE)
    if not folder or not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    fields = {f.name for f in dataclasses.fields(Calibration)}
    cal = Calibration(**{k: v for k, v in data.items() if k in fields})
    if not (isinstance(cal.temperature, (int, float)) and cal.temperature > 0):
        raise ValueError(f"{path}: temperature={cal.temperature!r} must be a number > 0")
    return cal


def markdown(section: dict[str, Any], figure: str | None = None) -> list[str]:
    """The report's Calibration lines: what was fitted where, ECE / NLL / accuracy / confidence before and after."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    b, a = section["before"], section["after"]
    lines = ["## Calibration (temperature scaling)", "",
             f"Temperature T = {section['temperature']:.4g}, fitted on the `{section['split']}` split "
             f"({section['n']} images) by minimising the NLL of each image's gold phenotypes under softmax(logit_scale "
             f"{section['logit_scale']:.4g} x cosine / T) over {section['candidates']} candidates; measured on the "
             f"`{section['test_split']}` split ({section['n_test']} images), not the split it was fitted on.", "",
             "| | ECE | NLL | top-1 accuracy | mean top-1 confidence |", "|---|---|---|---|---|"]
    for name, s in (("before (T = 1)", b), (f"after (T = {section['temperature']:.4g})", a)):
        lines.append(f"| {name} | {pct(s['ece'])} | {s['nll']:.4f} | {pct(s['accuracy'])} | {pct(s['confidence'])} |")
    lines += ["", f"ECE over {section['bins']} equal-width confidence bins, in percent; NLL in nats per image. "
              "T does not change the ranking, so accuracy is the same in both rows."]
    if section.get("at_bound"):
        lines.append("The fit stopped at an end of the search interval: the logits carry little signal, and the "
                     "temperature is not meaningful.")
    if section.get("skipped_images"):
        lines.append(f"{section['skipped_images']} images without a gold phenotype among the candidates were left out.")
    if section.get("file"):
        lines.append(f"Saved to `{section['file']}`" + ("; predict reads it from the run's folder." if section.get(
            "in_run") else f" (the run's folder is not writable): give predict `--config.temperature="
            f"{section['temperature']:.4g}`."))
    else:
        lines.append("Not saved: no writable folder.")
    if figure:
        lines += ["", f"![reliability]({os.path.basename(figure)})"]
    return lines + [""]
