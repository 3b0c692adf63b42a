"""Lexical linking: HPO names and synonyms found in text, longest match first, non-overlapping, whole words.

Matching compares word sequences in normal form (case-folded, plurals folded: `text.normal_form`), so
'Pleural effusions' finds 'Pleural effusion'. A short all-capital synonym ('ASD', 'VUR', 'DDH') is matched only
as written: folded, it would be an ordinary word ('RA' and 'ra'). Layperson and abbreviation synonyms are HPO
synonyms like the rest: they are all in the lexicon (scopes permitting), with their type kept as evidence.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from phenolip_jax.link import text as text_lib
from phenolip_jax.link.obo_terms import DISCARDED_TYPES, TermAnnotations
from phenolip_jax.link.text import STOPWORDS
from phenolip_jax.ontology import Ontology

SCOPES = ("EXACT", "RELATED", "NARROW", "BROAD")  # OBO synonym scopes (config.lexical.scopes picks among them)
# A name outranks an exact synonym, which outranks the looser scopes: when one text is several terms' string,
# only the best-ranked terms are linked.
RANK = {"name": 0, "EXACT": 1, "RELATED": 2, "NARROW": 2, "BROAD": 2}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One string of one term: the term index, the string as HPO writes it, its kind and synonym type."""

    term: int
    text: str
    kind: str  # 'name' or a synonym scope ('EXACT', 'RELATED', 'NARROW', 'BROAD')
    synonym_type: str = ""  # '', 'layperson', 'abbreviation', 'plural_form', 'uk_spelling', ...

    @property
    def rank(self) -> int:
        """0 for a name, 1 for an exact synonym, 2 for the looser scopes."""
        return RANK[self.kind]


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """Word-sequence keys -> the best-ranked entries having them: folded keys, and short acronyms as written."""

    folded: Mapping[tuple[str, ...], tuple[Entry, ...]]
    as_written: Mapping[tuple[str, ...], tuple[Entry, ...]]
    max_words: int
    fold_plurals: bool = True  # False: keys are the case-folded words only ('effusions' is not 'effusion')

    def __len__(self) -> int:
        return len(self.folded) + len(self.as_written)

    def lookup(self, ws: text_lib.Words, start: int, stop: int) -> tuple[Entry, ...]:
        """The entries whose string is words [start, stop) of `ws` (() when none)."""
        span = ws.words[start:stop]
        return self.as_written.get(tuple(w.text for w in span), ()) + self.folded.get(_key(span, self.fold_plurals), ())


@dataclasses.dataclass(frozen=True)
class Mention:
    """Words [start, stop) of a text naming the terms of `entries` (all of one rank)."""

    start: int
    stop: int
    entries: tuple[Entry, ...]


def term_strings(onto: Ontology, term: int, annotations: TermAnnotations, scopes: Sequence[str]) -> list[Entry]:
    """The name and the synonyms (of the given scopes, discarded types left out) of one term."""
    out = [Entry(term, onto.names[term], "name")]
    for s in annotations.synonyms.get(term, ()):
        if s.scope in scopes and s.type not in DISCARDED_TYPES:
            out.append(Entry(term, s.text, s.scope, s.type))
    return out


def _key(words: Sequence[text_lib.Word], fold_plurals: bool) -> tuple[str, ...]:
    return tuple(w.norm for w in words) if fold_plurals else tuple(w.lower for w in words)


def build_lexicon(onto: Ontology, terms: Iterable[int], annotations: TermAnnotations,
                  scopes: Sequence[str] = SCOPES, min_chars: int = 3, acronym_max_len: int = 6,
                  fold_plurals: bool = True) -> Lexicon:
    """The lexicon of `terms`: every name and synonym as a word-sequence key, best-ranked entries per key.

    Strings with fewer than `min_chars` letters and digits ('A', 'C') or made only of stopwords are left out;
    one-word all-capital strings up to `acronym_max_len` characters are matched as written.
    """
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"config.lexical.scopes has unknown {unknown}: use any of {SCOPES}")
    folded: dict[tuple[str, ...], list[Entry]] = {}
    as_written: dict[tuple[str, ...], list[Entry]] = {}
    max_words = 1
    for term in terms:
        for entry in term_strings(onto, int(term), annotations, scopes):
            ws = text_lib.words(entry.text).words
            if sum(len(w.text) for w in ws) < min_chars or all(w.lower in STOPWORDS for w in ws):
                continue
            if len(ws) == 1 and text_lib.is_short_acronym(ws[0].text, acronym_max_len):
                _add(as_written, (ws[0].text,), entry)
            else:
                _add(folded, _key(ws, fold_plurals), entry)
            max_words = max(max_words, len(ws))
    freeze = lambda d: {k: tuple(v) for k, v in d.items()}  # noqa: E731
    return Lexicon(freeze(folded), freeze(as_written), max_words, fold_plurals)


def _add(table: dict[tuple[str, ...], list[Entry]], key: tuple[str, ...], entry: Entry) -> None:
    """Keeps only the best rank per key, and one entry per term (its best string)."""
    have = table.setdefault(key, [])
    if have and entry.rank > have[0].rank:
        return
    if have and entry.rank < have[0].rank:
        have.clear()
    if all(e.term != entry.term for e in have):
        have.append(entry)


def lexical_mentions(ws: text_lib.Words, lexicon: Lexicon) -> list[Mention]:
    """Non-overlapping mentions, longest first (ties: leftmost), returned in text order; no phrase breaks inside."""
    found = []
    for i in range(len(ws)):
        for n in range(min(lexicon.max_words, len(ws) - i), 0, -1):
            if not ws.one_phrase(i, i + n):
                continue
            entries = lexicon.lookup(ws, i, i + n)
            if entries:
                found.append(Mention(i, i + n, entries))
    found.sort(key=lambda m: (m.start - m.stop, m.start))
    taken = [False] * len(ws)
    kept = []
    for m in found:
        if not any(taken[m.start:m.stop]):
            taken[m.start:m.stop] = [True] * (m.stop - m.start)
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)
