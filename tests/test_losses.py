"""Losses against loop-by-loop NumPy references, chunked == plain, sharded == single device."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from phenolip_jax import losses

RTOL, ATOL = 1e-5, 1e-6


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _soft_targets(rng, n, m=None):
    m = n if m is None else m
    t = rng.random((n, m)) * (rng.random((n, m)) > 0.6)
    if n == m:
        t = np.maximum(t, np.eye(n))
    return t.astype(np.float32)


# ---------------------------------------------------------------- NumPy references (plain loops)

def ref_direction(logits, targets, row_ok, col_ok, skip_self=False):
    """Mean over anchors with positive mass of CE(row, normalised targets) over allowed candidates."""
    losses_ = []
    for i in range(logits.shape[0]):
        if not row_ok[i]:
            continue
        cand = [j for j in range(logits.shape[1]) if col_ok[j] and not (skip_self and i == j)]
        mass = sum(targets[i, j] for j in cand)
        if mass <= 0:
            continue
        lse = math.log(sum(math.exp(logits[i, j]) for j in cand))
        losses_.append(-sum(targets[i, j] / mass * (logits[i, j] - lse) for j in cand))
    return float(np.mean(losses_)) if losses_ else 0.0


def ref_contrastive(a, b, scale, targets=None, valid=None):
    logits = scale * a.astype(np.float64) @ b.astype(np.float64).T
    n, m = logits.shape
    t = np.eye(n) if targets is None else np.asarray(targets, np.float64)
    va = np.ones(n, bool) if valid is None else valid
    vb = va if (valid is not None and n == m) else np.ones(m, bool)
    return 0.5 * (ref_direction(logits, t, va, vb) + ref_direction(logits.T, t.T, vb, va))


def ref_multi_positive(emb, weights, scale, valid=None):
    logits = scale * emb.astype(np.float64) @ emb.astype(np.float64).T
    ok = np.ones(len(emb), bool) if valid is None else valid
    return ref_direction(logits, np.asarray(weights, np.float64), ok, ok, skip_self=True)


def ref_sigmoid(a, b, scale, bias, labels=None):
    n, m = len(a), len(b)
    total = 0.0
    for i in range(n):
        for j in range(m):
            pos = (i == j) if labels is None else labels[i, j] > 0
            z = 1.0 if pos else -1.0
            x = z * (scale * float(np.dot(a[i].astype(np.float64), b[j])) + bias)
            total += -math.log(1.0 / (1.0 + math.exp(-x)))
    return total / n


def ref_kl(student, teacher, temp):
    out = []
    for s_row, t_row in zip(student.astype(np.float64), teacher.astype(np.float64)):
        pt = np.exp(t_row / temp - np.log(np.sum(np.exp(t_row / temp))))
        ls = s_row / temp - np.log(np.sum(np.exp(s_row / temp)))
        out.append(sum(p * (math.log(p) - l) for p, l in zip(pt, ls) if p > 0) * temp**2)
    return float(np.mean(out))


def ref_adasp(emb, labels, temp=0.04):
    """AdaSP per class c: soft hard-hard / hard-easy positives, adaptive mix, -log(pos / (pos + neg))."""
    x = emb.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T / temp
    classes = sorted({int(l) for l in labels if l >= 0})
    out = []
    for c in classes:
        members = [i for i in range(len(labels)) if labels[i] == c]
        others = [j for j in range(len(labels)) if labels[j] >= 0 and labels[j] != c]
        hh = -math.log(sum(math.exp(-s[i, j]) for i in members for j in members))
        he = math.log(sum(1.0 / sum(math.exp(-s[i, j]) for j in members) for i in members))
        neg = sum(math.exp(s[i, j]) for i in members for j in others)
        w_hh, w_he = hh * temp, he * temp
        wt = 0.0 if (w_hh < 0 or w_hh + w_he == 0) else 2 * w_hh * w_he / (w_hh + w_he)
        pos = math.exp(wt * hh + (1 - wt) * he)
        out.append(-math.log(pos / (pos + neg)))
    return float(np.mean(out))


# ---------------------------------------------------------------- softmax_contrastive

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_softmax_contrastive_matches_reference(seed, soft, padded):
    rng = np.random.default_rng(seed)
    a, b = _unit(rng, 9, 5), _unit(rng, 9, 5)
    t = _soft_targets(rng, 9) if soft else None
    valid = np.array([1] * 7 + [0] * 2, bool) if padded else None
    got = losses.softmax_contrastive(a, b, 7.0, t, valid)
    np.testing.assert_allclose(got, ref_contrastive(a, b, 7.0, t, valid), rtol=RTOL, atol=ATOL)


def test_softmax_contrastive_padding_equals_unpadded_batch():
    rng = np.random.default_rng(3)
    a, b = _unit(rng, 8, 4), _unit(rng, 8, 4)
    valid = np.array([1] * 5 + [0] * 3, bool)
    padded = losses.softmax_contrastive(a, b, 10.0, valid=valid)
    np.testing.assert_allclose(padded, losses.softmax_contrastive(a[:5], b[:5], 10.0), rtol=RTOL)


def test_softmax_contrastive_ties_and_rows_without_positive():
    rng = np.random.default_rng(4)
    a = _unit(rng, 6, 3)
    b = a.copy()
    b[3] = b[2]  # tied candidates: two identical columns
    t = np.eye(6, dtype=np.float32)
    t[1, 1] = 0.0  # anchor 1 has no positive in either direction: excluded, not counted as zero
    loss, m = losses.softmax_contrastive_with_metrics(a, b, 5.0, t)
    np.testing.assert_allclose(loss, ref_contrastive(a, b, 5.0, t), rtol=RTOL, atol=ATOL)
    assert int(m["n_rows_a2b"]) == 5 and int(m["n_rows_b2a"]) == 5


def test_softmax_contrastive_nonsquare_soft_targets():
    rng = np.random.default_rng(5)
    a, b = _unit(rng, 5, 4), _unit(rng, 7, 4)
    t = _soft_targets(rng, 5, 7)
    np.testing.assert_allclose(losses.softmax_contrastive(a, b, 3.0, t), ref_contrastive(a, b, 3.0, t),
                               rtol=RTOL, atol=ATOL)


def test_bad_shapes_raise():
    a, b = np.ones((4, 3), np.float32), np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="square"):
        losses.softmax_contrastive(a, b, 1.0)
    with pytest.raises(ValueError, match="targets shape"):
        losses.softmax_contrastive(a, b, 1.0, np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="square"):
        losses.chunked_softmax_contrastive(a, b, 1.0)
    with pytest.raises(ValueError, match="chunk"):
        losses.chunked_softmax_contrastive(a, a, 1.0, chunk=0)


def test_gradient_step_pulls_positive_pair_together():
    rng = np.random.default_rng(6)
    a, b = _unit(rng, 8, 6), _unit(rng, 8, 6)
    ga, gb = jax.grad(losses.softmax_contrastive, argnums=(0, 1))(a, b, 10.0)

    def cos(x, y):
        return np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    before = cos(a, b)
    after = cos(a - 0.05 * np.asarray(ga), b - 0.05 * np.asarray(gb))
    assert after[0] > before[0]
    assert after.mean() > before.mean()
    assert losses.softmax_contrastive(a - 0.05 * ga, b - 0.05 * gb, 10.0) < losses.softmax_contrastive(a, b, 10.0)


def test_bf16_inputs_give_finite_fp32_loss():
    rng = np.random.default_rng(7)
    a, b = _unit(rng, 16, 8), _unit(rng, 16, 8)
    ref = losses.softmax_contrastive(a, b, 20.0)
    for fn in (losses.softmax_contrastive, lambda x, y, s: losses.chunked_softmax_contrastive(x, y, s, chunk=5)):
        got = fn(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16), 20.0)
        assert got.dtype == jnp.float32 and np.isfinite(got)
        np.testing.assert_allclose(got, ref, rtol=2e-2)
    g = jax.grad(losses.softmax_contrastive)(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16), 20.0)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


# ---------------------------------------------------------------- chunked == plain

@pytest.mark.parametrize("chunk,soft,padded", [
    (3, False, False), (3, True, False), (3, False, True), (3, True, True),  # 3 does not divide 10
    (1, True, True), (5, False, True), (16, True, False),                   # degenerate, exact, larger
])
def test_chunked_equals_plain_value_and_gradient(chunk, soft, padded):
    rng = np.random.default_rng(chunk + 10 * soft + 100 * padded)
    a, b = _unit(rng, 10, 6), _unit(rng, 10, 6)
    t = _soft_targets(rng, 10) if soft else None
    valid = np.array([1] * 8 + [0] * 2, bool) if padded else None
    scale = np.float32(8.0)

    def plain(a, b, s):
        return losses.softmax_contrastive(a, b, s, t, valid)

    def chunked(a, b, s):
        return losses.chunked_softmax_contrastive(a, b, s, t, valid, chunk=chunk)

    np.testing.assert_allclose(chunked(a, b, scale), plain(a, b, scale), rtol=RTOL)
    g_plain = jax.grad(plain, argnums=(0, 1, 2))(a, b, scale)
    g_chunk = jax.jit(jax.grad(chunked, argnums=(0, 1, 2)))(a, b, scale)
    for gp, gc in zip(g_plain, g_chunk):
        np.testing.assert_allclose(gc, gp, rtol=RTOL, atol=1e-7)


def test_chunked_nonsquare_soft_targets_and_jit():
    rng = np.random.default_rng(11)
    a, b = _unit(rng, 6, 4), _unit(rng, 11, 4)
    t = _soft_targets(rng, 6, 11)
    plain = jax.value_and_grad(lambda a, b: losses.softmax_contrastive(a, b, 4.0, t), argnums=(0, 1))(a, b)
    chunk_fn = jax.jit(jax.value_and_grad(
        lambda a, b: losses.chunked_softmax_contrastive(a, b, 4.0, t, chunk=4), argnums=(0, 1)))
    value, grads = chunk_fn(a, b)
    np.testing.assert_allclose(value, plain[0], rtol=RTOL)
    for gp, gc in zip(plain[1], grads):
        np.testing.assert_allclose(gc, gp, rtol=RTOL, atol=1e-7)


# ---------------------------------------------------------------- other losses

@pytest.mark.parametrize("seed", [0, 1])
def test_multi_positive_infonce_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_terms, k = 3, 3
    emb = _unit(rng, n_terms * k + 1, 5)  # the last row is a term with a single view: no positive
    term = np.array([i // k for i in range(n_terms * k)] + [9])
    w = (term[:, None] == term[None, :]).astype(np.float32)
    w[0:3, 3:6] = w[3:6, 0:3] = 0.5  # term 1 is a parent of term 0: one hop
    loss, m = losses.multi_positive_infonce_with_metrics(emb, w, 6.0)
    np.testing.assert_allclose(loss, ref_multi_positive(emb, w, 6.0), rtol=RTOL, atol=ATOL)
    assert int(m["n_rows_without_positive"]) == 1 and int(m["n_rows"]) == n_terms * k
    valid = np.ones(len(emb), bool)
    valid[2] = False
    np.testing.assert_allclose(losses.multi_positive_infonce(emb, w, 6.0, valid),
                               ref_multi_positive(emb, w, 6.0, valid), rtol=RTOL, atol=ATOL)


def test_multi_positive_infonce_ignores_diagonal_weight():
    rng = np.random.default_rng(2)
    emb = _unit(rng, 6, 4)
    w = np.kron(np.eye(3), np.ones((2, 2))).astype(np.float32)
    w_no_diag = w * (1 - np.eye(6, dtype=np.float32))
    np.testing.assert_allclose(losses.multi_positive_infonce(emb, w, 5.0),
                               losses.multi_positive_infonce(emb, w_no_diag, 5.0), rtol=RTOL)


@pytest.mark.parametrize("with_labels", [False, True])
def test_sigmoid_loss_matches_reference(with_labels):
    rng = np.random.default_rng(8)
    a, b = _unit(rng, 7, 4), _unit(rng, 7, 4)
    labels = np.maximum(np.eye(7), rng.random((7, 7)) > 0.8).astype(np.float32) if with_labels else None
    got = losses.sigmoid_loss(a, b, 10.0, -10.0, labels)
    np.testing.assert_allclose(got, ref_sigmoid(a, b, 10.0, -10.0, labels), rtol=RTOL, atol=ATOL)


def test_sigmoid_loss_padding_equals_unpadded_batch():
    rng = np.random.default_rng(9)
    a, b = _unit(rng, 6, 4), _unit(rng, 6, 4)
    valid = np.array([1, 1, 1, 1, 0, 0], bool)
    np.testing.assert_allclose(losses.sigmoid_loss(a, b, 5.0, -2.0, valid=valid),
                               losses.sigmoid_loss(a[:4], b[:4], 5.0, -2.0), rtol=RTOL)


def test_knowledge_distillation_is_contrastive_without_teacher_gradient():
    rng = np.random.default_rng(10)
    t, k = _unit(rng, 6, 4), _unit(rng, 6, 4)
    np.testing.assert_allclose(losses.knowledge_distillation(t, k, 25.0), ref_contrastive(t, k, 25.0),
                               rtol=RTOL, atol=ATOL)
    g_k = jax.grad(losses.knowledge_distillation, argnums=1)(t, k, 25.0)
    assert np.all(np.asarray(g_k) == 0)
    assert np.any(np.asarray(jax.grad(losses.knowledge_distillation)(t, k, 25.0)) != 0)


def test_phenotype_structure_kl_matches_reference_and_is_zero_at_teacher():
    rng = np.random.default_rng(12)
    s, t = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(losses.phenotype_structure_kl(s, t, 2.0), ref_kl(s, t, 2.0), rtol=RTOL, atol=ATOL)
    assert abs(float(losses.phenotype_structure_kl(t, t, 2.0))) < 1e-6
    assert np.all(np.asarray(jax.grad(losses.phenotype_structure_kl, argnums=1)(s, t, 2.0)) == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adasp_matches_reference(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    emb = rng.normal(size=(12, 6)).astype(np.float32)
    emb[labels == 1] += 3 * rng.normal(size=6).astype(np.float32)  # one tight class: wt > 0 branch
    got = losses.adasp_loss(emb, labels, 0.04)
    np.testing.assert_allclose(got, ref_adasp(emb, labels, 0.04), rtol=1e-4)


def test_adasp_unsorted_unequal_classes_and_padding():
    rng = np.random.default_rng(3)
    labels = np.array([2, 0, 1, 0, 2, 2, 1, -1, 0, 0])
    emb = rng.normal(size=(10, 5)).astype(np.float32)
    got = losses.adasp_loss(emb, labels, 0.1)
    np.testing.assert_allclose(got, ref_adasp(emb, labels, 0.1), rtol=1e-4)
    perm = rng.permutation(10)
    np.testing.assert_allclose(losses.adasp_loss(emb[perm], labels[perm], 0.1), got, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(jax.grad(losses.adasp_loss)(emb, labels, 0.1))))


def test_adasp_prefers_clustered_embeddings():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 3)
    centres = np.eye(8)[:4]
    clustered = (centres[labels] + 0.05 * rng.normal(size=(12, 8))).astype(np.float32)
    scattered = rng.normal(size=(12, 8)).astype(np.float32)
    assert losses.adasp_loss(clustered, labels) < losses.adasp_loss(scattered, labels)


# ---------------------------------------------------------------- hierarchical_soft_targets

# Toy DAG: 0 root; 1, 2 children of 0; 3, 4 children of 1; 5 child of 2; 6 child of 3 and of 5; 7 child of 4.
PARENTS = {0: [], 1: [0], 2: [0], 3: [1], 4: [1], 5: [2], 6: [3, 5], 7: [4]}


def ancestors_with_hops(term, max_hops):
    """Breadth-first ancestors-or-self with the smallest hop count."""
    hops, frontier = {term: 0}, [term]
    for h in range(1, max_hops + 1):
        frontier = [p for t in frontier for p in PARENTS[t] if p not in hops]
        for p in frontier:
            hops.setdefault(p, h)
    return hops


def make_tables(examples, m=3, a=8, o=2, max_hops=3):
    """examples: list of (terms, organs) -> padded terms, anc, hops, organs int32 arrays."""
    n = len(examples)
    terms, anc, hops, organs = (np.full(s, -1, np.int32) for s in ((n, m), (n, m, a), (n, m, a), (n, o)))
    for i, (ts, os_) in enumerate(examples):
        for j, t in enumerate(ts):
            terms[i, j] = t
            for k, (anc_t, h) in enumerate(sorted(ancestors_with_hops(t, max_hops).items())):
                anc[i, j, k], hops[i, j, k] = anc_t, h
        organs[i, : len(os_)] = os_
    return terms, anc, hops, organs


def ref_relation(ex_a, ex_b, decay, organ_w, max_hops):
    """The documented rule, term pair by term pair; organ systems are per example."""
    (ta, oa), (tb, ob) = ex_a, ex_b
    best = 0.0
    for x in ta:
        for y in tb:
            hx, hy = ancestors_with_hops(x, max_hops), ancestors_with_hops(y, max_hops)
            cand = [h for h in (hx.get(y), hy.get(x)) if h is not None]
            if x == y:
                pair = 1.0
            elif cand:
                pair = float(np.float32(decay ** min(cand)))
            else:
                pair = organ_w if set(oa) & set(ob) else 0.0
            best = max(best, pair)
    return best


def _scores(ex_a, ex_b, decay=0.5, organ_w=0.1, max_hops=3, row_chunk=None):
    return np.asarray(losses.hierarchical_soft_targets(
        *make_tables(ex_a, max_hops=max_hops), *make_tables(ex_b, max_hops=max_hops),
        hop_decay=decay, organ_weight=organ_w, row_chunk=row_chunk))


def test_hierarchical_soft_targets_hand_made():
    ex = [
        ([6], [1]),     # 0: deep term with two parents
        ([3], [1]),     # 1: parent of 6
        ([1], [2]),     # 2: grandparent of 6
        ([0], []),      # 3: root, 3 hops from 6 either way
        ([4], [1]),     # 4: sibling of 3, cousin of 6, same organ as 0 and 1
        ([7, 5], [3]),  # 5: two terms; 5 is the other parent of 6
        ([], [1]),      # 6: no terms: 0 to everything, despite the shared organ
        ([2], [4]),     # 7: unrelated to 4 and 7, no shared organ
    ]
    s = _scores(ex, ex)
    assert s.shape == (8, 8) and s.dtype == np.float32
    assert s[0, 0] == 1.0 and s[0, 1] == 0.5 and s[1, 0] == 0.5
    assert s[0, 2] == 0.25 and s[0, 3] == 0.125 and s[3, 0] == 0.125
    assert s[1, 4] == pytest.approx(0.1)  # siblings: organ fallback only
    assert s[0, 5] == 0.5  # max over the second example's terms (5 is a parent of 6)
    assert np.all(s[6] == 0) and np.all(s[:, 6] == 0)
    assert s[4, 7] == 0.0 and s[7, 4] == 0.0  # 4 (under 1) and 2: no relation, no shared organ
    assert np.all(s == s.T)
    # Ancestors truncated at 2 hops: the root is no longer related to 6.
    assert _scores(ex, ex, max_hops=2)[0, 3] == 0.0
    # A related pair keeps its hop weight even below organ_weight (the organ rule is for unrelated pairs);
    # another, unrelated term pair of the same examples does get the organ weight.
    both = [([6], [1]), ([0], [1]), ([6, 7], [1]), ([2], [1])]
    s2 = _scores(both, both, organ_w=0.3)
    assert s2[0, 1] == 0.125 and s2[0, 3] == 0.25  # 6 -> 5 -> 2
    assert s2[2, 3] == pytest.approx(0.3)  # (7, 2) is unrelated and the examples share organ 1


@pytest.mark.parametrize("row_chunk", [None, 3])
def test_hierarchical_soft_targets_random_against_rule(row_chunk):
    rng = np.random.default_rng(0)
    def sample(n):
        return [(list(rng.choice(8, size=rng.integers(0, 4), replace=False)),
                 list(rng.choice(5, size=rng.integers(0, 3), replace=False))) for _ in range(n)]
    ex_a, ex_b = sample(7), sample(5)
    got = _scores(ex_a, ex_b, decay=0.6, organ_w=0.2, max_hops=2, row_chunk=row_chunk)
    want = np.array([[ref_relation(x, y, 0.6, 0.2, 2) for y in ex_b] for x in ex_a])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hierarchical_soft_targets_match_host_relations_on_real_hpo(tmp_path):
    from phenolip_jax import ontology as O

    hpo = O.load_ontology(cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    max_hops, decay = 3, 0.7
    # Terms drawn from a few terms and their ancestors, so that same, related and unrelated pairs all occur.
    seeds = rng.choice(len(hpo), size=4, replace=False)
    anc_all, _ = O.ancestor_table(hpo, np.arange(len(hpo)), max_hops)
    pool = np.unique(np.concatenate([anc_all[seeds].ravel(), seeds]))
    pool = pool[pool >= 0]
    sets = np.full((24, 3), -1, np.int64)
    for i in range(24):
        n = 1 if i < 12 else int(rng.integers(0, 4))  # single-term, then multi-term and empty examples
        sets[i, :n] = rng.choice(pool, size=n, replace=False)

    def tables(rows):
        m = rows.shape[1]
        anc_t, hops_t = O.ancestor_table(hpo, np.maximum(rows.ravel(), 0), max_hops)
        a = anc_t.shape[1]
        anc_t = np.where((rows >= 0).reshape(-1, 1), anc_t, -1).reshape(len(rows), m, a)
        hops_t = np.where((rows >= 0).reshape(-1, 1), hops_t, -1).reshape(len(rows), m, a)
        org = O.organ_table(hpo, np.maximum(rows.ravel(), 0)).reshape(len(rows), -1)
        org = np.where(np.repeat(rows >= 0, org.shape[1] // m, axis=1), org, -1)  # union over valid terms
        return rows.astype(np.int32), anc_t, hops_t, org

    t = tables(sets)
    for organ_w in (0.0, 0.2):
        got = np.asarray(losses.hierarchical_soft_targets(*t, *t, hop_decay=decay, organ_weight=organ_w))
        want = O.set_relation_scores(hpo, sets, sets, max_hops=max_hops, hop_decay=decay, organ_weight=organ_w)
        assert got.max() == 1.0 and np.any((got > 0) & (got < 1))
        if organ_w == 0:
            np.testing.assert_array_equal(got, want)  # bit for bit, multi-term examples included
        else:
            # Single-term examples agree exactly; with several terms the device side reads organ systems per
            # example, so an unrelated pair may get organ_weight where the host's per-term check does not.
            np.testing.assert_array_equal(got[:12, :12], want[:12, :12])
            assert np.all(got >= want)


def test_hierarchical_soft_targets_reject_a_hop_decay_above_one():
    # Examples are weighed by their fewest-hop term pair, which is their best pair only when hop_decay <= 1.
    with pytest.raises(ValueError, match="hop_decay"):
        _scores([([6], [1])], [([3], [1])], decay=1.5)


def test_hierarchical_targets_feed_the_contrastive_loss():
    rng = np.random.default_rng(1)
    ex = [([6], [1]), ([3], [1]), ([2], []), ([6], [0])]
    s = jnp.asarray(_scores(ex, ex))
    targets = jnp.maximum(s, jnp.eye(4))
    a, b = _unit(rng, 4, 3), _unit(rng, 4, 3)
    np.testing.assert_allclose(losses.softmax_contrastive(a, b, 5.0, targets),
                               ref_contrastive(a, b, 5.0, np.asarray(targets)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk,padded", [(3, False), (4, True)])  # 3 does not divide 10
def test_chunked_block_targets_equal_plain_with_dense_hierarchical_targets(chunk, padded):
    """Hierarchical targets built per block from the HPO tables == the dense [B, B] targets (value, grads)."""
    rng = np.random.default_rng(chunk)
    terms = [6, 3, 2, 6, 5, 4, 1, 3, 2, 0]
    ex = [([t], [int(rng.integers(0, 2))]) for t in terms]
    tables = tuple(jnp.asarray(x) for x in make_tables(ex))
    ids = jnp.arange(len(ex))
    fn = functools.partial(losses.hierarchical_pair_targets, hop_decay=0.5, organ_weight=0.1)
    dense = fn(tables, tables, ids, ids)
    np.testing.assert_allclose(dense, np.maximum(_scores(ex, ex), np.eye(len(ex))))
    block = losses.BlockTargets(fn, tables, tables)
    a, b = _unit(rng, 10, 6), _unit(rng, 10, 6)
    valid = np.array([1] * 8 + [0] * 2, bool) if padded else None
    plain = jax.value_and_grad(lambda a, b, s: losses.softmax_contrastive(a, b, s, dense, valid), argnums=(0, 1, 2))
    chunked = jax.jit(jax.value_and_grad(
        lambda a, b, s: losses.chunked_softmax_contrastive(a, b, s, block, valid, chunk=chunk), argnums=(0, 1, 2)))
    (v0, g0), (v1, g1) = plain(a, b, 6.0), chunked(a, b, 6.0)
    np.testing.assert_allclose(v1, v0, rtol=RTOL)
    for gp, gc in zip(g0, g1):
        np.testing.assert_allclose(gc, gp, rtol=RTOL, atol=1e-7)
    # Nothing of the program is [B, B]: the targets exist one [B, chunk] block at a time.
    program = str(jax.make_jaxpr(chunked)(a, b, 6.0))
    assert "[10,10]" not in program and f"[10,{chunk}]" in program


# ---------------------------------------------------------------- sharded == single device

def test_losses_sharded_over_8_devices_equal_single_device():
    assert jax.device_count() >= 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(13)
    a, b = _unit(rng, 16, 8), _unit(rng, 16, 8)
    t = _soft_targets(rng, 16)
    labels = np.repeat(np.arange(4), 4)
    fns = {
        "contrastive": lambda a, b, t: losses.softmax_contrastive(a, b, 10.0, t),
        "chunked": lambda a, b, t: losses.chunked_softmax_contrastive(a, b, 10.0, t, chunk=4),
        "sigmoid": lambda a, b, t: losses.sigmoid_loss(a, b, 10.0, -5.0),
        "multi_positive": lambda a, b, t: losses.multi_positive_infonce(a, t, 10.0),
        "adasp": lambda a, b, t: losses.adasp_loss(a, labels),
    }
    a_s, b_s, t_s = (jax.device_put(x, rows) for x in (a, b, t))
    assert len(a_s.sharding.device_set) == 8
    for name, fn in fns.items():
        single = fn(a, b, t)
        sharded = jax.jit(fn)(a_s, b_s, t_s)
        np.testing.assert_allclose(sharded, single, rtol=RTOL, err_msg=name)
    g_single = jax.grad(fns["chunked"])(a, b, t)
    g_sharded = jax.jit(jax.grad(fns["chunked"]))(a_s, b_s, t_s)
    np.testing.assert_allclose(g_sharded, g_single, rtol=RTOL, atol=1e-7)


def test_multi_positive_infonce_gradient_pulls_views_of_a_term_together():
    # Stage 1: 4 terms x 2 views; a gradient step raises the cosine between the two views of each term.
    rng = np.random.default_rng(21)
    emb = _unit(rng, 8, 6)
    terms = np.repeat(np.arange(4), 2)
    w = (terms[:, None] == terms[None, :]).astype(np.float32)
    g = jax.grad(losses.multi_positive_infonce)(emb, w, 10.0)
    moved = emb - 0.05 * np.asarray(g)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    pair_cos = lambda e: np.sum(e[0::2] * e[1::2], axis=1)  # noqa: E731
    assert np.all(pair_cos(moved) > pair_cos(emb))
    assert losses.multi_positive_infonce(moved, w, 10.0) < losses.multi_positive_infonce(emb, w, 10.0)
