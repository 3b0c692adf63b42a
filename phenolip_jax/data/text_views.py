"""Stage-1 text source: per-term text views from the ontology, held-out synonyms, and N-terms x K-views batches.

Views of one term (KAD / KEP style): its name, each synonym, its definition, and relation views. For an
is-a edge child -> parent, the text "{child name} [SEP] is a" is a view of the parent (kind
'relation_child': made from a child) and "is a [SEP] {parent name}" is a view of the child (kind
'relation_parent': made from a parent). The name is always a term's first view. Nothing here tokenises.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Mapping, Sequence

import grain
import numpy as np

from phenolip_jax.data import mention_views
from phenolip_jax.ontology import Ontology, default_obo_path, load_ontology
from phenolip_jax.ontology.parse import read_pronto

VIEW_KINDS = ("name", "synonym", "definition", "relation_child", "relation_parent")
SYNONYM_TYPES = ("layperson", "abbreviation")  # HPO synonym types held out as their own query sets
DEFAULT_ROOT = "HP:0000118"  # Phenotypic abnormality

View = tuple[str, str]  # (text, kind)


@dataclasses.dataclass(frozen=True)
class TermViews:
    """Training views per term index (name first) and the held-out (synonym text, term index) pairs."""

    views: Mapping[int, tuple[View, ...]]
    held_out: tuple[tuple[str, int], ...]
    root: str
    sep: str
    held_out_typed: Mapping[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)
    # Validation queries, held out like the rest but kept apart: levers are chosen on these, 'val_<set>'.
    validation: Mapping[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)

    @property
    def query_sets(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Every held-out query set: 'synonym' (any synonym), one per held-out synonym type, then 'val_*'."""
        return {"synonym": self.held_out, **self.held_out_typed,
                **{f"val_{name}": pairs for name, pairs in self.validation.items()}}

    @property
    def terms(self) -> np.ndarray:
        """The term indices that have views (the root and its descendants), sorted, int32."""
        return np.array(sorted(self.views), dtype=np.int32)


_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Case-folded words separated by one space: punctuation and spacing differences do not make a new text."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


class _LeakRule:
    """May a view be held out? Only if no other view of any term equals it after `normalise`, and it sits inside
    no other view of its own term (as whole words): "Low blood pressure" inside Hypotension's definition would
    be seen in training."""

    def __init__(self, views: Mapping[int, Sequence[View]]):
        self.counts = collections.Counter(normalise(text) for vs in views.values() for text, _ in vs)
        self.views = views

    def __call__(self, term: int, k: int) -> bool:
        query = normalise(self.views[term][k][0])
        if self.counts[query] != 1:
            return False
        inside = f" {query} "
        return not any(inside in f" {normalise(text)} " for j, (text, _) in enumerate(self.views[term]) if j != k)


def split_validation(pairs: Sequence[tuple[str, int]], fraction: float, rng: np.random.Generator
                     ) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """(test, validation): a seeded `fraction` of the held-out pairs becomes the validation set."""
    n_val = int(round(fraction * len(pairs)))
    val_idx = set(rng.permutation(len(pairs))[:n_val].tolist())
    test = tuple(p for i, p in enumerate(pairs) if i not in val_idx)
    return test, tuple(p for i, p in enumerate(pairs) if i in val_idx)


def unique_synonyms(onto: Ontology, i: int) -> list[str]:
    """Term i's synonyms, exact first, without case-only repeats of its name or of each other."""
    # Exact synonyms first, then the others (related, broad, narrow); a synonym equal, ignoring case, to the
    # name or to an earlier synonym is dropped: HPO has ~1,000 such case-only variants, which would be
    # duplicate views and could never be held out (the copy would stay in training).
    seen = {onto.names[i].casefold()}
    out = []
    for s in (*onto.exact_synonyms[i], *onto.other_synonyms[i]):
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def _all_views(onto: Ontology, pool: np.ndarray, sep: str) -> dict[int, list[View]]:
    in_pool = set(int(i) for i in pool)
    views: dict[int, list[View]] = {}
    for i in in_pool:
        views[i] = [(onto.names[i], "name")] + [(s, "synonym") for s in unique_synonyms(onto, i)]
        if onto.definitions[i]:
            views[i].append((onto.definitions[i], "definition"))
    for i in sorted(in_pool):
        for p in (int(p) for p in onto.parents(i)):
            if p in in_pool:  # edges leaving the root's subtree (root -> HP:0000001) carry no view
                views[p].append((f"{onto.names[i]} {sep} is a", "relation_child"))
                views[i].append((f"is a {sep} {onto.names[p]}", "relation_parent"))
    return views


def typed_synonyms(onto: Ontology, obo_path: str | None = None) -> dict[str, dict[int, list[str]]]:
    """Synonym type ('layperson', 'abbreviation') -> term index -> its synonyms of that type, from the OBO file.

    The Ontology keeps synonyms by scope only; the types are read again here through the same pronto loader.
    """
    out: dict[str, dict[int, list[str]]] = {t: {} for t in SYNONYM_TYPES}
    for term in read_pronto(obo_path or default_obo_path()).terms():
        try:
            i = onto.index(term.id)
        except KeyError:
            continue
        if onto.ids[i] != term.id:  # an alias or obsolete id: its synonyms are not the current term's
            continue
        for syn in term.synonyms:
            kind = syn.type.id if syn.type is not None else None
            if kind in out:
                out[kind].setdefault(i, []).append(syn.description)
    return {k: {i: sorted(v) for i, v in d.items()} for k, d in out.items()}


def _hold_out_typed(views: dict[int, list[View]], typed: Mapping[int, Sequence[str]], fraction: float,
                    may_hold_out: _LeakRule, rng: np.random.Generator) -> list[tuple[str, int]]:
    """One synonym of the type for ~fraction of the terms that have one, under the no-leak rule."""
    candidates = sorted(i for i in typed if i in views)
    target = int(round(fraction * len(candidates)))
    held: list[tuple[str, int]] = []
    for pos in rng.permutation(len(candidates)):
        if len(held) >= target:
            break
        term = candidates[pos]
        wanted = set(typed[term])
        unique = [k for k, (text, kind) in enumerate(views[term])
                  if kind == "synonym" and text in wanted and may_hold_out(term, k)]
        if unique:
            k = unique[int(rng.integers(len(unique)))]
            held.append((views[term].pop(k)[0], term))
    return held


def build_text_views(ontology: Ontology | None = None, *, root: str = DEFAULT_ROOT, sep: str = "[SEP]",
                     holdout_fraction: float = 0.1, seed: int = 0, typed_holdout_fraction: float = 0.0,
                     typed: Mapping[str, Mapping[int, Sequence[str]]] | None = None,
                     val_fraction: float = 0.0) -> TermViews:
    """Text views for every term under `root`, with one synonym held out for ~holdout_fraction of the terms.

    Candidates for holding out are the terms with >= 1 synonym of any scope (exact or other). Terms are
    visited in a seeded order until round(holdout_fraction * candidates) are held out; a term's held-out
    synonym is drawn among those that pass the no-leak rule (`_LeakRule`: after normalising case, punctuation
    and spacing it equals no other view of any term and sits inside no other view of its own term; a term
    without such a synonym is skipped), so that no held-out text is seen in training.

    Then, per synonym type in `typed` (from `typed_synonyms`), one synonym of that type is held out for
    ~typed_holdout_fraction of the terms having one, by the same rule: separate query sets ('layperson',
    'abbreviation') that test how people write rather than paraphrases of names. Last, a seeded
    `val_fraction` of each query set moves to its validation set ('val_<set>'), to choose levers on.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if not 0.0 <= typed_holdout_fraction < 1.0:
        raise ValueError(f"typed_holdout_fraction must be in [0, 1), got {typed_holdout_fraction}")
    if ontology is None:
        ontology = load_ontology()
    pool = ontology.subtree(root)
    views = _all_views(ontology, pool, sep)
    may_hold_out = _LeakRule(views)
    candidates = [i for i in sorted(views) if any(kind == "synonym" for _, kind in views[i])]
    target = int(round(holdout_fraction * len(candidates)))
    rng = np.random.default_rng([seed, 0x5EED])
    held_out: list[tuple[str, int]] = []
    for pos in rng.permutation(len(candidates)):
        if len(held_out) >= target:
            break
        term = candidates[pos]
        unique = [k for k, (_, kind) in enumerate(views[term]) if kind == "synonym" and may_hold_out(term, k)]
        if unique:
            k = unique[int(rng.integers(len(unique)))]
            held_out.append((views[term].pop(k)[0], term))
    held_typed = {}
    if typed_holdout_fraction > 0:
        if typed is None:
            typed = typed_synonyms(ontology)
        for n, kind in enumerate(sorted(typed)):
            rng_kind = np.random.default_rng([seed, 0x7E1D, n])
            held_typed[kind] = tuple(_hold_out_typed(views, typed[kind], typed_holdout_fraction, may_hold_out,
                                                     rng_kind))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    validation = {}
    if val_fraction > 0:
        rng_val = np.random.default_rng([seed, 0x7A1])
        held_out, validation["synonym"] = split_validation(held_out, val_fraction, rng_val)
        for kind in sorted(held_typed):
            held_typed[kind], validation[kind] = split_validation(held_typed[kind], val_fraction, rng_val)
    return TermViews(views={i: tuple(v) for i, v in views.items()}, held_out=tuple(held_out), root=root, sep=sep,
                     held_out_typed=held_typed, validation=validation)


def sample_views(term_views: Sequence[View], views_per_term: int, rng: np.random.Generator,
                 kind_weights: Mapping[str, float] | None = None) -> list[str]:
    """K texts for one term: its name, then K-1 other views drawn without replacement, kinds balanced.

    Each other view is drawn with probability proportional to its kind's weight (`kind_weights`, default 1
    for every kind) divided by how many views of its kind the term has, so kinds of equal weight are equally
    likely: a term with 30 children would otherwise train almost only on "child [SEP] is a" views. A kind of
    weight 0 is drawn only when nothing else is left. Only a term with fewer than K views repeats texts:
    after all its views, the rest are drawn with replacement from all of them (name included).
    """
    if views_per_term < 1:
        raise ValueError(f"views_per_term must be >= 1, got {views_per_term}")
    name, others = term_views[0][0], list(term_views[1:])
    need = views_per_term - 1
    if len(others) >= need:
        per_kind = collections.Counter(kind for _, kind in others)
        weights = kind_weights or {}
        p = np.array([weights.get(kind, 1.0) / per_kind[kind] for _, kind in others])
        if np.count_nonzero(p) < need:  # too few views of weighted kinds: the zero-weight ones fill in
            p = np.where(p > 0, p, 1e-6 * max(float(p.max()), 1.0))
        picked = [others[j][0] for j in rng.choice(len(others), size=need, replace=False, p=p / p.sum())]
    else:
        everything = [name] + [text for text, _ in others]
        picked = [text for text, _ in others] + [everything[j] for j in rng.integers(len(everything),
                                                                                       size=need - len(others))]
    return [name] + picked


def related_groups(ontology: Ontology, terms: Sequence[int] | np.ndarray) -> dict[int, np.ndarray]:
    """Term -> its hard negatives within `terms`: siblings (a shared parent), else cousins (a shared grandparent).

    Siblings are what a retrieval among all names confuses most, and the hierarchical targets leave them at
    weight 0 (neither is the other's ancestor), so a batch of siblings sharpens exactly those decisions.
    """
    pool = set(int(t) for t in terms)
    out: dict[int, np.ndarray] = {}
    for t in sorted(pool):
        parents = [int(p) for p in ontology.parents(t)]
        near = {int(c) for p in parents for c in ontology.children(p)} & pool
        near.discard(t)
        if not near:
            near = {int(c) for p in parents for g in ontology.parents(p) for q in ontology.children(g)
                    for c in ontology.children(q)} & pool
            near.discard(t)
        out[t] = np.array(sorted(near), np.int32)
    return out


def family_groups(ontology: Ontology, terms: Sequence[int] | np.ndarray, max_hops: int) -> dict[int, np.ndarray]:
    """Term -> its is-a relatives within `terms`: ancestors and descendants within `max_hops` steps.

    These are the pairs the hierarchical targets weigh (hop_decay ** hops); a random batch of 128 of the
    18,387 terms holds only a few, so grouping them makes the hierarchy act in every batch.
    """
    pool = set(int(t) for t in terms)
    out: dict[int, np.ndarray] = {}
    for t in sorted(pool):
        near: set[int] = set()
        up, down = {t}, {t}
        for _ in range(max_hops):
            up = {int(p) for u in up for p in ontology.parents(u)}
            down = {int(c) for d in down for c in ontology.children(d)}
            near |= up | down
        near &= pool
        near.discard(t)
        out[t] = np.array(sorted(near), np.int32)
    return out


def sample_term_batch(views: TermViews | Mapping[int, Sequence[View]], term_pool: Sequence[int] | np.ndarray,
                      rng: np.random.Generator, num_terms: int, views_per_term: int) -> tuple[list[str], np.ndarray]:
    """N distinct terms from term_pool, K views each: (texts [N*K], term_idx int32 [N*K]), term-major."""
    table = views.views if isinstance(views, TermViews) else views
    pool = np.asarray(term_pool, dtype=np.int32)
    if num_terms > len(pool):
        raise ValueError(f"num_terms={num_terms} exceeds the {len(pool)} terms in the pool")
    terms = pool[rng.choice(len(pool), size=num_terms, replace=False)]
    texts = [text for t in terms for text in sample_views(table[int(t)], views_per_term, rng)]
    return texts, np.repeat(terms, views_per_term).astype(np.int32)


class Stage1TermSource:
    """Grain random-access source over a term pool: index -> term index (an int)."""

    def __init__(self, term_pool: Sequence[int] | np.ndarray):
        self._terms = np.asarray(term_pool, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._terms)

    def __getitem__(self, index: int) -> int:
        return int(self._terms[index])

    def __repr__(self) -> str:
        return f"Stage1TermSource({len(self)} terms)"


class SampleTermViews(grain.transforms.RandomMap):
    """Grain transform: term index -> {'texts': str [G*K], 'term_idx': int32 [G*K]}, term-major, names first.

    G = `group` terms: the element, then G-1 of its `related` terms (siblings or cousins, drawn without
    replacement while they last; a term with none gets random terms of the pool), the batch's hard negatives.
    """

    def __init__(self, views: TermViews | Mapping[int, Sequence[View]], views_per_term: int,
                 kind_weights: Mapping[str, float] | None = None, group: int = 1,
                 related: Mapping[int, np.ndarray] | None = None, mention_rate: float = 0.0):
        self._views = views.views if isinstance(views, TermViews) else views
        self._k, self._weights, self._group = views_per_term, dict(kind_weights or {}), group
        self._mention_rate = float(mention_rate)
        held = [q for pairs in views.query_sets.values() for q, _ in pairs] if isinstance(views, TermViews) else []
        self._guard = mention_views.ViewGuard(self._views, held, normalise) if self._mention_rate > 0 else None
        if group > 1 and related is None:
            raise ValueError("group > 1 needs `related` (text_views.related_groups)")
        self._related = related or {}
        self._pool = np.array(sorted(self._views), np.int32)

    def _group_of(self, element: int, rng: np.random.Generator) -> np.ndarray:
        near = self._related.get(element, np.zeros(0, np.int32))
        need = self._group - 1
        picked = rng.choice(near, size=min(need, len(near)), replace=False) if len(near) else near
        if len(picked) < need:
            fill = near if len(near) else self._pool
            picked = np.concatenate([picked, rng.choice(fill, size=need - len(picked))])
        return np.concatenate([[element], picked]).astype(np.int32)

    def _term_views(self, term: int, rng: np.random.Generator) -> list[str]:
        """sample_views, then the mention-like rewrite of the later views (`mention_views.rewrite_views`)."""
        texts = sample_views(self._views[term], self._k, rng, self._weights)
        if self._mention_rate <= 0:
            return texts
        strings = [text for text, kind in self._views[term] if kind in ("name", "synonym")]
        return mention_views.rewrite_views(texts, strings, self._mention_rate, rng, lambda v: self._guard(term, v))

    def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        terms = self._group_of(int(element), rng) if self._group > 1 else np.array([element], np.int32)
        texts = [v for t in terms for v in self._term_views(int(t), rng)]
        return {"texts": np.asarray(texts, dtype=np.str_), "term_idx": np.repeat(terms, self._k).astype(np.int32)}


def stage1_dataset(views: TermViews, *, num_terms: int, views_per_term: int, seed: int,
                   term_pool: Sequence[int] | np.ndarray | None = None, kind_weights: Mapping[str, float] | None = None,
                   group: int = 1, related: Mapping[int, np.ndarray] | None = None, mention_rate: float = 0.0
                   ) -> grain.MapDataset:
    """Endless grain MapDataset of stage-1 batches: {'texts': str [N/G, G*K], 'term_idx': int32 [N/G, G*K]}.

    Shuffle -> sample views -> batch -> repeat: each batch lies inside one epoch, so with G=1 its N terms are
    distinct; every epoch reshuffles the terms and redraws the views (grain seeds both by epoch). With
    `group` G > 1 every shuffled term brings G-1 of its `related` terms (hard negatives), so a term can occur
    twice in a batch; the loss treats equal terms as positives. Iterators from `.to_iter_dataset()`
    checkpoint like any grain iterator.
    """
    pool = views.terms if term_pool is None else np.asarray(term_pool, dtype=np.int32)
    if num_terms > len(pool):
        raise ValueError(f"num_terms={num_terms} exceeds the {len(pool)} terms in the pool")
    if group < 1 or num_terms % group:
        raise ValueError(f"the hard-negative group size {group} must be >= 1 and divide the {num_terms} terms "
                         "per batch")
    sampler = SampleTermViews(views, views_per_term, kind_weights, group, related, mention_rate)
    return (grain.MapDataset.source(Stage1TermSource(pool))
            .shuffle(seed=seed)
            .random_map(sampler, seed=seed)
            .batch(num_terms // group, drop_remainder=True)
            .repeat())


def flatten_term_batch(batch: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """A stage1_dataset batch as (texts [N*K], term_idx int32 [N*K]), the layout of sample_term_batch."""
    return [str(t) for t in np.asarray(batch["texts"]).reshape(-1)], np.asarray(batch["term_idx"], np.int32).reshape(-1)
