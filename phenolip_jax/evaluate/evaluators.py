"""Evaluators over an encoder (anything with encode_images / encode_texts / encode_phenotypes -> unit rows).

Each evaluator returns a dict of plain numbers (and per-class / per-group dicts); it raises `Skip` when
the encoder or the data cannot support it (e.g. a text-only stage-1 model, or a set without captions).
Directions are named by the query: image_to_text = image queries ranking captions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate import metrics, retrieval
from phenolip_jax.evaluate.datasets import ClassificationSet, PairSet, Split
from phenolip_jax.evaluate.linear_probe import DEFAULT_CS, linear_probe
from phenolip_jax.inference import ensemble_prompts
from phenolip_jax.ontology import Relation, relation_codes

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale for zero-shot probabilities (only AUC depends on it)


class Skip(Exception):
    """An evaluator that does not apply to this encoder or dataset; the message says why."""


def needs_images(encoder: Any) -> None:
    """Raise Skip for an encoder without an image tower (a stage-1 knowledge encoder)."""
    if not getattr(encoder, "has_images", True):
        raise Skip("text-only model (stage-1 knowledge encoder): no image tower")


class CachedEncoder:
    """Wraps an encoder so that each image list / array and phenotype list is encoded once per run."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.has_images = getattr(encoder, "has_images", True)
        self._cache: dict[Any, np.ndarray] = {}
        self._keep: list[Any] = []  # arrays keyed by id() must stay alive so their ids are not reused

    def _key(self, kind: str, x: Any, extra: Any = None) -> Any:
        if isinstance(x, np.ndarray):
            self._keep.append(x)
            return kind, id(x), x.shape, extra
        return kind, tuple(str(v) for v in x), extra

    def _get(self, key: Any, fn: Any) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def encode_images(self, images: Any) -> np.ndarray:
        """Cached `encoder.encode_images`."""
        return self._get(self._key("img", images), lambda: self.encoder.encode_images(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Cached `encoder.encode_texts`."""
        return self._get(self._key("txt", texts), lambda: self.encoder.encode_texts(texts))

    def encode_phenotypes(self, hpo_ids: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """Cached `encoder.encode_phenotypes`."""
        return self._get(self._key("phen", hpo_ids, tuple(templates or ())),
                         lambda: self.encoder.encode_phenotypes(list(hpo_ids), templates))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _auc_or_none(labels: np.ndarray, scores: np.ndarray, task: str) -> float | None:
    """MedMNIST AUC, or None when a class is absent from the labels or there is one class (AUC undefined)."""
    if np.asarray(scores).ndim == 2 and np.asarray(scores).shape[1] < 2:
        return None
    try:
        return metrics.auc_medmnist(labels, scores, task)
    except ValueError:
        return None


def zero_shot_classification(encoder: Any, data: ClassificationSet, templates: Sequence[str],
                             split: str = "test") -> dict[str, Any]:
    """Prompt-ensembled zero-shot: top-1/top-5, per-class recall and its mean, MedMNIST ACC/AUC."""
    needs_images(encoder)
    if split not in data.splits:
        raise Skip(f"dataset {data.name} has no {split!r} split")
    s = data.splits[split]
    img = encoder.encode_images(s.images)
    classes = ensemble_prompts(encoder.encode_texts, data.class_texts, templates)
    logits = ZERO_SHOT_SCALE * (img @ classes.T)
    out: dict[str, Any] = dict(n_images=len(s), n_classes=len(data.class_names), n_templates=len(templates),
                               task=data.task)
    if data.multi_label:
        # Independent labels: each label's cosine score ranks the images; accuracy needs a calibrated
        # threshold that a zero-shot model does not have, so only the threshold-free AUC is reported.
        out["auc"] = _auc_or_none(s.labels, logits, data.task)
        return out
    m = metrics.classification_metrics(logits, s.labels)
    out.update(top1=m["top1"], mean_per_class_recall=m["mean_per_class_recall"],
               chance_top1=1.0 / len(data.class_names))
    if "top5" in m:
        out["top5"] = m["top5"]
    out["per_class_recall"] = {name: (None if np.isnan(v) else float(v))
                               for name, v in zip(data.class_names, m["per_class_recall"])}
    probs = _softmax(logits)
    out["acc_medmnist"] = metrics.acc_medmnist(s.labels, probs, data.task)
    out["auc"] = _auc_or_none(s.labels, probs, data.task)
    return out


def cross_modal_retrieval(encoder: Any, pairs: PairSet, candidates: Sequence[str] | None = None,
                          ks: Sequence[int] = (1, 5, 10, 50), templates: Sequence[str] | None = None
                          ) -> dict[str, Any]:
    """Multi-positive R@K (+ chance) for image_to_text, text_to_image, image_to_phenotype, phenotype_to_image.

    Scored by `retrieval.retrieval_metrics` (as eval.json is): identical captions are one caption, an
    image's phenotypes are the union over its pairs; candidates default to every phenotype in the set.
    """
    needs_images(encoder)
    img_rows = retrieval.first_rows(pairs.image_ids)
    cap_rows = retrieval.first_rows(pairs.captions)
    # Each distinct image and caption is encoded once, then spread back over the pairs that share it.
    img = encoder.encode_images([pairs.image_paths[r] for r in img_rows])
    txt = encoder.encode_texts([pairs.captions[r] for r in cap_rows])
    img_at = {pairs.image_ids[r]: i for i, r in enumerate(img_rows)}
    cap_at = {pairs.captions[r]: i for i, r in enumerate(cap_rows)}
    _, terms = pairs.images()
    candidates = list(candidates) if candidates else sorted({t for ts in terms for t in ts})
    ph = encoder.encode_phenotypes(candidates, templates) if candidates else None
    return retrieval.retrieval_metrics(img[[img_at[i] for i in pairs.image_ids]],
                                       txt[[cap_at[c] for c in pairs.captions]], pairs.image_ids, pairs.captions,
                                       pairs.hpo_ids, ph, candidates, ks)


def phenotype_matching(encoder: Any, images: Any, gold_terms: Sequence[Sequence[str]], candidates: Sequence[str],
                       k: int | None = 5, threshold: float | None = None, ks: Sequence[int] = (5, 10, 50),
                       templates: Sequence[str] | None = None) -> dict[str, Any]:
    """Face2Gene-style multi-label matching: recall@K / hit@K over candidates, P/R/F1 of the predicted set.

    The predicted set is the top-k candidates (or cosine >= threshold). Micro pools every (image,
    phenotype) decision; 'sample' macro-averages over images, 'label' over phenotypes that are ever gold.
    """
    needs_images(encoder)
    if not len(candidates):
        raise Skip("no candidate phenotypes")
    scores = encoder.encode_images(images) @ encoder.encode_phenotypes(list(candidates), templates).T
    gold = metrics.phenotype_positives(gold_terms, list(candidates))
    out: dict[str, Any] = metrics.multilabel_matching(scores, gold, k=k, threshold=threshold, ks=ks)
    for kk in ks:
        out[f"r@{kk}"] = out[f"recall@{kk}"]  # Face2Gene's R@K: share of an image's gold phenotypes in its top K
    out.update(n_candidates=len(candidates), predicted_set=f"top-{k}" if k is not None else f"cosine>={threshold}")
    return out


def _relation_of_pred(onto: Any, max_hops: int):
    """`(pred_idx, gold_idx) -> Relation codes` of each predicted term relative to its gold term."""
    def lookup(p: np.ndarray, g: np.ndarray) -> np.ndarray:
        # relation_codes(a, b)[i, j] is how b relates to a: a = gold, b = pred gives 'pred is an ancestor'.
        return np.array([relation_codes(onto, [gi], [pi], max_hops)[0, 0] for pi, gi in zip(p, g)], np.int8)

    return lookup


def organ_system_names(onto: Any, hpo_ids: Sequence[str]) -> list[str]:
    """Names of the organ systems (children of HP:0000118) of a set of terms, sorted."""
    return sorted({onto.names[int(o)] for h in hpo_ids for o in onto.organ_systems(onto.index(h))})


def hierarchy_scores(encoder: Any, images: Any, gold_terms: Sequence[Sequence[str]], candidates: Sequence[str],
                     onto: Any, max_hops: int = 1, templates: Sequence[str] | None = None) -> dict[str, Any]:
    """Top-1 phenotype prediction: exact accuracy, hierarchy-aware accuracy, and both per organ system.

    Hierarchy-aware credit: the top-1 candidate is a gold term or an ancestor / descendant of one within
    `max_hops` is-a steps (1 = parent or child). Images count once in each organ system of their gold terms.
    """
    needs_images(encoder)
    cand = set(candidates)
    keep = [i for i, g in enumerate(gold_terms) if set(g) & cand]
    if not keep or not len(candidates):
        raise Skip("no image has a gold phenotype among the candidates")
    imgs = images[np.asarray(keep)] if isinstance(images, np.ndarray) else [images[i] for i in keep]
    gold = [[t for t in gold_terms[i] if t in cand] for i in keep]  # gold outside the candidates is unreachable
    scores = encoder.encode_images(imgs) @ encoder.encode_phenotypes(list(candidates), templates).T
    cand_idx = np.array([onto.index(c) for c in candidates], np.int64)
    pred = cand_idx[np.argmax(scores, axis=1)]
    gold_idx = [[onto.index(t) for t in g] for g in gold]
    hit = metrics.hierarchical_hit(pred, gold_idx, _relation_of_pred(onto, max_hops),
                                   credit_codes=(Relation.ANCESTOR, Relation.DESCENDANT))
    exact = np.array([p in set(g) for p, g in zip(pred, gold_idx)])
    groups = [organ_system_names(onto, g) for g in gold]
    by_exact = metrics.grouped_accuracy(exact, groups)
    by_hier = metrics.grouped_accuracy(hit["hit"], groups)
    per_group = {g: dict(accuracy=by_exact["per_group"][g], hierarchical=by_hier["per_group"][g],
                         n=by_exact["n"][g]) for g in sorted(by_exact["per_group"])}
    return dict(exact=hit["exact"], hierarchical=hit["hierarchical"], max_hops=max_hops, n=hit["n"],
                per_organ_system=per_group, organ_system_macro=by_exact["macro"],
                organ_system_macro_hierarchical=by_hier["macro"], n_ungrouped=by_exact["n_ungrouped"],
                n_candidates=len(candidates))


def _stratified_cut(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, cut) indices: about `fraction` of each class with >= 2 examples is cut off (seeded)."""
    rng = np.random.default_rng(seed)
    cut = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) >= 2:  # a singleton class stays where it is: both sides cannot have it
            n = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
            cut.append(rng.choice(idx, size=n, replace=False))
    cut = np.sort(np.concatenate(cut)) if cut else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), cut), cut


def _take(split: Split, idx: np.ndarray) -> Split:
    images = split.images[idx] if isinstance(split.images, np.ndarray) else [split.images[i] for i in idx]
    return Split(images, split.labels[idx])


def probe_splits(data: ClassificationSet, seed: int = 0) -> dict[str, Split]:
    """train / val / test, carving val (20% of train) or train+val (60/20 of a lone split) when missing."""
    s = dict(data.splits)
    if "train" not in s:
        only = s.get("test") or next(iter(s.values()))
        rest, test = _stratified_cut(only.labels, 0.2, seed)
        s = {"train": _take(only, rest), "test": _take(only, test)}
    if "val" not in s:
        carved = "train" not in data.splits  # 80% left after the test cut: 25% of it is 20% of the whole
        train, val = _stratified_cut(s["train"].labels, 0.25 if carved else 0.2, seed + 1)
        s["train"], s["val"] = _take(s["train"], train), _take(s["train"], val)
    if "test" not in s:
        raise Skip(f"dataset {data.name} has no test split")
    return {k: s[k] for k in ("train", "val", "test")}


def linear_probe_eval(encoder: Any, data: ClassificationSet, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                      seeds: Sequence[int] = (0, 1, 2), cs: Sequence[float] = DEFAULT_CS) -> dict[str, Any]:
    """Logistic-regression probe on frozen image features at each label fraction (C swept on validation)."""
    needs_images(encoder)
    if data.multi_label:
        raise Skip("linear probe is single-label (logistic regression over classes); this set is multi-label")
    sp = probe_splits(data)
    if len(np.unique(sp["train"].labels)) < 2 or not len(sp["val"]):
        raise Skip("linear probe needs >= 2 classes in train and a non-empty validation split")
    feats = {k: encoder.encode_images(v.images) for k, v in sp.items()}
    res = linear_probe(feats["train"], sp["train"].labels, feats["val"], sp["val"].labels, feats["test"],
                       sp["test"].labels, cs=cs, seeds=seeds, fractions=fractions)
    out: dict[str, Any] = {f"{100 * f:g}%": v for f, v in res.items()}
    out.update(n_train=len(sp["train"]), n_val=len(sp["val"]), n_test=len(sp["test"]))
    return out
