"""Caption text as words with character offsets, the normal form lexical matching compares, and phrase limits.

Both sides of a lexical match (an HPO name or synonym, a caption) go through the same `words` and `normal_form`,
so a stemming rule only has to map a plural and its singular to one key, not to produce a real word.
"""
from __future__ import annotations

import dataclasses
import re

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits (any script); everything else separates words
# Characters that may sit between two words of one phrase ("non-Hodgkin", "T1/T2", "Crohn's"). Anything else
# (comma, bracket, full stop...) ends a phrase: no name or candidate span runs across it.
_PHRASE_GLUE = frozenset(" \t-/'’\u2010\u2011\u2013")
# Characters that end a clause: negation and uncertainty never reach across them.
_CLAUSE_END = frozenset(".;:!?")

# Function words: never folded (a folded word that became one keeps its own form: "Intoe" is not "into"), and an
# HPO string or candidate span made only of these is never matched.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers him his
how i if in into is it its itself just me more most my no nor not of off on once only or other our out over own
same she should so some such than that the their them then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your
""".split())


@dataclasses.dataclass(frozen=True)
class Word:
    """One word of a text: its characters, lower-cased and normal forms, and [start, end) offsets."""

    text: str
    lower: str
    norm: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Words:
    """The words of a text; `phrase_break[i]` / `clause_break[i]`: a phrase / clause ends between word i-1 and i."""

    text: str
    words: tuple[Word, ...]
    phrase_break: tuple[bool, ...]
    clause_break: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.words)

    def one_phrase(self, start: int, stop: int) -> bool:
        """Whether words [start, stop) lie in one phrase (no break between them)."""
        return not any(self.phrase_break[start + 1:stop])

    def one_clause(self, start: int, stop: int) -> bool:
        """Whether words [start, stop) lie in one clause."""
        return not any(self.clause_break[start + 1:stop])

    def span_text(self, start: int, stop: int) -> str:
        """The original characters of words [start, stop)."""
        return self.text[self.words[start].start:self.words[stop - 1].end]


def normal_form(word: str) -> str:
    """Case-folded, with plural and final-e/y endings folded so that singular and plural share one key.

    'effusions' and 'effusion' -> 'effusion'; 'masses' / 'mass' -> 'mass'; 'arteries' / 'artery' -> 'arteri';
    'stenoses' / 'stenosis' -> 'stenos'; 'headaches' / 'headache' -> 'headach'; 'vertebrae' -> 'vertebra'.
    """
    w = word.casefold()
    if not w.isalpha() or w in STOPWORDS:
        return w
    folded = w
    if len(w) > 3:
        if w.endswith("sis"):
            w = w[:-2]
        elif w.endswith("ies"):
            w = w[:-3] + "i"
        elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]  # 'masses' -> 'masse': the final-e rule below finishes it
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("y"):
        w = w[:-1] + "i"
    return folded if w in STOPWORDS else w


def words(text: str) -> Words:
    """The words of `text` with their offsets and the phrase and clause breaks between them."""
    found = [Word(m.group(), m.group().casefold(), normal_form(m.group()), m.start(), m.end())
             for m in _WORD.finditer(text)]
    phrase, clause = [False] * len(found), [False] * len(found)
    for i in range(1, len(found)):
        gap = text[found[i - 1].end:found[i].start]
        phrase[i] = any(c not in _PHRASE_GLUE for c in gap)
        clause[i] = any(c in _CLAUSE_END for c in gap) and not _decimal_point(gap, found[i - 1], found[i])
    return Words(text, tuple(found), tuple(phrase), tuple(clause))


def _decimal_point(gap: str, left: Word, right: Word) -> bool:
    # "1.5 cm": the dot is part of a number, not the end of a sentence.
    return gap == "." and left.text.isdigit() and right.text.isdigit()


def is_short_acronym(text: str, max_len: int) -> bool:
    """One all-capital word (letters, maybe digits) of at most max_len characters: 'ASD', 'VUR', 'T2DM'."""
    return 1 < len(text) <= max_len and text.isalnum() and text.isupper()
