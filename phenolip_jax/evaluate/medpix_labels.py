"""MedPix 2.0's own labels as zero-shot and linear-probe tasks (`configs/eval.py:medpix`, issue 26).

Three label sets per image of `Descriptions.json`, each split by MedPix's official split (the format reader's):
  modality  `Type` (CT / MR)
  plane     `Description.Plane`, Axial / Coronal / Sagittal only (the rare views, Transverse included as written,
            are dropped and counted)
  location  `Location Category` (5 body regions, each with >= 11 test images) by default; `Location` (22 values,
            among them 'Generalized', 'Pathology', 'Left Blank') when asked
Classes with fewer than `min_test_images` test images are dropped from every split and counted. Prompts are
the label names as MedPix writes them, filled into a few templates. Chance levels go beside every figure: a
uniform guess (1/K, also the mean per-class recall of any constant guess) and the train split's majority class
(its share of the test images).
"""
from __future__ import annotations

import collections
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import inference
from phenolip_jax.data import formats, paths
from phenolip_jax.data.formats import medpix
from phenolip_jax.data.records import resolve_image_path
from phenolip_jax.evaluate import evaluators
from phenolip_jax.evaluate.datasets import BINARY, MULTI_CLASS, ClassificationSet, Split
from phenolip_jax.ontology import Relation, relation_codes

TASKS = ("modality", "plane", "location")
PLANES = ("Axial", "Coronal", "Sagittal")
LOCATION_FIELDS = ("Location Category", "Location")
SPLITS = ("train", "val", "test")
REPORT_FILE = "medpix_labels.md"


def label_value(item: dict[str, Any], task: str, location_field: str = "Location Category") -> str:
    """An image's label for `task` as MedPix writes it ('' when absent)."""
    if task == "modality":
        value = item.get("Type")
    elif task == "plane":
        desc = item.get("Description")
        value = desc.get("Plane") if isinstance(desc, dict) else None
    elif task == "location":
        value = item.get(location_field)
    else:
        raise ValueError(f"unknown MedPix label set {task!r}: use one of {', '.join(TASKS)}")
    return value.strip() if isinstance(value, str) else ""


def read_label_sets(medpix_dir: str, onto: Any, location_field: str = "Location Category", min_test_images: int = 10
                    ) -> tuple[dict[str, ClassificationSet], dict[str, dict[str, dict[str, int]]]]:
    """({task: ClassificationSet}, {task: {reason: {label: images dropped}}}) of the images the MedPix reader keeps
    (the packer's: missing / unreadable images and empty captions are dropped there and counted in its report)."""
    if location_field not in LOCATION_FIELDS:
        raise ValueError(f"config.medpix.location_field={location_field!r}: use one of {', '.join(LOCATION_FIELDS)}")
    if min_test_images < 1:
        raise ValueError(f"config.medpix.min_test_images={min_test_images} must be >= 1")
    records, report, root = formats.read_and_validate_input(medpix_dir, "medpix", onto)
    print(f"medpix labels: {report}", flush=True)
    descriptions = medpix.find_descriptions(medpix_dir)
    items = dict(medpix.json_items(paths.read_bytes(descriptions).decode("utf-8-sig"), descriptions))
    images = [resolve_image_path(r.image, root) for r in records]
    sets, dropped = {}, {}
    for task in TASKS:
        labels = [label_value(items[r.line], task, location_field) for r in records]
        sets[task], dropped[task] = _label_set(task, images, labels, [r.split for r in records], min_test_images)
    return sets, dropped


def _label_set(task: str, images: list[str], labels: list[str], splits: list[str], min_test: int
               ) -> tuple[ClassificationSet, dict[str, dict[str, int]]]:
    """One task's set: unlabelled images, rare planes and classes with < min_test test images dropped, counted."""
    dropped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    keep = []
    for i, label in enumerate(labels):
        if not label:
            dropped["no_label"]["(none)"] += 1
        elif task == "plane" and label not in PLANES:
            dropped["other_plane"][label] += 1
        else:
            keep.append(i)
    test_counts = collections.Counter(labels[i] for i in keep if splits[i] == "test")
    classes = sorted(c for c in {labels[i] for i in keep} if test_counts[c] >= min_test)
    for i in keep:
        if labels[i] not in classes:
            dropped[f"under_{min_test}_test_images"][labels[i]] += 1
    if len(classes) < 2:
        raise ValueError(f"MedPix {task} labels: {len(classes)} class with >= {min_test} test images (need 2; lower "
                         "config.medpix.min_test_images)")
    at = {c: k for k, c in enumerate(classes)}
    split_sets = {s: Split([images[i] for i in keep if splits[i] == s and labels[i] in at],
                           np.array([at[labels[i]] for i in keep if splits[i] == s and labels[i] in at], np.int64))
                  for s in SPLITS}
    data = ClassificationSet(f"MedPix 2.0 {task}", classes, list(classes), [None] * len(classes),
                             {s: v for s, v in split_sets.items() if len(v)},
                             BINARY if len(classes) == 2 else MULTI_CLASS)
    return data, {reason: dict(c.most_common()) for reason, c in dropped.items()}


def chance_levels(data: ClassificationSet) -> dict[str, Any]:
    """Uniform guess (1/K: top-1 and mean per-class recall) and the train majority class's share of test images."""
    k, test = len(data.class_names), data.splits["test"].labels
    fit = data.splits.get("train", data.splits["test"]).labels
    majority = int(np.bincount(fit, minlength=k).argmax())
    return dict(uniform_top1=1.0 / k, mean_per_class_recall=1.0 / k, majority_class=data.class_names[majority],
                majority_top1=float(np.mean(test == majority)))


def phenotype_chance(onto: Any, gold_terms: Sequence[Sequence[str]], candidates: Sequence[str], max_hops: int = 1
                     ) -> dict[str, Any] | None:
    """Exact and hierarchy-aware top-1 accuracy of a uniformly random candidate, over the images the hierarchy
    evaluator scores (a gold term among the candidates) and by its rule (gold, or an ancestor / descendant
    within max_hops); None when no image qualifies."""
    cand = set(candidates)
    gold = [[onto.index(t) for t in g if t in cand] for g in gold_terms if set(g) & cand]
    if not gold:
        return None
    cand_idx = np.array([onto.index(c) for c in candidates], np.int64)
    exact, hier = [], []
    for g in gold:
        codes = relation_codes(onto, np.array(g, np.int64), cand_idx, max_hops)  # how each candidate relates
        exact.append(np.mean((codes == Relation.SAME).any(axis=0)))
        hier.append(np.mean(np.isin(codes, (Relation.SAME, Relation.ANCESTOR, Relation.DESCENDANT)).any(axis=0)))
    return dict(exact=float(np.mean(exact)), hierarchical=float(np.mean(hier)), n=len(gold),
                n_candidates=len(candidates), max_hops=max_hops)


class _EncodeOnce:
    """Encodes the union of the label sets' images once (their splits overlap); texts pass through."""

    def __init__(self, encoder: Any, images: Sequence[str]):
        self.encoder, self.has_images = encoder, getattr(encoder, "has_images", True)
        self._images = list(dict.fromkeys(images))
        self._row = {p: i for i, p in enumerate(self._images)}
        self._features: np.ndarray | None = None

    def encode_images(self, images: Sequence[str]) -> np.ndarray:
        """Rows of the encoded union, in the order asked."""
        if self._features is None:
            self._features = np.asarray(self.encoder.encode_images(self._images))
        return self._features[[self._row[p] for p in images]]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The wrapped encoder's text embeddings."""
        return self.encoder.encode_texts(texts)


def evaluate(encoder: Any, sets: dict[str, ClassificationSet], dropped: dict[str, Any], templates: Sequence[str],
             probe: Any) -> dict[str, Any]:
    """Per label set: classes and counts, chance levels, zero-shot (prompts = label names) and linear probes."""
    enc = _EncodeOnce(encoder, [p for d in sets.values() for s in d.splits.values() for p in s.images])
    out: dict[str, Any] = {}
    for task, data in sets.items():
        test = data.splits["test"].labels
        out[task] = dict(
            classes={c: int(np.sum(test == k)) for k, c in enumerate(data.class_names)},  # test images per class
            n_images={s: len(v) for s, v in data.splits.items()}, dropped=dropped[task], chance=chance_levels(data),
            zero_shot=evaluators.zero_shot_classification(enc, data, tuple(templates)),
            linear_probe=evaluators.linear_probe_eval(enc, data, tuple(probe.fractions), tuple(probe.seeds),
                                                      tuple(probe.cs)))
    return out


def markdown(results: dict[str, Any]) -> str:
    """The table of `evaluate`'s results: each figure beside its uniform and majority-class chance."""
    fractions = sorted({f for r in results.values() for f in r["linear_probe"] if f.endswith("%")},
                       key=lambda f: -float(f[:-1]))
    head = (["label set (test images per class)", "zero-shot top-1", "zero-shot mean recall", "zero-shot AUC"]
            + [f"probe top-1 ({f} labels)" for f in fractions] + [f"probe mean recall ({fractions[0]})",
                                                                    "chance top-1 uniform / majority",
                                                                    "chance mean recall"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, r in results.items():
        z, p, c = r["zero_shot"], r["linear_probe"], r["chance"]
        classes = ", ".join(f"{k} {n}" for k, n in r["classes"].items())
        lines.append("| " + " | ".join(
            [f"{task} ({classes})", _fmt(z["top1"]), _fmt(z["mean_per_class_recall"]), _fmt(z.get("auc"))]
            + [_fmt(p[f]["top1_mean"]) for f in fractions] + [_fmt(p[fractions[0]]["mean_per_class_recall_mean"]),
                                                             f"{_fmt(c['uniform_top1'])} / {_fmt(c['majority_top1'])} "
                                                             f"({c['majority_class']})",
                                                             _fmt(c["mean_per_class_recall"])]) + " |")
    lines.append("")
    for task, r in results.items():
        drops = "; ".join(f"{reason}: " + ", ".join(f"{k} {n}" for k, n in v.items())
                          for reason, v in r["dropped"].items()) or "none"
        lines.append(f"- {task}: {r['n_images']} images kept per split; dropped (all splits) {drops}")
    return "\n".join(lines) + "\n"


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def read_configured(cfg: Any, onto: Any) -> tuple[dict[str, ClassificationSet], dict[str, Any]] | None:
    """The label sets of config.medpix (None when config.medpix.dir is empty or absent)."""
    m = cfg.get("medpix")
    if not m or not m.get("dir"):
        return None
    if not os.path.exists(m.dir):
        raise ValueError(f"config.medpix.dir={m.dir!r} does not exist: give MedPix 2.0's MedPix-2-0 folder (git clone "
                         "https://github.com/CHILab1/MedPix-2.0)")
    return read_label_sets(m.dir, onto, m.location_field, int(m.min_test_images))


def evaluate_and_write(cfg: Any, encoder: Any, labels: tuple[dict[str, ClassificationSet], dict[str, Any]],
                       out_dir: str, phenotypes: tuple[Any, Sequence[Sequence[str]], Sequence[str]] | None = None
                       ) -> dict[str, Any]:
    """{tasks: `evaluate` with config.medpix.templates and config.probe, phenotype_chance: the hierarchy
    evaluator's chance level for `phenotypes` = (ontology, gold terms, candidates)}; the table goes to stdout and
    medpix_labels.md."""
    try:
        tasks = evaluate(encoder, labels[0], labels[1], tuple(cfg.medpix.templates), cfg.probe)
    except evaluators.Skip as e:
        print(f"eval: medpix labels skipped: {e}", flush=True)
        return {"skipped": str(e)}
    chance = phenotype_chance(*phenotypes, cfg.hierarchy.max_hops) if phenotypes and phenotypes[2] else None
    table = markdown(tasks)
    if chance:
        table += (f"\nPhenotype top-1 (the hierarchy evaluator's {chance['n']} images, {chance['n_candidates']} "
                  f"candidates): chance exact {_fmt(chance['exact'])}, hierarchy-aware ({chance['max_hops']} hop) "
                  f"{_fmt(chance['hierarchical'])}.\n")
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        f.write(f"# MedPix 2.0 labels: {cfg.checkpoint}\n\nTemplates: {list(cfg.medpix.templates)}; location field "
                f"`{cfg.medpix.location_field}`.\n\n" + table)
    sys.stdout.write(table)
    sys.stdout.flush()
    return dict(tasks=tasks, phenotype_chance=chance)


def run_figures(checkpoint: str, medpix_cfg: Any, probe_cfg: Any, ontology_cfg: Any = None, batch_size: int = 64,
                label_sets: tuple[dict[str, ClassificationSet], dict[str, Any]] | None = None) -> dict[str, float]:
    """One run's flat figures on MedPix's labels (`medpix_cfg`: configs/eval.py's medpix section):
    `{task}_zs_top1`, `{task}_probe_top1` (the probe_cfg fraction 1.0) and `{task}_chance_uniform` / `_majority`;
    {} when no label set keeps enough images (printed). `label_sets`: `read_label_sets`' result, read once by a
    caller that scores several runs."""
    model = inference.load(checkpoint, batch_size=batch_size)
    if ontology_cfg is not None:
        inference.use_ontology(model, ontology_cfg)
    m = medpix_cfg
    sets, dropped = label_sets or read_label_sets(m.dir, model.ontology, m.location_field, int(m.min_test_images))
    try:
        tasks = evaluate(evaluators.CachedEncoder(model), sets, dropped, tuple(m.templates), probe_cfg)
    except evaluators.Skip as e:
        print(f"medpix labels skipped for {checkpoint}: {e}", flush=True)
        return {}
    out: dict[str, float] = {}
    for task, r in tasks.items():
        out[f"{task}_zs_top1"] = r["zero_shot"]["top1"]
        out[f"{task}_probe_top1"] = r["linear_probe"]["100%"]["top1_mean"]
        out[f"{task}_chance_uniform"] = r["chance"]["uniform_top1"]
        out[f"{task}_chance_majority"] = r["chance"]["majority_top1"]
    return out
