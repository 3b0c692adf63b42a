"""Relation codes/scores by hand on the toy ontology, and host/device agreement on the real one."""
from __future__ import annotations

import numpy as np
import pytest

from phenolip_jax.ontology import (
    Relation,
    ancestor_table,
    hop_weights,
    organ_table,
    relation_codes,
    relation_scores,
    set_relation_scores,
)

S, A, D, O, U = (Relation.SAME, Relation.ANCESTOR, Relation.DESCENDANT, Relation.SAME_ORGAN_SYSTEM,
                 Relation.UNRELATED)


@pytest.fixture
def ab(T):
    """Rows: 0301 (diamond child), 0300 (diamond), 0102 (A two); columns: a mix of relatives and strangers."""
    a = [T[k] for k in ["0301", "0300", "0102"]]
    b = [T[k] for k in ["0301", "0101", "0100", "0201", "0102", "0005"]]
    return np.array(a), np.array(b)


def test_relation_codes_by_hand(toy, ab):
    a, b = ab
    codes = relation_codes(toy, a, b, max_hops=2)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, [
        [S, A, O, A, O, U],  # 0100 is 3 hops above 0301: beyond max_hops, so only the shared organ
        [D, A, A, A, O, U],
        [O, O, A, U, S, U],  # 0102 and 0201 sit under different organ systems
    ])
    codes3 = relation_codes(toy, a, b, max_hops=3)
    assert codes3[0, 2] == A
    np.testing.assert_array_equal(relation_codes(toy, a, b, max_hops=0), [  # only SAME survives
        [S, O, O, O, O, U],
        [O, O, O, O, O, U],
        [O, O, O, U, S, U],
    ])


def test_relation_scores_by_hand(toy, ab):
    a, b = ab
    scores = relation_scores(toy, a, b, max_hops=2, hop_decay=0.5, organ_weight=0.1)
    assert scores.dtype == np.float32
    o = np.float32(0.1)
    np.testing.assert_array_equal(scores, np.array([
        [1, .25, o, .25, o, 0],
        [.5, .5, .25, .5, o, 0],
        [o, o, .5, 0, 1, 0],
    ], dtype=np.float32))
    np.testing.assert_array_equal(relation_scores(toy, a, b, max_hops=3)[0, 2], np.float32(.125))
    assert relation_scores(toy, a, b).max() == 1 and relation_scores(toy, a, b)[2, 0] == 0  # organ_weight 0


def test_ancestor_and_organ_tables_by_hand(toy, T):
    idx = np.array([T["0301"], T["0102"], T["0001"]])
    anc, hops = ancestor_table(toy, idx, max_hops=2)
    assert anc.dtype == hops.dtype == np.int32
    np.testing.assert_array_equal(anc, [[T["0301"], T["0300"], T["0101"], T["0201"]],
                                        [T["0102"], T["0100"], T["0118"], -1],
                                        [T["0001"], -1, -1, -1]])
    np.testing.assert_array_equal(hops, [[0, 1, 2, 2], [0, 1, 2, -1], [0, -1, -1, -1]])
    anc2, hops2 = ancestor_table(toy, idx, max_hops=2, width=2)  # truncation keeps the nearest
    np.testing.assert_array_equal(anc2, anc[:, :2])
    np.testing.assert_array_equal(hops2, hops[:, :2])
    anc6, _ = ancestor_table(toy, idx, max_hops=2, width=6)
    assert anc6.shape == (3, 6) and (anc6[:, 4:] == -1).all()
    np.testing.assert_array_equal(organ_table(toy, idx), [[T["0100"], T["0200"]], [T["0100"], -1], [-1, -1]])
    assert organ_table(toy, [T["0001"]]).tolist() == [[-1]]  # width at least 1
    assert organ_table(toy, idx, width=1).tolist() == [[T["0100"]], [T["0100"]], [-1]]


def test_set_relation_scores_by_hand(toy, T):
    a_sets = np.array([[T["0301"], T["0005"]], [-1, -1], [T["0102"], -1]])
    b_sets = np.array([[T["0100"], -1, -1], [T["0005"], T["0201"], -1], [-1, -1, -1]])
    scores = set_relation_scores(toy, a_sets, b_sets, max_hops=2, hop_decay=0.5, organ_weight=0.1)
    np.testing.assert_array_equal(scores, np.array([[0.1, 1, 0], [0, 0, 0], [0.5, 0, 0]], dtype=np.float32))
    # An empty set is not a positive of itself; a non-empty set is.
    np.testing.assert_array_equal(np.diag(set_relation_scores(toy, a_sets, a_sets)), [1, 0, 1])
    assert set_relation_scores(toy, a_sets[:0], b_sets).shape == (0, 3)


def test_bad_inputs(toy):
    with pytest.raises(IndexError):
        relation_codes(toy, [0, len(toy)], [0])
    with pytest.raises(IndexError):
        relation_scores(toy, [-1], [0])  # -1 is padding only in the set/table functions
    with pytest.raises(IndexError):
        set_relation_scores(toy, [[-2]], [[0]])
    with pytest.raises(ValueError):
        relation_codes(toy, [[0]], [0])
    with pytest.raises(ValueError):
        relation_scores(toy, [0], [0], hop_decay=1.5)
    with pytest.raises(ValueError):
        relation_scores(toy, [0], [0], organ_weight=-0.1)
    with pytest.raises(ValueError):
        ancestor_table(toy, [0], max_hops=-1)
    with pytest.raises(ValueError):
        ancestor_table(toy, [0], max_hops=2, width=0)


def device_rule_scores(a, b, anc_a, hops_a, org_a, anc_b, hops_b, org_b, weights, organ_weight):
    """The loss engineer's on-device rule, in NumPy, from the padded tables only."""
    hit_up = anc_a[:, None, :] == b[None, :, None]  # b in a's table
    up = np.where(hit_up, hops_a[:, None, :], 10**6).min(-1)
    hit_down = anc_b[:, None, :] == a[None, :, None]  # a in b's table, as [b, a, A]
    down = np.where(hit_down, hops_b[:, None, :], 10**6).min(-1).T
    organ = ((org_a[:, None, :, None] == org_b[None, :, None, :]) & (org_a[:, None, :, None] >= 0)).any((-1, -2))
    max_h = len(weights) - 1
    return np.where(up <= max_h, weights[np.minimum(up, max_h)],
                    np.where(down <= max_h, weights[np.minimum(down, max_h)],
                             np.where(organ, np.float32(organ_weight), np.float32(0))))


@pytest.mark.parametrize("max_hops,hop_decay,organ_weight", [(2, 0.5, 0.0), (1, 0.7, 0.3), (4, 0.9, 0.05),
                                                             (0, 0.5, 0.2)])
def test_scores_match_device_rule_on_real_hpo(hpo, max_hops, hop_decay, organ_weight):
    rng = np.random.default_rng(max_hops)
    # Mix random terms with a few families so every relation actually occurs.
    seeds = rng.choice(len(hpo), 40, replace=False)
    family = np.concatenate([hpo.ancestors(s)[:3] for s in seeds[:10]] + [hpo.children(s)[:3] for s in seeds[:10]])
    a = np.concatenate([seeds, family]).astype(np.int64)
    b = np.concatenate([rng.permutation(a)[:60], rng.choice(len(hpo), 20)])
    expected = relation_scores(hpo, a, b, max_hops, hop_decay, organ_weight)
    anc_a, hops_a = ancestor_table(hpo, a, max_hops)
    anc_b, hops_b = ancestor_table(hpo, b, max_hops)
    got = device_rule_scores(a, b, anc_a, hops_a, organ_table(hpo, a), anc_b, hops_b, organ_table(hpo, b),
                             hop_weights(max_hops, hop_decay), organ_weight)
    np.testing.assert_array_equal(got.astype(np.float32), expected)
    codes = relation_codes(hpo, a, b, max_hops)
    for rel in (Relation.SAME, Relation.ANCESTOR, Relation.DESCENDANT, Relation.UNRELATED):
        assert (codes == rel).any() or (max_hops == 0 and rel != Relation.SAME and rel != Relation.UNRELATED)
    assert ((codes == Relation.SAME) == (a[:, None] == b[None, :])).all()
    # Descendant is ancestor seen from the other side.
    flipped = relation_codes(hpo, b, a, max_hops).T
    np.testing.assert_array_equal(codes == Relation.ANCESTOR, flipped == Relation.DESCENDANT)


def test_ancestor_table_agrees_with_closure(hpo):
    idx = np.arange(0, len(hpo), 97)
    anc, hops = ancestor_table(hpo, idx, max_hops=3)
    for row, i in enumerate(idx):
        valid = anc[row] >= 0
        assert anc[row, 0] == i and hops[row, 0] == 0
        assert np.all(np.diff(hops[row, valid]) >= 0)  # nearest first
        full = dict(zip(hpo.ancestors(i).tolist(), hpo.ancestor_hops(i).tolist()))
        assert {a: h for a, h in full.items() if h <= 3} == dict(zip(anc[row, 1:][valid[1:]].tolist(),
                                                                     hops[row, 1:][valid[1:]].tolist()))
