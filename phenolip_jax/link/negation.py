"""NegEx-style context: is a mention negated ("no evidence of hydrocephalus") or uncertain ("possible abscess")?

A trigger phrase before a mention (pre) or after it (post) reaches at most `window` words, never across a clause
end ('.', ';', ':', '!', '?') or a termination word ('but', 'however', ...). Triggers are found longest first,
so a pseudo-trigger ("no change", "not only") or a longer trigger ("not excluded": uncertain) takes its words
away from a shorter one ("not": negation). A trigger inside the mention itself ("absence of the corpus
callosum" as a whole HPO synonym) does not apply to it. After Chapman et al. 2001 (NegEx) and its ConText lists.
"""
from __future__ import annotations

import dataclasses

from phenolip_jax.link import text as text_lib

PRE_NEGATION = (
    "no", "not", "without", "absence of", "absent", "no evidence of", "no evidence for", "no sign of",
    "no signs of", "negative for", "free of", "ruled out", "rules out", "denies", "denied", "never",
    "neither", "nor", "no findings of", "fails to reveal", "failed to reveal", "resolution of",
)
POST_NEGATION = (
    "ruled out", "was ruled out", "is ruled out", "were ruled out", "has been ruled out", "have been ruled out",
    "excluded", "was excluded", "is excluded", "were excluded", "absent", "was absent", "is absent", "not seen",
    "not present", "not identified", "not detected", "not visualized", "not visualised", "not demonstrated",
    "has resolved", "had resolved", "have resolved", "resolved",
)
PRE_UNCERTAIN = (
    "possible", "possibly", "probable", "probably", "suspicious for", "suspicious of", "suspected", "suspect",
    "suspicion of", "suspicion for", "cannot exclude", "can not exclude", "cannot rule out", "could not exclude",
    "cannot be excluded", "may represent", "may be", "might be", "might represent", "could be", "could represent",
    "questionable", "question of", "rule out", "concerning for", "worrisome for", "suggestive of", "suggesting",
    "equivocal", "presumed", "presumably", "likely", "differential diagnosis", "differential diagnoses",
)
POST_UNCERTAIN = (
    "cannot be excluded", "can not be excluded", "cannot be ruled out", "could not be excluded",
    "could not be ruled out", "not excluded", "not ruled out", "is suspected", "was suspected", "were suspected",
    "is possible", "was possible", "is likely", "was likely", "is questionable", "is not excluded",
)
# Phrases that hold a trigger word but mean no negation: they consume their words and do nothing.
PSEUDO = (
    "no change", "no significant change", "no interval change", "no increase", "no decrease", "no further",
    "not only", "not necessarily", "not certain whether", "not certain if", "without difficulty", "gram negative",
    "no longer", "not clear", "whether or not",
)
# Words that end a trigger's reach (a new clause about something else).
TERMINATION = (
    "but", "however", "although", "though", "except", "apart from", "aside from", "yet", "which", "whereas",
    "while", "cause of", "causes of", "source of", "sources of", "reason for", "secondary to", "origin of",
    "etiology of", "aetiology of", "presenting with",
)
KINDS = ("pre_negation", "post_negation", "pre_uncertain", "post_uncertain", "pseudo", "termination")
_LISTS = dict(zip(KINDS, (PRE_NEGATION, POST_NEGATION, PRE_UNCERTAIN, POST_UNCERTAIN, PSEUDO, TERMINATION)))


@dataclasses.dataclass(frozen=True)
class Trigger:
    """Words [start, stop) of a text that are a trigger phrase of these kinds ('ruled out' reaches both ways)."""

    start: int
    stop: int
    kinds: tuple[str, ...]
    phrase: str


@dataclasses.dataclass(frozen=True)
class Context:
    """What the triggers around a mention say: negated / uncertain, and the trigger phrases that said so."""

    negated: bool = False
    uncertain: bool = False
    triggers: tuple[str, ...] = ()


def _table() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Trigger words (lower case) -> the kinds of the lists holding the phrase."""
    table: dict[tuple[str, ...], tuple[str, ...]] = {}
    for kind in KINDS:
        for phrase in _LISTS[kind]:
            key = tuple(phrase.split())
            table[key] = table.get(key, ()) + (kind,)
    return table


_TRIGGERS = _table()
_MAX_WORDS = max(len(k) for k in _TRIGGERS)


def find_triggers(ws: text_lib.Words) -> list[Trigger]:
    """Trigger phrases of a text, longest first at each position, non-overlapping, in text order."""
    out, i = [], 0
    lower = [w.lower for w in ws.words]
    while i < len(lower):
        for n in range(min(_MAX_WORDS, len(lower) - i), 0, -1):
            kinds = _TRIGGERS.get(tuple(lower[i:i + n]))
            if kinds and ws.one_clause(i, i + n):
                out.append(Trigger(i, i + n, kinds, " ".join(lower[i:i + n])))
                i += n
                break
        else:
            i += 1
    return out


def _reaches(ws: text_lib.Words, triggers: list[Trigger], lo: int, hi: int, window: int) -> bool:
    """Whether words [lo, hi) (between a trigger and a mention) are within the window, in one clause, and hold no
    termination phrase."""
    if hi - lo > window or not ws.one_clause(lo - 1, hi + 1):  # the trigger's last word .. the mention's first
        return False
    return not any("termination" in t.kinds and lo <= t.start and t.stop <= hi for t in triggers)


def context(ws: text_lib.Words, triggers: list[Trigger], start: int, stop: int, window: int) -> Context:
    """Negation / uncertainty of the mention at words [start, stop) from the text's triggers."""
    negated = uncertain = False
    said = []
    for t in triggers:
        if t.start < stop and start < t.stop:  # a trigger inside the mention is part of its name, not about it
            continue
        before = t.stop <= start and _reaches(ws, triggers, t.stop, start, window)
        after = t.start >= stop and _reaches(ws, triggers, stop, t.start, window)
        kinds = [k for k in t.kinds if (before and k.startswith("pre_")) or (after and k.startswith("post_"))]
        if kinds:
            negated |= any(k.endswith("negation") for k in kinds)
            uncertain |= any(k.endswith("uncertain") for k in kinds)
            said.append(t.phrase)
    return Context(negated, uncertain, tuple(said))
