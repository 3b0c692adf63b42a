"""Metrics against scikit-learn or plain loops, on random and hand-made cases (ties, multi-caption images)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from phenolip_jax.evaluate import metrics as M


def ref_order(scores_row, pos_row, ties):
    """Candidates sorted by score; ties put negatives first (pessimistic) or positives first; then index."""
    flip = 1 if ties == "pessimistic" else -1
    return sorted(range(len(scores_row)), key=lambda j: (-scores_row[j], flip * int(pos_row[j]), j))


def ref_recall(sim, pos, k, ties):
    hits = [any(pos[q][j] for j in ref_order(sim[q], pos[q], ties)[:k]) for q in range(len(sim)) if any(pos[q])]
    return float(np.mean(hits))


# ---------------------------------------------------------------- retrieval

@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_recall_matches_loop_with_ties(seed, ties):
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 4, size=(12, 15)).astype(float)  # few distinct values: many ties
    pos = rng.random((12, 15)) < 0.15
    pos[0] = False  # a query without positive: excluded and counted
    out = M.retrieval_recall(sim, pos, ks=(1, 3, 5, 50), ties=ties)
    for k in (1, 3, 5, 50):
        assert out[f"r@{k}"] == pytest.approx(ref_recall(sim, pos, k, ties))
    assert out["n_without_positive"] == int((~pos.any(1)).sum()) and out["n_queries"] == int(pos.any(1).sum())


def test_retrieval_all_equal_scores_pessimistic_vs_optimistic():
    sim = np.zeros((3, 4))
    pos = np.eye(3, 4, dtype=bool)
    assert M.retrieval_recall(sim, pos, ks=(1, 4), ties="pessimistic") | {} == {
        "r@1": 0.0, "r@4": 1.0, "median_rank": 4.0, "n_queries": 3, "n_without_positive": 0}
    assert M.retrieval_recall(sim, pos, ks=(1,), ties="optimistic")["r@1"] == 1.0


def test_retrieval_index_lists_equal_bool_matrix():
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(5, 9))
    lists = [[0, 4], [8], [], [1, 2, 3], [7]]
    pos = M.positives_from_lists(lists, 9)
    assert pos.sum() == 7 and pos[0, 4] and not pos[2].any()
    assert M.retrieval_recall(sim, lists) == M.retrieval_recall(sim, pos)


def test_multi_caption_images_beat_positional_ground_truth():
    # 2 images x 3 captions: pairs listed image by image, so positional arange(N) would be wrong.
    pairs_img = ["img_a"] * 3 + ["img_b"] * 3
    pairs_cap = ["a1", "a2", "a3", "b1", "b2", "b3"]
    images, captions, pos = M.image_text_positives(pairs_img, pairs_cap)
    assert images == ["img_a", "img_b"] and captions == pairs_cap
    assert pos.tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    cap = np.array([[0.9, 0.1], [1.0, 0.0], [0.8, 0.2], [0.1, 0.9], [0.0, 1.0], [0.3, 0.7]])
    sim = img @ cap.T
    i2t = M.retrieval_recall(sim, pos, ks=(1,))
    t2i = M.retrieval_recall(sim.T, pos.T, ks=(1,))
    assert i2t["r@1"] == 1.0 and t2i["r@1"] == 1.0 and t2i["n_queries"] == 6
    # The positional convention (image i <-> caption i) would score image 1 against caption 1 only: a miss.
    wrong = M.retrieval_recall(sim, np.eye(2, 6, dtype=bool), ks=(1,))
    assert wrong["r@1"] == 0.0


def test_caption_shared_by_several_images():
    images, captions, pos = M.image_text_positives(["x", "y", "y", "z"], ["normal chest", "normal chest", "c2", "c3"])
    assert captions == ["normal chest", "c2", "c3"]
    assert pos[:, 0].tolist() == [True, True, False]  # caption 0 -> two images
    sim_t2i = np.array([[0.1, 0.9, 0.0], [0.0, 0.9, 0.1], [0.8, 0.1, 0.1]])  # captions x images
    out = M.retrieval_recall(sim_t2i, pos.T, ks=(1,))
    assert out["r@1"] == pytest.approx(2 / 3)  # caption 0 hits via image y; caption 2 ("c3") misses z


def test_phenotype_positives_both_directions():
    pos = M.phenotype_positives([["HP:1", "HP:3"], [], ["HP:9"]], ["HP:1", "HP:2", "HP:3"])
    assert pos.tolist() == [[True, False, True], [False, False, False], [False, False, False]]
    sim = np.array([[0.1, 0.9, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert M.retrieval_recall(sim, pos, ks=(1, 2))["r@2"] == 1.0
    p2i = M.retrieval_recall(sim.T, pos.T, ks=(1,))
    assert p2i["n_queries"] == 2 and p2i["n_without_positive"] == 1


def test_chance_recall_is_exact_hypergeometric():
    rng = np.random.default_rng(4)
    pos = rng.random((20, 11)) < 0.2
    for k in (1, 3, 11, 40):
        want = np.mean([1 - math.comb(11 - p, min(k, 11)) / math.comb(11, min(k, 11)) for p in pos.sum(1) if p > 0])
        assert M.chance_recall(pos, k) == pytest.approx(want, rel=1e-12)
    assert M.chance_recall(np.eye(5, dtype=bool), 1) == pytest.approx(0.2)


def test_retrieval_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        M.retrieval_recall(np.array([[np.nan, 1.0]]), np.array([[True, False]]))
    with pytest.raises(ValueError, match="shape"):
        M.retrieval_recall(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="out of range"):
        M.retrieval_recall(np.zeros((1, 3)), [[3]])
    with pytest.raises(ValueError, match="ties"):
        M.retrieval_recall(np.zeros((1, 3)), [[0]], ties="random")
    with pytest.raises(ValueError, match="positive integers"):
        M.retrieval_recall(np.zeros((1, 3)), [[0]], ks=(0,))
    with pytest.raises(ValueError, match="duplicates"):
        M.phenotype_positives([["a"]], ["a", "a"])


# ---------------------------------------------------------------- zero-shot classification

def test_zero_shot_classifier_matches_loop():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(4, 3, 6))
    got = M.zero_shot_classifier(emb)
    for c in range(4):
        w = sum(t / np.linalg.norm(t) for t in emb[c]) / 3
        np.testing.assert_allclose(got[c], w / np.linalg.norm(w), rtol=1e-12)
    scaled = emb.copy()
    scaled[:, 1] *= 7.0  # one template with a larger norm must not dominate
    np.testing.assert_allclose(M.zero_shot_classifier(scaled), got, rtol=1e-12)
    with pytest.raises(ValueError):
        M.zero_shot_classifier(emb[0])


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(60, 7))
    labels = rng.integers(0, 7, size=60)
    labels[:7] = np.arange(7)  # every class present
    out = M.classification_metrics(logits, labels)
    assert out["top1"] == pytest.approx(top_k_accuracy_score(labels, logits, k=1, labels=np.arange(7)))
    assert out["top5"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(7)))
    assert out["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))


def test_classification_metrics_ties_absent_class_and_few_classes():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = np.array([0, 1, 0, 1])
    pess = M.classification_metrics(logits, labels)
    assert "top5" not in pess
    assert pess["top1"] == 0.5  # row 0 ties with class 1: a miss when pessimistic
    np.testing.assert_array_equal(pess["per_class_recall"], [0.5, 0.5, np.nan])
    assert pess["mean_per_class_recall"] == 0.5  # class 2 never appears: left out
    assert M.classification_metrics(logits, labels, ties="optimistic")["top1"] == 0.75
    with pytest.raises(ValueError, match="labels"):
        M.classification_metrics(logits, np.array([0, 1, 3, 0]))


# ---------------------------------------------------------------- multi-label matching

def _sk(gold, pred, average, labels=None):
    return precision_recall_fscore_support(gold, pred, average=average, labels=labels, zero_division=0)[:3]


@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_multilabel_matching_matches_sklearn(mode):
    rng = np.random.default_rng(7)
    scores = rng.random((30, 12))
    gold = rng.random((30, 12)) < 0.15
    gold[3] = False  # an image without gold phenotypes
    kw = dict(k=3) if mode == "topk" else dict(threshold=0.8)
    out = M.multilabel_matching(scores, gold, ks=(1, 5), **kw)
    pred = (scores >= np.sort(scores, 1)[:, -3][:, None]) if mode == "topk" else scores >= 0.8
    rows, cols = gold.any(1), np.flatnonzero(gold.any(0))
    np.testing.assert_allclose([out["micro_precision"], out["micro_recall"], out["micro_f1"]], _sk(gold, pred, "micro"))
    np.testing.assert_allclose([out["sample_precision"], out["sample_recall"], out["sample_f1"]],
                               _sk(gold[rows], pred[rows], "samples"))
    np.testing.assert_allclose([out["label_precision"], out["label_recall"], out["label_f1"]],
                               _sk(gold, pred, "macro", labels=cols))
    for k in (1, 5):
        hits, recalls = [], []
        for i in np.flatnonzero(rows):
            top = ref_order(scores[i], gold[i], "pessimistic")[:k]
            hits.append(any(gold[i, top]))
            recalls.append(gold[i, top].sum() / gold[i].sum())
        assert out[f"hit@{k}"] == pytest.approx(np.mean(hits))
        assert out[f"recall@{k}"] == pytest.approx(np.mean(recalls))
    assert out["n_without_gold"] == int((~rows).sum()) >= 1 and out["n_samples"] == int(rows.sum())


def test_multilabel_matching_hand_made_ties():
    scores = np.array([[0.5, 0.5, 0.5, 0.1], [0.9, 0.2, 0.2, 0.0]])
    gold = np.array([[False, False, True, False], [False, True, False, True]])
    pess = M.multilabel_matching(scores, gold, k=1, ks=(1, 2))
    # Row 0: gold tied with two negatives -> predicted set {0} (negatives first). Row 1: {0}.
    assert pess["micro_precision"] == 0.0 and pess["hit@2"] == 0.0
    opt = M.multilabel_matching(scores, gold, k=1, ks=(2,), ties="optimistic")
    assert opt["micro_precision"] == 0.5 and opt["sample_recall"] == 0.5
    # Row 1 top-2 under optimistic ties: {0, 1} (gold 1 wins the tie with 2) -> recall 1/2.
    assert opt["hit@2"] == 1.0 and opt["recall@2"] == pytest.approx((1 + 0.5) / 2)
    thr = M.multilabel_matching(scores, gold, threshold=0.5)
    assert thr["micro_precision"] == pytest.approx(1 / 4) and thr["micro_recall"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="exactly one"):
        M.multilabel_matching(scores, gold)
    with pytest.raises(ValueError, match="exactly one"):
        M.multilabel_matching(scores, gold, k=1, threshold=0.5)


# ---------------------------------------------------------------- MedMNIST

def medmnist_auc_reference(y_true, y_score, task):
    """MedMNIST's getAUC, written out with scikit-learn."""
    y_true, y_score = np.squeeze(y_true), np.squeeze(y_score)
    if task == "binary-class":
        return roc_auc_score(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
    if task == "multi-label, binary-class":
        return np.mean([roc_auc_score(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
    return np.mean([roc_auc_score((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])])


def medmnist_acc_reference(y_true, y_score, task, threshold=0.5):
    """MedMNIST's getACC, written out with scikit-learn."""
    y_true, y_score = np.squeeze(y_true), np.squeeze(y_score)
    if task == "multi-label, binary-class":
        return np.mean([accuracy_score(y_true[:, i], y_score[:, i] > threshold) for i in range(y_true.shape[1])])
    if task == "binary-class":
        return accuracy_score(y_true, (y_score[:, -1] if y_score.ndim == 2 else y_score) > threshold)
    return accuracy_score(y_true, np.argmax(y_score, axis=-1))


@pytest.mark.parametrize("task", ["binary-class", "multi-label, binary-class", "multi-class", "ordinal-regression"])
@pytest.mark.parametrize("discrete", [False, True])
def test_medmnist_metrics_match_definition(task, discrete):
    rng = np.random.default_rng(8)
    n = 40
    if task == "multi-label, binary-class":
        y = (rng.random((n, 4)) < 0.4).astype(int)
        y[:2] = [[0, 0, 0, 0], [1, 1, 1, 1]]
        s = rng.random((n, 4))
    elif task == "binary-class":
        y = rng.integers(0, 2, size=(n, 1))
        s = rng.random((n, 2))
    else:
        y = rng.integers(0, 5, size=(n, 1))
        y[:5, 0] = np.arange(5)
        s = rng.dirichlet(np.ones(5), size=n)
    if discrete:
        s = np.round(s * 4) / 4  # tied scores, and some exactly at the 0.5 threshold
    assert M.auc_medmnist(y, s, task) == pytest.approx(medmnist_auc_reference(y, s, task), rel=1e-12)
    assert M.acc_medmnist(y, s, task) == pytest.approx(medmnist_acc_reference(y, s, task), rel=1e-12)


def test_binary_auc_hand_made_and_single_class_raises():
    assert M.binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert M.binary_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="one class"):
        M.auc_medmnist(np.zeros((4, 1)), np.random.default_rng(0).random((4, 2)), "binary-class")
    assert M.acc_medmnist(np.array([[1], [0]]), np.array([[0.5, 0.5], [0.4, 0.6]]), "binary-class") == 0.0


# ---------------------------------------------------------------- hierarchy-aware

# Relation codes for 4 terms in the caller's convention: 0 same, 1 pred is child of gold, 2 pred is parent, 3 other.
CODES = np.array([
    [0, 2, 2, 3],
    [1, 0, 3, 3],
    [1, 3, 0, 2],
    [3, 3, 1, 0],
])


def test_hierarchical_hit_matrix_and_callable():
    pred = np.array([0, 1, 3, 2, 1])
    gold = [[0], [2], [2], [0, 3], []]
    out = M.hierarchical_hit(pred, gold, CODES, credit_codes=(1, 2))
    assert out["exact"] == 0.25  # only sample 0, out of 4 with gold
    assert out["hit"].tolist() == [True, False, True, True, False]  # 3 is child of 2; 2 is parent of 3
    assert out["hierarchical"] == 0.75 and out["n"] == 4 and out["n_without_gold"] == 1
    # Crediting only "pred is parent of gold": sample 2 (a child) loses its credit, sample 3 keeps it via gold 3.
    fn_out = M.hierarchical_hit(pred, gold, lambda p, g: CODES[p, g], credit_codes=[2])
    assert fn_out["hit"].tolist() == [True, False, False, True, False]


def test_grouped_accuracy_counts_examples_in_each_group():
    correct = np.array([True, False, True, True, False])
    groups = [["eye"], ["eye", "skin"], ["skin"], [], ["heart"]]
    out = M.grouped_accuracy(correct, groups)
    assert out["per_group"] == {"eye": 0.5, "skin": 0.5, "heart": 0.0}
    assert out["n"] == {"eye": 2, "skin": 2, "heart": 1}
    assert out["macro"] == pytest.approx(1 / 3) and out["overall"] == 0.6 and out["n_ungrouped"] == 1
    with pytest.raises(ValueError):
        M.grouped_accuracy(correct, groups[:2])
