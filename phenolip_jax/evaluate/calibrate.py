"""The eval command's calibration step (`config.calibration.fit=True`): fit a temperature on one split, measure
ECE / NLL before and after on the evaluated split, save calibration.json in the run, draw the reliability diagram.

Logits are zero-shot over the data's phenotypes: the model's logit_scale x the cosine of each image with the
template-ensembled phenotype (or class) embeddings, the prompts the zero-shot evaluator uses.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate import calibration, metrics, report
from phenolip_jax.evaluate.datasets import ClassificationSet, PairSet
from phenolip_jax.evaluate.evaluators import Skip, needs_images
from phenolip_jax.inference import ensemble_prompts


def validate(cfg: Any) -> None:
    """Checks config.calibration before anything loads; one line naming the field (config_checks does not know it)."""
    c = cfg.get("calibration")
    if c is None:  # a config from before the section existed: calibration is off
        return
    if not isinstance(c.fit, bool):
        raise ValueError(f"config.calibration.fit={c.fit!r} must be True or False")
    if not c.fit:
        return
    if not isinstance(c.split, str) or not c.split.strip():
        raise ValueError(f"config.calibration.split={c.split!r} must name a split of the data (e.g. 'val')")
    if c.split == cfg.data.split:
        raise ValueError(f"config.calibration.split={c.split!r} is also config.data.split: fit the temperature on "
                         "another split than the one it is measured on (e.g. 'val')")


def missing_split(field: str, split: str, have: Sequence[str]) -> ValueError:
    """The one-line error for a split the data does not hold."""
    listed = ", ".join(sorted(have)) or "none"
    return ValueError(f"{field}={split!r}: the data has no {split!r} split (splits: {listed})")


def merge_pairs(a: PairSet, b: PairSet) -> PairSet:
    """The pairs of both sets (packed shards / tfds read one split at a time)."""
    return PairSet(*(getattr(a, f.name) + getattr(b, f.name) for f in dataclasses.fields(PairSet)))


@dataclasses.dataclass
class Labelled:
    """Images with their gold candidates (bool [N, C]) under one split."""

    images: Any
    positives: np.ndarray
    split: str


def _from_pairs(cfg: Any, pairs: PairSet, candidates: Sequence[str] | None) -> tuple[Labelled, Labelled, list[str]]:
    """(fit, test, candidate HPO ids) from image-caption pairs: an image's gold set is its pairs' HPO ids."""
    split, test_split = cfg.calibration.split, cfg.data.split
    have = set(pairs.splits)
    for field, s in (("config.calibration.split", split), ("config.data.split", test_split)):
        if s not in have:  # PairSet.select would quietly return every pair
            raise missing_split(field, s, have)
    fit_images, fit_gold = pairs.select(split).images()
    test = pairs.select(test_split)
    n = cfg.data.max_images  # as the evaluators: at most this many test pairs
    if n:
        test = PairSet(*(getattr(test, f.name)[:n] for f in dataclasses.fields(PairSet)))
    test_images, test_gold = test.images()
    cands = list(candidates) if candidates else sorted({t for g in (*fit_gold, *test_gold) for t in g})
    return (Labelled(fit_images, metrics.phenotype_positives(fit_gold, cands), split),
            Labelled(test_images, metrics.phenotype_positives(test_gold, cands), test_split), cands)


def _from_classes(cfg: Any, cls: ClassificationSet) -> tuple[Labelled, Labelled]:
    """(fit, test) of a classification set: one-hot (or multi-hot) positives over its classes."""
    split, test_split = cfg.calibration.split, cfg.data.split
    for field, s in (("config.calibration.split", split), ("config.data.split", test_split)):
        if s not in cls.splits:
            raise missing_split(field, s, cls.splits)

    def labelled(s: str, n: int = 0) -> Labelled:
        sp = cls.splits[s]
        images, labels = (sp.images[:n], sp.labels[:n]) if n else (sp.images, sp.labels)
        pos = labels.astype(bool) if cls.multi_label else np.eye(len(cls.class_names), dtype=bool)[labels]
        return Labelled(images, pos, s)

    return labelled(split), labelled(test_split, cfg.data.max_images)


def _keep_gold(logits: np.ndarray, data: Labelled) -> tuple[np.ndarray, np.ndarray, int]:
    """(logits, positives, rows dropped) of the rows with a gold candidate (the others have no gold mass)."""
    keep = data.positives.any(axis=1)
    if not keep.any():
        raise Skip(f"no {data.split!r} image has a gold phenotype among the candidates")
    return logits[keep], data.positives[keep], int((~keep).sum())


def fit_and_measure(cfg: Any, encoder: Any, logit_scale: float | None, pairs: PairSet | None,
                    cls: ClassificationSet | None, candidates: Sequence[str] | None = None) -> dict[str, Any]:
    """The fitted temperature and ECE / NLL / accuracy / confidence (+ reliability bins) before and after."""
    needs_images(encoder)
    if logit_scale is None:
        raise Skip("the model has no logit_scale")
    templates = tuple(cfg.templates)
    if pairs is not None:
        fit, test, cands = _from_pairs(cfg, pairs, candidates)
        classes = encoder.encode_phenotypes(cands, templates)
    elif cls is not None:
        fit, test = _from_classes(cfg, cls)
        cands = list(cls.class_names)
        classes = ensemble_prompts(encoder.encode_texts, cls.class_texts, templates)
    else:
        raise Skip("needs labelled images (a manifest or a classification set)")
    logits = {d.split: logit_scale * (encoder.encode_images(d.images) @ classes.T) for d in (fit, test)}
    fit_logits, fit_pos, fit_dropped = _keep_gold(logits[fit.split], fit)
    test_logits, test_pos, test_dropped = _keep_gold(logits[test.split], test)
    t = calibration.fit_temperature(fit_logits, fit_pos)
    bins = calibration.DEFAULT_BINS
    return dict(temperature=t, split=fit.split, n=len(fit_logits), test_split=test.split, n_test=len(test_logits),
                candidates=len(cands), logit_scale=float(logit_scale), bins=bins, at_bound=calibration.at_bound(t),
                skipped_images=fit_dropped + test_dropped,
                fit_nll_before=calibration.gold_nll(fit_logits, fit_pos), fit_nll_after=calibration.gold_nll(
                    fit_logits, fit_pos, t),
                before=calibration.summary(test_logits, test_pos, 1.0, bins),
                after=calibration.summary(test_logits, test_pos, t, bins))


def record(section: dict[str, Any]) -> calibration.Calibration:
    """The calibration.json record of a fit_and_measure result."""
    b, a = section["before"], section["after"]
    return calibration.Calibration(
        temperature=section["temperature"], n=section["n"], ece_before=b["ece"], ece_after=a["ece"],
        nll_before=b["nll"], nll_after=a["nll"], candidates=section["candidates"], split=section["split"],
        logit_scale=section["logit_scale"], test_split=section["test_split"], n_test=section["n_test"],
        bins=section["bins"], at_bound=section["at_bound"])


def save(section: dict[str, Any], run_dir: str, out_dir: str) -> tuple[str | None, bool]:
    """(path written, whether it is in the run): the run's folder, else (not writable) the output folder."""
    cal = record(section)
    if run_dir:
        try:
            return calibration.save(cal, run_dir), True
        except OSError as err:
            print(f"eval: the run's folder {run_dir} is not writable ({err.strerror}): calibration.json goes to "
                  f"{out_dir} instead; predict finds it only as --config.temperature={cal.temperature:.4g}", flush=True)
    try:
        return calibration.save(cal, out_dir), False
    except OSError as err:
        print(f"eval: calibration.json not saved: {out_dir} is not writable ({err.strerror})", flush=True)
        return None, False


def run(cfg: Any, encoder: Any, logit_scale: float | None, pairs: PairSet | None, cls: ClassificationSet | None,
        run_dir: str, out_dir: str, candidates: Sequence[str] | None = None) -> tuple[dict[str, Any], str]:
    """Fits, saves calibration.json, draws reliability.png; returns (the report section, the figure's path)."""
    section = fit_and_measure(cfg, encoder, logit_scale, pairs, cls, candidates)
    section["file"], section["in_run"] = save(section, run_dir, out_dir)
    figure = report.plot_reliability(section, os.path.join(out_dir, "reliability.png"))
    print(f"eval: calibration T={section['temperature']:.4g} fitted on {section['n']} {section['split']} images; "
          f"{section['test_split']} ECE {section['before']['ece']:.4f} -> {section['after']['ece']:.4f}, NLL "
          f"{section['before']['nll']:.4f} -> {section['after']['nll']:.4f} ({section['file']})", flush=True)
    return section, figure
