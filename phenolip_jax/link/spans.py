"""Candidate spans for the encoder: word n-grams inside one phrase that could name a phenotype.

Always: a span may not start or end with a stopword ('of the liver', 'effusion in': the words without them are a
candidate too, and an encoder reads padding words as meaning), nor be only numbers and units, nor lack a word of
three letters. Then `SpanFilter` (config.span_filter):
- 'anatomy': skip spans made only of anatomy and position words. A name-to-name encoder scores 'iliac artery'
  close to 'Abnormal iliac artery morphology' and 'trachea' close to 'Tracheomegaly': the names share the
  anatomy, and nothing taught it that a mention without an abnormality is no phenotype. The anatomy words are
  read from HPO's own grouping names: the X of 'Abnormal X morphology', 'Abnormality of the X', ...
- 'finding' (and anatomy): a span must also hold a word that HPO's names and synonyms use beside anatomy: a
  finding word ('effusion', 'dilated', 'lump'), so 'iliac artery also' or 'abdomen showing' are not scored.
- 'none': every n-gram above is scored.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from phenolip_jax.link import text as text_lib
from phenolip_jax.link.obo_terms import TermAnnotations
from phenolip_jax.link.text import STOPWORDS
from phenolip_jax.ontology import Ontology

SPAN_FILTERS = ("none", "anatomy", "finding")
_UNITS = frozenset("mm cm m ml l kg g mg hu t s ms mhz mev gy min h d x".split())
GROUPING_NAMES = tuple(re.compile(p) for p in (
    r"^Abnormal (.+) morphology$",
    r"^Abnormality of (?:the )?(.+)$",
    r"^Aplasia/Hypoplasia (?:of|involving) (?:the )?(.+)$",
    r"^Abnormal (.+) physiology$",
    r"^Abnormal shape of (?:the )?(.+)$",
))
POSITION_WORDS = frozenset(
    "left right bilateral unilateral upper lower anterior posterior medial lateral proximal distal superior inferior "
    "internal external common main middle deep superficial central peripheral ventral dorsal apical basal axial "
    "sagittal coronal frontal side sided both".split())
# Words of grouping names that say what is wrong: findings, never anatomy.
FINDINGS = frozenset(text_lib.normal_form(w) for w in (
    "abnormal abnormality aplasia hypoplasia dysfunction defect anomaly anomalies mass tumor tumour neoplasm "
    "lesion nodule cyst swelling fracture pain").split())
# Words of grouping names that say neither where nor what ('left ventricular function' is no finding).
GENERIC = frozenset(text_lib.normal_form(w) for w in "morphology physiology shape size function development".split())


def _content(word: text_lib.Word) -> bool:
    return word.lower not in STOPWORDS and not word.lower.isdigit() and word.lower not in _UNITS


def candidate_spans(ws: text_lib.Words, max_words: int) -> list[tuple[int, int]]:
    """(start, stop) word ranges of 1..max_words words, in one phrase, starting and ending with content words."""
    out = []
    for i, first in enumerate(ws.words):
        if not _content(first):
            continue
        for j in range(i + 1, min(i + max_words, len(ws)) + 1):
            if ws.phrase_break[j - 1] and j - 1 > i:
                break
            last = ws.words[j - 1]
            if _content(last) and any(len(w.text) >= 3 and w.text.isalpha() for w in ws.words[i:j]):
                out.append((i, j))
    return out


@dataclasses.dataclass(frozen=True)
class SpanFilter:
    """Which candidate spans the encoder scores (see the module docstring); word sets in normal form."""

    mode: str = "none"
    anatomy: frozenset[str] = frozenset()
    findings: frozenset[str] = frozenset()

    def keep(self, ws: text_lib.Words, start: int, stop: int) -> bool:
        """Whether words [start, stop) are worth scoring."""
        if self.mode == "none":
            return True
        content = [w.norm for w in ws.words[start:stop] if w.lower not in STOPWORDS and w.lower not in POSITION_WORDS]
        if content and all(w in self.anatomy for w in content):
            return False
        return self.mode == "anatomy" or any(w in self.findings for w in content)


def anatomy_words(onto: Ontology, terms: Iterable[int]) -> frozenset[str]:
    """Normal forms of the content words of the Xs in the grouping names of `terms`."""
    out: set[str] = set()
    for t in terms:
        for pattern in GROUPING_NAMES:
            m = pattern.match(onto.names[int(t)])
            if m:
                out.update(w.norm for w in text_lib.words(m.group(1)).words if w.lower not in STOPWORDS)
                break
    return frozenset(out - FINDINGS - GENERIC)


def span_filter(mode: str, onto: Ontology, terms: Iterable[int], annotations: TermAnnotations) -> SpanFilter:
    """The filter of config.span_filter, its word sets read from the names and synonyms of `terms`."""
    if mode not in SPAN_FILTERS:
        raise ValueError(f"config.span_filter={mode!r}: use one of {', '.join(SPAN_FILTERS)}")
    if mode == "none":
        return SpanFilter()
    terms = [int(t) for t in terms]
    anatomy = anatomy_words(onto, terms)
    words: set[str] = set()
    for t in terms:
        for s in (onto.names[t], *(syn.text for syn in annotations.synonyms.get(t, ()))):
            words.update(w.norm for w in text_lib.words(s).words if w.lower not in STOPWORDS and w.text.isalpha())
    return SpanFilter(mode, anatomy, frozenset(words - anatomy - POSITION_WORDS - GENERIC) | FINDINGS)
