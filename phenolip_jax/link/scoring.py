"""Caption-level scoring of a linker against a dev set's (silver) HPO sets, and the pieces the evaluation sweeps.

Micro precision / recall / F1 over captions: TP = sum |pred & gold|, FP = sum |pred - gold|, FN = sum |gold - pred|.
`vocabulary` restricts both sets to the terms the labels can name at all (for ROCO: terms with a UMLS xref), so a
prediction that no silver label could ever confirm is not counted either way.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate.string_match import normalise
from phenolip_jax.link.linker import linked_ids
from phenolip_jax.ontology import Ontology


def micro_prf(predicted: Sequence[Iterable[str]], gold: Sequence[Iterable[str]],
              vocabulary: set[str] | None = None) -> dict[str, float]:
    """Micro precision, recall, F1 (and tp / fp / fn / captions) of per-caption predicted vs gold id sets."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted sets for {len(gold)} gold sets")
    tp = fp = fn = 0
    for p, g in zip(predicted, gold):
        p, g = set(p), set(g)
        if vocabulary is not None:
            p, g = p & vocabulary, g & vocabulary
        tp, fp, fn = tp + len(p & g), fp + len(p - g), fn + len(g - p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return dict(precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn, captions=len(gold))


class ExactNameMatcher:
    """The simplest string baseline: an HPO term is predicted when its name, normalised as string_match does
    (case-folded, non-alphanumerics to spaces), occurs in the normalised caption between word boundaries.
    Names only: no synonyms, no plural folding, no negation; overlapping names all count."""

    def __init__(self, onto: Ontology, terms: Iterable[int]):
        self.table: dict[tuple[str, ...], list[str]] = {}
        for t in terms:
            key = tuple(normalise(onto.names[int(t)]).split())
            if key:
                self.table.setdefault(key, []).append(onto.ids[int(t)])
        self.max_words = max((len(k) for k in self.table), default=1)

    def __call__(self, caption: str) -> list[str]:
        """The ids whose name occurs in the caption."""
        words = normalise(caption).split()
        found: dict[str, None] = {}
        for i in range(len(words)):
            for n in range(1, min(self.max_words, len(words) - i) + 1):
                for h in self.table.get(tuple(words[i:i + n]), ()):
                    found.setdefault(h, None)
        return list(found)


def ids_at_threshold(evidence: Sequence[dict[str, Any]], threshold: float) -> list[str]:
    """The ids linked when encoder mentions need a cosine >= threshold, from evidence made at a lower threshold.

    Exact because the linker takes encoder spans in descending score order: the spans it keeps at a higher
    threshold are those it kept at the lower one that score at least the higher.
    """
    return linked_ids([e for e in evidence if e["method"] != "encoder" or e["score"] >= threshold])


def sweep(evidence_rows: Sequence[Sequence[dict[str, Any]]], gold: Sequence[Sequence[str]],
          thresholds: Sequence[float], vocabulary: set[str] | None) -> list[dict[str, float]]:
    """micro_prf at each threshold (rows: per-caption evidence made at <= min(thresholds))."""
    return [dict(threshold=float(t), **micro_prf([ids_at_threshold(ev, t) for ev in evidence_rows], gold, vocabulary))
            for t in thresholds]


def best_threshold(table: Sequence[dict[str, float]]) -> float:
    """The threshold of the highest F1 (ties: the higher threshold, the more precise)."""
    return float(max(table, key=lambda r: (r["f1"], r["threshold"]))["threshold"])


def default_grid(lo: float = 0.5, hi: float = 0.99, step: float = 0.01) -> np.ndarray:
    """Cosine thresholds to sweep."""
    return np.round(np.arange(lo, hi + step / 2, step), 4)
