"""Stage-1 text source: per-term text views from the ontology and held-out synonyms (batches: `term_batches`).

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

import numpy as np

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
