"""Stage-1 text views: counts against the ontology, held-out synonyms, sampling, grain pipeline."""
import numpy as np
import pytest

from phenolip_jax.data import term_batches as tb
from phenolip_jax.data import text_views as tv


@pytest.fixture(scope="module")
def views(onto):
    return tv.build_text_views(onto, seed=0)


def _unique_synonyms(onto, i):
    seen, out = {onto.names[i].casefold()}, []
    for s in (*onto.exact_synonyms[i], *onto.other_synonyms[i]):
        if s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def test_every_term_under_root_has_its_name_first(onto, views):
    pool = onto.subtree("HP:0000118")
    assert sorted(views.views) == pool.tolist()
    assert len(pool) > 18000
    for i in pool:
        kinds = [k for _, k in views.views[int(i)]]
        assert views.views[int(i)][0] == (onto.names[i], "name")
        assert kinds.count("name") == 1
        assert kinds.count("definition") == int(bool(onto.definitions[i]))
        assert set(kinds) <= set(tv.VIEW_KINDS)


def test_synonym_views_are_synonyms_minus_held_out(onto, views):
    held = {}
    for text, term in views.held_out:
        assert term not in held, "at most one held-out synonym per term"
        held[term] = text
    for i in views.terms:
        synonyms = [t for t, k in views.views[int(i)] if k == "synonym"]
        expected = [s for s in _unique_synonyms(onto, int(i)) if s != held.get(int(i))]
        assert synonyms == expected
    assert sum(len(_unique_synonyms(onto, int(i))) for i in views.terms) > 20000


def test_held_out_synonyms_are_about_ten_percent_and_unseen(onto, views):
    candidates = [i for i in views.terms if _unique_synonyms(onto, int(i))]
    assert len(views.held_out) == round(0.1 * len(candidates))
    training = {t.casefold() for vs in views.views.values() for t, _ in vs}
    for text, term in views.held_out:
        assert text in _unique_synonyms(onto, term)
        assert text.casefold() not in training


def test_held_out_split_is_seeded(onto, views):
    again = tv.build_text_views(onto, seed=0)
    other = tv.build_text_views(onto, seed=1)
    assert again.held_out == views.held_out
    assert again.views == views.views
    assert set(other.held_out) != set(views.held_out)


def test_relation_views_of_a_known_pair(onto, views):
    child, parent = onto.index("HP:0001263"), onto.index("HP:0012758")  # GDD is a Neurodevelopmental delay
    assert parent in onto.parents(child).tolist()
    assert ("is a [SEP] Neurodevelopmental delay", "relation_parent") in views.views[child]
    assert ("Global developmental delay [SEP] is a", "relation_child") in views.views[parent]
    n_child = sum(k == "relation_child" for _, k in views.views[parent])
    assert n_child == len(onto.children(parent))


def test_custom_root_and_separator(onto):
    eye = tv.build_text_views(onto, root="HP:0000478", sep="<s>", holdout_fraction=0.0)
    root = onto.index("HP:0000478")
    assert sorted(eye.views) == onto.subtree("HP:0000478").tolist()
    assert eye.held_out == ()
    # The root's parent lies outside the pool: no view points there.
    assert not [t for t, k in eye.views[root] if k == "relation_parent"]
    texts = [t for vs in eye.views.values() for t, k in vs if k.startswith("relation")]
    assert texts and all("<s>" in t and "[SEP]" not in t for t in texts)


def test_sample_term_batch_shape_names_and_determinism(views):
    n, k = 16, 8
    texts, idx = tb.sample_term_batch(views, views.terms, np.random.default_rng(3), n, k)
    assert len(texts) == n * k and idx.shape == (n * k,) and idx.dtype == np.int32
    terms = idx.reshape(n, k)
    assert (terms == terms[:, :1]).all() and len(set(terms[:, 0].tolist())) == n
    for row, term in enumerate(terms[:, 0]):
        own = views.views[int(term)]
        chunk = texts[row * k:(row + 1) * k]
        assert chunk[0] == own[0][0]
        assert set(chunk) <= {t for t, _ in own}
        if len(own) >= k:  # enough views: no repeats
            assert len(set(chunk)) == k
    again = tb.sample_term_batch(views, views.terms, np.random.default_rng(3), n, k)
    assert again[0] == texts and (again[1] == idx).all()
    other = tb.sample_term_batch(views, views.terms, np.random.default_rng(4), n, k)
    assert other[0] != texts


def test_sample_views_repeats_only_when_short():
    rng = np.random.default_rng(0)
    short = (("Name", "name"), ("Syn", "synonym"))
    out = tb.sample_views(short, 5, rng)
    assert out[:2] == ["Name", "Syn"] and len(out) == 5 and set(out) == {"Name", "Syn"}
    long = (("N", "name"),) + tuple((f"s{j}", "synonym") for j in range(10))
    assert len(set(tb.sample_views(long, 8, rng))) == 8


def test_bad_arguments_raise(onto, views):
    with pytest.raises(ValueError):
        tb.sample_term_batch(views, views.terms[:3], np.random.default_rng(0), 4, 2)
    with pytest.raises(ValueError):
        tb.sample_views(views.views[int(views.terms[0])], 0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        tv.build_text_views(onto, holdout_fraction=1.0)
    with pytest.raises(ValueError):
        tb.stage1_dataset(views, num_terms=10, views_per_term=2, seed=0, term_pool=views.terms[:5])


def test_grain_pipeline_batches_and_checkpoints(views):
    n, k = 8, 4
    pool = views.terms[:20]  # 2 full batches per epoch, remainder dropped
    ds = tb.stage1_dataset(views, num_terms=n, views_per_term=k, seed=7, term_pool=pool)
    it = iter(ds.to_iter_dataset())
    epoch_terms = []
    for _ in range(3):
        batch = next(it)
        assert batch["texts"].shape == (n, k) and batch["term_idx"].shape == (n, k)
        texts, idx = tb.flatten_term_batch(batch)
        assert len(texts) == n * k and idx.dtype == np.int32
        terms = batch["term_idx"][:, 0]
        assert len(set(terms.tolist())) == n and set(terms.tolist()) <= set(pool.tolist())
        assert all(texts[r * k] == views.views[int(t)][0][0] for r, t in enumerate(terms))
        epoch_terms.append(terms)
    # The third batch opens epoch 2, which is reshuffled.
    assert not np.array_equal(epoch_terms[2], epoch_terms[0])
    state = it.get_state()
    expected = next(it)
    it.set_state(state)
    restored = next(it)
    assert (restored["texts"] == expected["texts"]).all()
    assert (restored["term_idx"] == expected["term_idx"]).all()


def test_sample_views_balances_kinds():
    # One synonym beside 40 relation views: kind balancing draws the synonym about half the time.
    term = [("name", "name"), ("syn", "synonym")] + [(f"child {i} [SEP] is a", "relation_child") for i in range(40)]
    rng = np.random.default_rng(0)
    hits = sum("syn" in tb.sample_views(term, 2, rng) for _ in range(2000))
    assert 850 < hits < 1150  # uniform over views would give ~49


# ------------------------------------------------------------------ layperson / abbreviation query sets
@pytest.fixture(scope="module")
def typed(onto):
    return tv.typed_synonyms(onto)


@pytest.fixture(scope="module")
def typed_views(onto, typed):
    return tv.build_text_views(onto, seed=0, typed_holdout_fraction=0.2, typed=typed)


def test_typed_synonyms_read_from_the_obo(onto, typed):
    assert set(typed) == {"layperson", "abbreviation"}
    assert sum(map(len, typed["layperson"].values())) > 8000  # HPO marks 8,098 synonyms layperson
    assert 500 < sum(map(len, typed["abbreviation"].values())) < 700  # ... and 580 abbreviation
    for kind in typed.values():
        for i, texts in kind.items():
            assert set(texts) <= set(onto.exact_synonyms[i]) | set(onto.other_synonyms[i])


def test_typed_query_sets_hold_out_their_type_and_keep_the_first_split(onto, typed, views, typed_views):
    assert typed_views.held_out == views.held_out  # the synonym split (and its figures) is unchanged
    sets = typed_views.query_sets
    assert set(sets) == {"synonym", "layperson", "abbreviation"}
    for kind in ("layperson", "abbreviation"):
        have = [i for i in typed[kind] if i in typed_views.views]
        assert abs(len(sets[kind]) - round(0.2 * len(have))) <= 0.02 * len(have)
        for text, term in sets[kind]:
            assert text in typed[kind][term]
    pairs = [p for s in sets.values() for p in s]
    assert len(set(pairs)) == len(pairs)  # the sets are disjoint


def test_held_out_texts_never_reach_training(typed_views, tok):
    # No training view contains a held-out text (ignoring case), and the real batch pipeline never emits one.
    held = {t.casefold() for s in typed_views.query_sets.values() for t, _ in s}
    training = {t.casefold() for vs in typed_views.views.values() for t, _ in vs}
    assert not held & training
    ds = tb.stage1_dataset(typed_views, num_terms=512, views_per_term=8, seed=0)
    emitted = set()
    for step in range(40):  # > one epoch of the terms that have held-out texts
        texts, _ = tb.flatten_term_batch(ds[step])
        emitted.update(t.casefold() for t in texts)
    assert len(emitted) > 50000
    assert not held & emitted


def test_bad_typed_fraction_raises(onto, typed):
    with pytest.raises(ValueError, match="typed_holdout_fraction"):
        tv.build_text_views(onto, typed_holdout_fraction=1.0, typed=typed)


def test_kind_weights_shift_the_draw():
    term = [("name", "name"), ("syn", "synonym"), ("def", "definition"), ("child [SEP] is a", "relation_child")]
    rng = np.random.default_rng(0)
    draws = [tb.sample_views(term, 2, rng, {"synonym": 6.0, "definition": 1.0, "relation_child": 1.0})[1]
             for _ in range(2000)]
    assert 1350 < draws.count("syn") < 1650  # 6/8 of the draws; balanced kinds would give ~1/3
    only = [tb.sample_views(term, 3, rng, {"synonym": 1.0, "definition": 0.0, "relation_child": 0.0})[1:]
            for _ in range(200)]
    assert all(o[0] == "syn" or o[1] == "syn" for o in only)  # zero-weight kinds only fill the second slot


def test_hard_negative_groups_bring_siblings(onto, views):
    related = tb.related_groups(onto, views.terms)
    some = [int(t) for t in views.terms[:200]]
    for t in some:
        sib = {int(c) for p in onto.parents(t) for c in onto.children(p)} - {t}
        if sib & set(views.terms.tolist()):
            assert set(related[t].tolist()) == sib & set(views.terms.tolist())
    n, k, g = 16, 2, 4
    ds = tb.stage1_dataset(views, num_terms=n, views_per_term=k, seed=0, group=g, related=related)
    batch = ds[0]
    assert batch["texts"].shape == (n // g, g * k)
    texts, idx = tb.flatten_term_batch(batch)
    assert len(texts) == n * k
    for row in batch["term_idx"]:
        seed, others = int(row[0]), row[k::k]
        assert all(int(o) in set(related[seed].tolist()) for o in others if len(related[seed]))
    with pytest.raises(ValueError, match="divide"):
        tb.stage1_dataset(views, num_terms=n, views_per_term=k, seed=0, group=3, related=related)


def test_held_out_queries_do_not_leak_after_normalising(typed_views):
    # Held-out texts equal no training text after normalising case, punctuation and spacing, and sit inside no
    # training view of their own term ("Low blood pressure" inside Hypotension's definition).
    assert tv.normalise("Low-blood  pressure.") == "low blood pressure"
    training = {tv.normalise(t) for vs in typed_views.views.values() for t, _ in vs}
    leaks = []
    for name, pairs in typed_views.query_sets.items():
        for text, term in pairs:
            query = tv.normalise(text)
            inside = any(f" {query} " in f" {tv.normalise(v)} " for v, _ in typed_views.views[term])
            if query in training or inside:
                leaks.append((name, text))
    assert not leaks, leaks[:5]


def test_validation_queries_are_carved_from_each_set(onto, typed, typed_views):
    split = tv.build_text_views(onto, seed=0, typed_holdout_fraction=0.2, typed=typed, val_fraction=0.25)
    sets = split.query_sets
    assert set(sets) == {"synonym", "layperson", "abbreviation", "val_synonym", "val_layperson", "val_abbreviation"}
    for name, pairs in typed_views.query_sets.items():
        test, val = sets[name], sets[f"val_{name}"]
        assert sorted(test + val) == sorted(pairs)  # the same held-out queries, now in two disjoint parts
        assert not set(test) & set(val)
        assert abs(len(val) - 0.25 * len(pairs)) <= 1
    assert split.views == typed_views.views  # training is unchanged
    with pytest.raises(ValueError, match="val_fraction"):
        tv.build_text_views(onto, val_fraction=1.0)


def test_family_groups_are_is_a_relatives_within_max_hops(onto, views):
    family = tb.family_groups(onto, views.terms, max_hops=2)
    pool = set(views.terms.tolist())
    for t in [int(t) for t in views.terms[:300]]:
        parents = {int(p) for p in onto.parents(t)}
        children = {int(c) for c in onto.children(t)}
        grand = {int(g) for p in parents for g in onto.parents(p)} | {int(g) for c in children
                                                                     for g in onto.children(c)}
        assert set(family[t].tolist()) == (parents | children | grand) & pool - {t}
