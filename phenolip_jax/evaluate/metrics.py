"""Evaluation metrics as pure NumPy functions: retrieval, zero-shot, multi-label matching, MedMNIST, hierarchy.

Tie rule, everywhere a ranking is involved: `ties="pessimistic"` (default) ranks every candidate that ties
with a positive *ahead* of it, so a degenerate model (all scores equal) gets chance-or-worse numbers, never
inflated ones; `ties="optimistic"` ranks tied positives first. Among candidates of the same kind that tie,
the lower index ranks first. Definitions: docs/models.md, "Losses and metrics".
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np

_TIES = ("pessimistic", "optimistic")


def _check_ties(ties: str) -> None:
    """Reject an unknown tie rule."""
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")


def _finite_2d(name: str, x: Any) -> np.ndarray:
    """A finite float64 matrix, or ValueError: NaN scores would silently rank anywhere."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Positive integer cut-offs."""
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def positives_from_lists(index_lists: Sequence[Iterable[int]], n_candidates: int) -> np.ndarray:
    """bool [Q, C] matrix from one list of positive candidate indices per query."""
    pos = np.zeros((len(index_lists), n_candidates), bool)
    for q, idx in enumerate(index_lists):
        idx = np.asarray(list(idx), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_candidates):
            raise ValueError(f"query {q}: positive index out of range [0, {n_candidates})")
        pos[q, idx] = True
    return pos


def _positives_matrix(positives: Any, shape: tuple[int, int]) -> np.ndarray:
    """A bool [Q, C] array is taken as is; anything else is read as per-query lists of candidate indices."""
    if isinstance(positives, np.ndarray) and positives.dtype == bool:
        pos = positives
    else:
        pos = positives_from_lists(positives, shape[1])
    if pos.shape != shape:
        raise ValueError(f"positives shape {pos.shape} != scores shape {shape}")
    return pos


def first_positive_rank(sim: Any, positives: Any, ties: str = "pessimistic") -> np.ndarray:
    """0-based rank of each query's best-ranked positive (-1 for queries without positive)."""
    _check_ties(ties)
    sim = _finite_2d("sim", sim)
    pos = _positives_matrix(positives, sim.shape)
    best = np.where(pos, sim, -np.inf).max(axis=1)
    # Only negatives can precede the best positive; ties with it count against it when pessimistic.
    ahead = (sim >= best[:, None]) if ties == "pessimistic" else (sim > best[:, None])
    rank = np.sum(ahead & ~pos, axis=1)
    return np.where(pos.any(axis=1), rank, -1)


def retrieval_recall(
    sim: Any, positives: Any, ks: Iterable[int] = (1, 5, 10, 50), ties: str = "pessimistic"
) -> dict[str, float]:
    """Multi-positive R@K (CLIP_benchmark): hit when any positive is in the top K; mean over queries with one."""
    ks = _check_ks(ks)
    rank = first_positive_rank(sim, positives, ties)
    has = rank >= 0
    out: dict[str, float] = {}
    for k in ks:
        out[f"r@{k}"] = float(np.mean(rank[has] < k)) if has.any() else float("nan")
    out["median_rank"] = float(np.median(rank[has]) + 1) if has.any() else float("nan")
    out["n_queries"] = int(has.sum())
    out["n_without_positive"] = int((~has).sum())
    return out


def chance_recall(positives: Any, k: int) -> float:
    """Expected R@K of a uniformly random ranking: mean over queries of 1 - C(C-p, k) / C(C, k)."""
    pos = np.asarray(positives, bool)
    if pos.ndim != 2:
        raise ValueError(f"positives must be a bool [Q, C] matrix, got shape {pos.shape}")
    k = _check_ks([k])[0]
    n_cand = pos.shape[1]
    p = pos.sum(axis=1)
    p = p[p > 0]
    if p.size == 0:
        return float("nan")
    k = min(k, n_cand)
    # C(C-p, k) / C(C, k) = prod_{i<k} (C-p-i) / (C-i): a product of k ratios, no big integers.
    miss = np.ones(p.shape, np.float64)
    for i in range(k):
        miss *= np.clip(n_cand - p - i, 0, None) / (n_cand - i)
    return float(np.mean(1.0 - miss))


def image_text_positives(
    pair_image_ids: Sequence[Hashable], pair_caption_ids: Sequence[Hashable]
) -> tuple[list[Hashable], list[Hashable], np.ndarray]:
    """From (image id, caption id) pairs: unique images, unique captions (first-seen order), bool [I, T].

    An image with several captions and a caption shared by several images both give several positives;
    the text-to-image positives are the transpose.
    """
    if len(pair_image_ids) != len(pair_caption_ids):
        raise ValueError("pair_image_ids and pair_caption_ids must have the same length")
    images = list(dict.fromkeys(pair_image_ids))
    captions = list(dict.fromkeys(pair_caption_ids))
    img_at = {x: i for i, x in enumerate(images)}
    cap_at = {x: i for i, x in enumerate(captions)}
    pos = np.zeros((len(images), len(captions)), bool)
    for im, cap in zip(pair_image_ids, pair_caption_ids):
        pos[img_at[im], cap_at[cap]] = True
    return images, captions, pos


def phenotype_positives(image_terms: Sequence[Iterable[Hashable]], candidate_terms: Sequence[Hashable]) -> np.ndarray:
    """bool [I, P]: image i is positive for candidate phenotype p when p is among its HPO terms."""
    at = {t: j for j, t in enumerate(candidate_terms)}
    if len(at) != len(candidate_terms):
        raise ValueError("candidate_terms contains duplicates")
    pos = np.zeros((len(image_terms), len(candidate_terms)), bool)
    for i, terms in enumerate(image_terms):
        for t in terms:
            if t in at:  # terms outside the candidate list cannot be retrieved; they are not positives
                pos[i, at[t]] = True
    return pos


def zero_shot_classifier(text_emb_per_template: Any) -> np.ndarray:
    """[n_classes, n_templates, D] -> [n_classes, D]: normalise each template, average, re-normalise."""
    x = np.asarray(text_emb_per_template, np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected [n_classes, n_templates, D], got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    w = x.mean(axis=1)
    return w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def classification_metrics(logits: Any, labels: Any, ties: str = "pessimistic") -> dict[str, Any]:
    """Top-1, top-5 (>= 5 classes), mean per-class recall (over classes present) and per-class recall."""
    _check_ties(ties)
    logits = _finite_2d("logits", logits)
    labels = np.asarray(labels, np.int64)
    n, n_classes = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels shape {labels.shape} != ({n},)")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    true = logits[np.arange(n), labels][:, None]
    others = np.ones_like(logits, bool)
    others[np.arange(n), labels] = False
    ahead = (logits >= true) if ties == "pessimistic" else (logits > true)
    rank = np.sum(ahead & others, axis=1)
    out: dict[str, Any] = {"top1": float(np.mean(rank < 1))}
    if n_classes >= 5:
        out["top5"] = float(np.mean(rank < 5))
    per_class = np.full(n_classes, np.nan)
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            per_class[c] = np.mean(rank[sel] < 1)
    out["mean_per_class_recall"] = float(np.nanmean(per_class))
    out["per_class_recall"] = per_class
    return out


def _ranking(scores: np.ndarray, gold: np.ndarray, ties: str) -> np.ndarray:
    """Candidate order per row: by score, then ties resolved against (or for) gold, then by index."""
    idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    tie_key = gold if ties == "pessimistic" else ~gold
    return np.lexsort((idx, tie_key, -scores), axis=-1)


def multilabel_matching(
    scores: Any, gold: Any, k: int | None = None, threshold: float | None = None,
    ks: Iterable[int] = (5, 10, 50), ties: str = "pessimistic",
) -> dict[str, float]:
    """Predicted set = top-k or score >= threshold; micro, per-sample and per-label P/R/F1; hit@K, recall@K."""
    _check_ties(ties)
    scores = _finite_2d("scores", scores)
    gold = np.asarray(gold, bool)
    if gold.shape != scores.shape:
        raise ValueError(f"gold shape {gold.shape} != scores shape {scores.shape}")
    if (k is None) == (threshold is None):
        raise ValueError("give exactly one of k or threshold")
    ks = _check_ks(ks)
    order = _ranking(scores, gold, ties)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    pred = ranks < _check_ks([k])[0] if k is not None else scores >= threshold

    tp = pred & gold
    n_tp, n_pred, n_gold = tp.sum(), pred.sum(), gold.sum()
    out: dict[str, float] = {}
    out["micro_precision"] = _ratio(n_tp, n_pred)
    out["micro_recall"] = _ratio(n_tp, n_gold)
    out["micro_f1"] = _ratio(2 * n_tp, n_pred + n_gold)

    rows = gold.any(axis=1)  # samples without gold phenotypes have no recall: excluded and counted
    tp_r, pred_r, gold_r = tp.sum(1)[rows], pred.sum(1)[rows], gold.sum(1)[rows]
    out["sample_precision"] = _mean(_ratios(tp_r, pred_r))
    out["sample_recall"] = _mean(_ratios(tp_r, gold_r))
    out["sample_f1"] = _mean(_ratios(2 * tp_r, pred_r + gold_r))

    cols = gold.any(axis=0)  # labels never gold: their recall is undefined, left out of the label macro
    tp_c, pred_c, gold_c = tp.sum(0)[cols], pred.sum(0)[cols], gold.sum(0)[cols]
    out["label_precision"] = _mean(_ratios(tp_c, pred_c))
    out["label_recall"] = _mean(_ratios(tp_c, gold_c))
    out["label_f1"] = _mean(_ratios(2 * tp_c, pred_c + gold_c))

    for kk in ks:
        in_top = (ranks < kk) & gold
        out[f"hit@{kk}"] = _mean(in_top.any(axis=1)[rows])
        out[f"recall@{kk}"] = _mean(_ratios(in_top.sum(1)[rows], gold_r))
    out["n_samples"] = int(rows.sum())
    out["n_without_gold"] = int((~rows).sum())
    return out


def _ratio(num: float, den: float) -> float:
    """num / den, 0 when den is 0 (sklearn's zero_division=0)."""
    return float(num / den) if den > 0 else 0.0


def _ratios(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den, 0 where den is 0."""
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def _mean(x: np.ndarray) -> float:
    """Mean, NaN for an empty array (without numpy's warning)."""
    return float(np.mean(x)) if np.size(x) else float("nan")


def binary_auc(y_true: Any, y_score: Any) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties (equals sklearn's roc_auc_score)."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score lengths differ: {y.shape} vs {s.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined when only one class is present in y_true")
    uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    avg_rank = start + (counts + 1) / 2.0  # 1-based average rank of each distinct score
    ranks = avg_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _medmnist_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Squeeze [N, 1] label/score columns as medmnist does, without collapsing N == 1."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, np.float64)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_score.ndim == 2 and y_score.shape[1] == 1:
        y_score = y_score[:, 0]
    return y_true, y_score


def auc_medmnist(y_true: Any, y_score: Any, task: str) -> float:
    """MedMNIST AUC: binary uses the last score column; multi-label mean per-label AUC; else mean one-vs-rest."""
    y_true, y_score = _medmnist_inputs(y_true, y_score)
    if task == "binary-class":
        return binary_auc(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
    if task == "multi-label, binary-class":
        return float(np.mean([binary_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]))
    # multi-class and ordinal-regression alike: one-vs-rest per class column, averaged over all columns
    return float(np.mean([binary_auc(y_true == i, y_score[:, i]) for i in range(y_score.shape[1])]))


def acc_medmnist(y_true: Any, y_score: Any, task: str, threshold: float = 0.5) -> float:
    """MedMNIST accuracy: multi-label mean per-label accuracy of score > threshold; binary last column > t; else argmax."""
    y_true, y_score = _medmnist_inputs(y_true, y_score)
    if task == "multi-label, binary-class":
        return float(np.mean((y_score > threshold) == y_true.astype(bool)))
    if task == "binary-class":
        s = y_score[:, -1] if y_score.ndim == 2 else y_score
        return float(np.mean((s > threshold) == y_true.astype(bool)))
    return float(np.mean(np.argmax(y_score, axis=-1) == y_true))


def hierarchical_hit(
    pred_terms: Any, gold_terms: Sequence[Iterable[int]],
    relation_codes: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray],
    credit_codes: Iterable[int],
) -> dict[str, Any]:
    """Exact and hierarchy-aware top-1 accuracy: credit when pred is a gold term or related by a credited code.

    `relation_codes[pred, gold]` (a precomputed [T, T] int matrix, or a function of two index arrays) gives the
    relation of the predicted term to a gold term, in the caller's code convention; `credit_codes` lists the
    codes that earn credit (e.g. the codes for parent and child).
    """
    pred = np.asarray(pred_terms, np.int64)
    if pred.ndim != 1 or len(pred) != len(gold_terms):
        raise ValueError("pred_terms must be 1-D with one entry per gold_terms entry")
    credit = np.asarray(sorted(set(int(c) for c in credit_codes)), np.int64)
    lookup = relation_codes if callable(relation_codes) else (lambda p, g: np.asarray(relation_codes)[p, g])
    exact = np.zeros(len(pred), bool)
    hit = np.zeros(len(pred), bool)
    has_gold = np.zeros(len(pred), bool)
    for i, gold in enumerate(gold_terms):
        g = np.asarray([t for t in gold if t >= 0], np.int64)
        if g.size == 0:
            continue
        has_gold[i] = True
        exact[i] = np.any(g == pred[i])
        codes = np.asarray(lookup(np.full(g.shape, pred[i]), g))
        hit[i] = exact[i] or bool(np.isin(codes, credit).any())
    return {
        "exact": _mean(exact[has_gold]),
        "hierarchical": _mean(hit[has_gold]),
        "hit": hit,
        "n": int(has_gold.sum()),
        "n_without_gold": int((~has_gold).sum()),
    }


def grouped_accuracy(correct: Any, groups: Sequence[Iterable[Hashable]]) -> dict[str, Any]:
    """Accuracy per group (e.g. HPO organ system); an example counts once in each of its groups."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 1 or len(correct) != len(groups):
        raise ValueError("correct must be 1-D with one entry per groups entry")
    hits: dict[Hashable, int] = {}
    counts: dict[Hashable, int] = {}
    n_ungrouped = 0
    for ok, gs in zip(correct, groups):
        gs = set(gs)
        n_ungrouped += not gs
        for g in gs:
            counts[g] = counts.get(g, 0) + 1
            hits[g] = hits.get(g, 0) + int(ok)
    per_group = {g: hits[g] / counts[g] for g in counts}
    return {
        "per_group": per_group,
        "n": counts,
        "macro": _mean(np.asarray(list(per_group.values()))),
        "overall": _mean(correct),
        "n_ungrouped": n_ungrouped,
    }
