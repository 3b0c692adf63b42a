"""Read an OBO file with pronto into `RawTerms` (current terms sorted by id, alias resolution)."""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence

import pronto

from phenolip_jax.ontology.build import RawTerms
from phenolip_jax.ontology.hpo import OntologyFormatError

log = logging.getLogger(__name__)


def resolve_aliases(
    current: set[str],
    alt_ids: Mapping[str, str],
    obsolete: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Map alt and obsolete ids to current ids.

    `alt_ids` maps an alt_id to the (current or obsolete) term declaring it; `obsolete` maps an obsolete
    id to its (replaced_by, consider) lists. An obsolete id's successor is, in this order: its
    replaced_by if it has exactly one; the term that lists it as alt_id; its consider if it has exactly
    one and no replaced_by. Successors are followed until a current term.
    Returns (aliases, unresolvable obsolete id -> candidate ids).
    """
    successor: dict[str, str] = dict(alt_ids)
    candidates: dict[str, tuple[str, ...]] = {}
    for hpo_id, (replaced_by, consider) in obsolete.items():
        if len(replaced_by) == 1:
            successor[hpo_id] = replaced_by[0]
        elif hpo_id in alt_ids:
            pass  # a term declaring it as alt_id absorbed it: a firmer statement than a 'consider'
        elif not replaced_by and len(consider) == 1:
            successor[hpo_id] = consider[0]
        else:
            candidates[hpo_id] = tuple(sorted(set(replaced_by) | set(consider)))

    aliases: dict[str, str] = {}
    for start in successor:
        seen = {start}
        node = successor[start]
        while node not in current and node in successor and node not in seen:
            seen.add(node)
            node = successor[node]
        if node in current:
            aliases[start] = node
        else:
            # Dead end (unresolvable obsolete, unknown target or a cycle): an obsolete-style error,
            # with the dead end's own candidates when it has any.
            candidates.setdefault(start, candidates.get(node, ()))
    for hpo_id in current:
        aliases.pop(hpo_id, None)  # a current id always means itself, even if listed as someone's alt_id
        candidates.pop(hpo_id, None)
    return aliases, candidates


def _synonyms(term: pronto.Term) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # pronto hands synonyms back as a frozenset: sort them so the order is stable across loads.
    exact = sorted({s.description for s in term.synonyms if s.scope == "EXACT"})
    other = sorted({s.description for s in term.synonyms if s.scope != "EXACT"} - set(exact))
    return tuple(exact), tuple(other)


def read_pronto(path: str | os.PathLike) -> pronto.Ontology:
    """Parse with pronto, turning its parser errors into OntologyFormatError naming the file."""
    with warnings.catch_warnings():
        # pronto warns about encoding guesses and OBO oddities that do not affect HPO's terms.
        warnings.simplefilter("ignore")
        try:
            return pronto.Ontology(os.fspath(path))
        except (ValueError, KeyError, SyntaxError, UnicodeDecodeError) as err:
            raise OntologyFormatError(f"{os.fspath(path)!r} is not a loadable OBO ontology: {err}") from err


def parse_obo(path: str | os.PathLike) -> RawTerms:
    """Read an OBO file into RawTerms; raises OntologyFormatError if it is malformed or holds no terms."""
    onto = read_pronto(path)
    try:
        return _extract(onto, path)
    except OntologyFormatError:
        raise
    except (ValueError, KeyError) as err:
        # pronto validates lazily (e.g. undeclared synonym types surface only when read).
        raise OntologyFormatError(f"{os.fspath(path)!r} is not a loadable OBO ontology: {err}") from err


def _extract(onto: pronto.Ontology, path: str | os.PathLike) -> RawTerms:
    terms = sorted(onto.terms(), key=lambda t: t.id)
    current_terms = [t for t in terms if not t.obsolete]
    if not current_terms:
        raise OntologyFormatError(f"{os.fspath(path)!r} contains no non-obsolete [Term] stanzas")
    current = {t.id for t in current_terms}

    alt_ids: dict[str, str] = {}
    obsolete: dict[str, tuple[list[str], list[str]]] = {}
    for term in terms:
        for alt in term.alternate_ids:
            alt_ids[alt] = term.id
        if term.obsolete:
            obsolete[term.id] = (sorted(t.id for t in term.replaced_by), sorted(t.id for t in term.consider))
    aliases, candidates = resolve_aliases(current, alt_ids, obsolete)

    parent_ids, dropped = [], 0
    for term in current_terms:
        ps = {p.id for p in term.superclasses(distance=1, with_self=False)}
        # An is_a to an obsolete term carries no structure we can index; count it so it is visible.
        dropped += len(ps - current)
        parent_ids.append(tuple(sorted(ps & current)))
    if dropped:
        log.warning("dropped %d is_a edges to obsolete terms in %s", dropped, os.fspath(path))

    synonyms = [_synonyms(t) for t in current_terms]
    return RawTerms(
        ids=tuple(t.id for t in current_terms),
        names=tuple(t.name or "" for t in current_terms),
        definitions=tuple(str(t.definition) if t.definition else "" for t in current_terms),
        exact_synonyms=tuple(s[0] for s in synonyms),
        other_synonyms=tuple(s[1] for s in synonyms),
        parent_ids=tuple(parent_ids),
        aliases=aliases,
        obsolete_candidates=candidates,
        release=onto.metadata.data_version or "",
    )
