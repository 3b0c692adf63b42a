"""Stage-1 batches: N terms x K text views each, drawn from `text_views.TermViews` (names first, kinds balanced),
optionally grouped with hard negatives (siblings) or is-a relatives, and optionally with mention-like rewrites
of the later views (`mention_rate`, data/mention_views.py): `stage1_dataset` as an endless grain dataset, and
`sample_term_batch` as one plain batch."""
from __future__ import annotations

import collections
from typing import Mapping, Sequence

import grain
import numpy as np

from phenolip_jax.data import mention_views
from phenolip_jax.data.text_views import TermViews, View, normalise
from phenolip_jax.ontology import Ontology


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
            raise ValueError("group > 1 needs `related` (term_batches.related_groups)")
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
