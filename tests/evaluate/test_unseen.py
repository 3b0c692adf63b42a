"""Seen / unseen zero-shot scores against a loop-by-loop NumPy reference, and the ontology relation matrix."""
import numpy as np
import pytest

from phenolip_jax.evaluate import unseen
from phenolip_jax.ontology import load_ontology


@pytest.fixture(scope="module")
def onto():
    return load_ontology()


def _reference(sim, pos, seen, related, k):
    """Plain loops: rank each image's candidates, pessimistic ties (a tie with the gold counts as ahead)."""
    def hit(row, gold, cands, cutoff):
        best = max(row[c] for c in cands if c in gold)
        ahead = sum(1 for c in cands if c not in gold and row[c] >= best)
        return ahead < cutoff

    out = {}
    for group in ("seen", "unseen"):
        rows = [i for i in range(len(sim)) if pos[i].any() and (pos[i] & ~seen).any() == (group == "unseen")]
        cands = [c for c in range(sim.shape[1]) if seen[c] == (group == "seen")]
        everything = list(range(sim.shape[1]))
        gold = [set(np.flatnonzero(pos[i])) for i in rows]
        own = [(i, g & set(cands)) for i, g in zip(rows, gold) if g & set(cands)]
        out[f"zs_{group}_top1"] = np.mean([hit(sim[i], g, cands, 1) for i, g in own])
        out[f"zs_{group}_r@{k}"] = np.mean([hit(sim[i], g, cands, k) for i, g in own])
        out[f"zs_{group}_all_top1"] = np.mean([hit(sim[i], g, everything, 1) for i, g in zip(rows, gold)])
        credited = [g | {c for c in everything for t in g if related[t, c]} for g in gold]
        out[f"zs_{group}_hier_top1"] = np.mean([hit(sim[i], g, everything, 1) for i, g in zip(rows, credited)])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    n, c = 40, 25
    sim = rng.integers(0, 6, (n, c)).astype(float)  # small integers: plenty of ties
    seen = rng.random(c) < 0.7
    pos = np.zeros((n, c), bool)
    for i in range(n):
        pool = np.flatnonzero(seen) if i % 3 else np.flatnonzero(~seen)
        pos[i, rng.choice(pool, size=1 + (i % 4 == 1))] = True
        if i % 7 == 0:  # an image with a seen and an unseen phenotype is an unseen image
            pos[i, rng.choice(np.flatnonzero(seen))] = True
    related = rng.random((c, c)) < 0.1
    related = related | related.T
    np.fill_diagonal(related, False)
    got = unseen.unseen_zero_shot(sim, pos, seen, related, ks=(10,))
    want = _reference(sim, pos, seen, related, 10)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["zs_unseen_images"] == sum((pos[i] & ~seen).any() for i in range(n))
    assert got["zs_unseen_phenotypes"] == (~seen).sum()


def test_perfect_and_no_unseen():
    emb = np.eye(6)
    pos = np.eye(6, dtype=bool)
    seen = np.array([True] * 4 + [False] * 2)
    got = unseen.unseen_zero_shot(emb @ emb.T, pos, seen, np.zeros((6, 6), bool))
    assert got["zs_seen_top1"] == got["zs_unseen_top1"] == got["zs_unseen_hier_top1"] == 1.0
    assert got["zs_unseen_chance_top1"] == 0.5 and got["zs_seen_chance_top1"] == 0.25
    only_seen = unseen.unseen_zero_shot(emb @ emb.T, pos, np.ones(6, bool), np.zeros((6, 6), bool))
    assert only_seen["zs_unseen_images"] == 0 and "zs_unseen_top1" not in only_seen
    with pytest.raises(ValueError, match="shapes"):
        unseen.unseen_zero_shot(emb, pos[:3], seen, np.zeros((6, 6), bool))


def test_rows_sharing_an_image_are_one_image():
    # Two captions of image "a" (phenotypes 0 and 1): one image whose gold is {0, 1}.
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    phen = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    got = unseen.unseen_report(img, ["a", "a", "b"], phen, [[0], [1], [2]], np.array([True, True, False]),
                               np.zeros((3, 3), bool))
    assert got["zs_seen_images"] == 1 and got["zs_unseen_images"] == 1
    assert got["zs_seen_top1"] == 1.0  # image a's best candidate (1) is one of its two gold terms


def test_related_phenotypes_is_parent_child(onto):
    child = onto.index("HP:0000505")  # visual impairment
    parent = int(onto.parents(child)[0])
    other = onto.index("HP:0001631")  # atrial septal defect: unrelated
    ids = [onto.ids[child], onto.ids[parent], onto.ids[other]]
    rel = unseen.related_phenotypes(onto, ids, max_hops=1)
    assert rel[0, 1] and rel[1, 0] and not rel[0, 0] and not rel[0, 2] and not rel[2, 1]


def test_unseen_scores_come_with_chance_and_the_seen_relative_rule():
    # 4 phenotypes: 0 and 1 seen; 2 (unseen) is a child of 0; 3 (unseen) has no relative.
    seen = np.array([True, True, False, False])
    related = np.zeros((4, 4), bool)
    related[0, 2] = related[2, 0] = True
    pos = np.zeros((4, 4), bool)
    pos[0, 0] = pos[1, 1] = pos[2, 2] = pos[3, 3] = True
    sim = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0.5, 0], [0, 0, 0, 1.0]])
    got = unseen.unseen_zero_shot(sim, pos, seen, related, ks=(1,))
    # The rule "name a seen relative" earns hierarchy-aware credit on image 2 (parent 0) but not on image 3.
    assert got["zs_unseen_parent_rule_hier_top1"] == 0.5
    assert got["zs_unseen_hier_top1"] == 1.0  # image 2's top-1 is its parent, image 3's its gold
    assert got["zs_unseen_chance_r@1"] == 0.5  # 1 gold among 2 unseen candidates
    assert got["zs_unseen_all_chance_top1"] == 0.25
    assert got["zs_unseen_hier_chance_top1"] == pytest.approx((2 / 4 + 1 / 4) / 2)  # image 2: gold + parent
    assert "zs_seen_parent_rule_hier_top1" not in got
    lines = "\n".join(unseen.markdown(got))
    assert "seen-relative rule" in lines and "(25.00)" in lines


def test_ablation_table_shows_chance_and_the_rule_under_the_arms():
    from phenolip_jax.tasks import ablation_tables

    runs = {"clip": [{"zs_unseen_hier_top1": 0.9, "zs_unseen_hier_chance_top1": 0.02,
                      "zs_unseen_parent_rule_hier_top1": 1.0, "zs_seen_top1": 0.5, "zs_seen_chance_top1": 0.01}]}
    refs = ablation_tables.reference_rows(runs)
    assert refs["(seen-relative rule)"]["zs_unseen_hier_top1"]["mean"] == 1.0
    assert refs["(chance)"]["zs_seen_top1"]["mean"] == 0.01
    table = ablation_tables.markdown_table({**ablation_tables.summarise(runs), **refs})
    assert "| (seen-relative rule) |" in table and "100.0 ± 0.0" in table
