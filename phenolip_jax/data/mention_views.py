"""Mention-like variants of HPO strings: how captions and case reports write a phenotype (stage 1's lever).

HPO names are canonical ("Abnormality of the kidney", "Hypoplasia of the radius", "Lipoma"); real mentions are
inflected ("lipomas"), reordered ("kidney anomalies", "radial hypoplasia" written "radius hypoplasia"), clipped
("cerebral cysts" for "Cerebral cortical cysts") or plainer ("abnormal lens" for "Abnormal lens morphology").
`mention_like` rewrites one string with one or two of these operations, each chosen at random among those that
apply; stage 1 draws such a variant of the term's name or one of its synonyms as a view with probability
`data.mention_rate` (docs/stages.md, "Stage 1 for real text").
"""
from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

# Plural <-> singular beyond the regular suffix rules: the anatomy and pathology words HPO uses.
IRREGULAR = {"foot": "feet", "tooth": "teeth", "phalanx": "phalanges", "vertebra": "vertebrae", "metastasis":
             "metastases", "epiphysis": "epiphyses", "diaphysis": "diaphyses", "metaphysis": "metaphyses",
             "apophysis": "apophyses", "stenosis": "stenoses", "exostosis": "exostoses", "anastomosis": "anastomoses",
             "bronchus": "bronchi", "nucleus": "nuclei", "villus": "villi", "fungus": "fungi", "calculus": "calculi",
             "thrombus": "thrombi", "embolus": "emboli", "naevus": "naevi", "nevus": "nevi", "ganglion": "ganglia",
             "diverticulum": "diverticula", "septum": "septa", "atrium": "atria", "labium": "labia",
             "ovum": "ova", "bulla": "bullae", "fibula": "fibulae", "ulna": "ulnae", "scapula": "scapulae",
             "patella": "patellae", "lamina": "laminae", "cornea": "corneae", "lentigo": "lentigines",
             "child": "children", "man": "men", "woman": "women", "index": "indices", "appendix": "appendices",
             "matrix": "matrices", "cortex": "cortices", "apex": "apices", "vertex": "vertices", "lens": "lenses",
             "radius": "radii", "pelvis": "pelves", "testis": "testes", "iris": "irides", "humerus": "humeri"}
SINGULAR = {p: s for s, p in IRREGULAR.items()}
# Words that take no plural in a mention (mass nouns, adjectives, measurements): number is left alone.
UNCOUNTED = frozenset(
    "morphology physiology concentration level activity positivity count ratio pain weakness impairment edema "
    "hypoplasia aplasia atrophy dysplasia hypertrophy hyperplasia stenosis sclerosis ossification calcification "
    "infection hemorrhage skin hair blood tissue fluid urine function behavior behaviour development growth "
    "intelligence disability delay stature hearing vision speech gait tone reflexes amplitude velocity "
    "duration size shape length width volume density mass".split())
OF_HEADS = ("Abnormality", "Aplasia", "Hypoplasia", "Duplication", "Sclerosis", "Neoplasm", "Fragmentation",
            "Stippling", "Agenesis", "Absence", "Dislocation", "Fracture", "Atrophy", "Dysplasia", "Enlargement",
            "Malformation", "Stenosis", "Calcification", "Fusion", "Hypertrophy", "Cyst", "Cysts", "Dilatation",
            "Thickening", "Deformity", "Hyperplasia", "Ossification", "Partial absence", "Aplasia/Hypoplasia")
_OF = re.compile(r"^(%s) of (?:the )?(.+)$" % "|".join(re.escape(h) for h in OF_HEADS), re.IGNORECASE)
_ABNORMAL_MORPHOLOGY = re.compile(r"^Abnormal (.+) morphology$", re.IGNORECASE)
_DIRECTION = {"increased": ("high", "elevated", "raised"), "decreased": ("low", "reduced", "diminished")}
_ANOMALY = ("anomaly", "anomalies", "abnormality", "abnormalities", "malformation", "defect")
_VOWEL_Y = re.compile(r"[aeiou]y$")
# Heads that name a condition rather than a thing ('Anemia', 'Hirsutism', 'Obesity', 'Insulin resistance'): no
# plural in a mention, but for the countable '-y' nouns of COUNTED_Y.
_MASS_SUFFIXES = ("ia", "ism", "ity", "ance", "ence", "y")
COUNTED_Y = frozenset("anomaly abnormality artery deformity cavity extremity irregularity body capillary "
                      "bony biopsy papilla".split())
_NUMBERED = re.compile(r"\b(\d+(st|nd|rd|th)?|first|second|third|fourth|fifth)\b", re.IGNORECASE)
_STOP = frozenset("of the a an and or to in on with without by at for from".split())


def pluralise(word: str) -> str:
    """The plural of one English noun (irregular anatomy plurals first, then the suffix rules)."""
    low = word.lower()
    if low in IRREGULAR:
        return _same_case(word, IRREGULAR[low])
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if low.endswith("y") and not _VOWEL_Y.search(low):
        return word[:-1] + "ies"
    return word + "s"


def singularise(word: str) -> str:
    """The singular of a plural noun, or the word unchanged when it does not look plural."""
    low = word.lower()
    if low in SINGULAR:
        return _same_case(word, SINGULAR[low])
    if low in IRREGULAR:  # a singular that ends like a plural ('lens', 'radius')
        return word
    if low.endswith("ies") and len(low) > 4:
        return word[:-3] + "y"
    if low.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us", "is")) and len(low) > 3:
        return word[:-1]
    return word


def _same_case(word: str, new: str) -> str:
    return new[0].upper() + new[1:] if word[:1].isupper() else new


def inflect(text: str, rng: np.random.Generator) -> str | None:
    """The head (last) word's number toggled, or None when it takes none ('morphology', 'edema', adjectives)."""
    words = text.split(" ")
    head = words[-1]
    low = head.lower()
    if (not head.isalpha() or low in UNCOUNTED or "," in text or _NUMBERED.search(text)
            or low.endswith(("al", "ic", "ous", "ive", "ed", "ing", "ar", "megaly"))
            or (low.endswith(("us", "is")) and low not in IRREGULAR)  # Latin ('pes planus'): left alone
            or (low.endswith(_MASS_SUFFIXES) and low not in COUNTED_Y)):  # 'Hypotonia', 'Obesity', 'Hirsutism'
        return None
    other = singularise(head)
    if other == head:
        other = pluralise(head)
    return " ".join(words[:-1] + [other])


def reorder(text: str, rng: np.random.Generator) -> str | None:
    """'Hypoplasia of the radius' -> 'radius hypoplasia'; 'Abnormal lens morphology' -> 'abnormal lens' / 'lens
    anomaly'; 'Increased serum urate' -> 'high serum urate'; None when no pattern applies."""
    m = _OF.match(text)
    if m:
        head, rest = m.group(1).lower(), m.group(2)
        if head == "abnormality":
            head = str(rng.choice(_ANOMALY))
        return f"{rest} {head}"
    m = _ABNORMAL_MORPHOLOGY.match(text)
    if m:
        part = m.group(1)
        return f"abnormal {part}" if rng.random() < 0.5 else f"{part} {rng.choice(_ANOMALY)}"
    first, _, rest = text.partition(" ")
    if rest and first.lower() in _DIRECTION:
        return f"{rng.choice(_DIRECTION[first.lower()])} {rest}"
    return None


def drop_word(text: str, rng: np.random.Generator) -> str | None:
    """One inner modifier dropped ('Cerebral cortical cysts' -> 'Cerebral cysts'): never the first word (it often
    carries the sense: 'Abnormal', 'Increased'), the head, a function word or a word beside one."""
    words = text.split(" ")
    if _OF.match(text) or _ABNORMAL_MORPHOLOGY.match(text):
        return None
    inner = [j for j in range(1, len(words) - 1)  # a hyphenated word is a name's core ('cafe-au-lait'): kept
             if words[j].isalpha() and not {words[j - 1].lower(), words[j].lower(), words[j + 1].lower()} & _STOP]
    if not inner:
        return None
    j = int(rng.choice(inner))
    return " ".join(words[:j] + words[j + 1:])


OPERATIONS: tuple[Callable[[str, np.random.Generator], str | None], ...] = (inflect, reorder, drop_word)


class ViewGuard:
    """May `variant` stand as a view of `term`? Not when it equals (after `normalise`) a held-out query, which would
    then be trained on, or a name or synonym of another term ('renal cyst' from 'Renal corticomedullary cysts' is
    its parent's name): that would teach a wrong label."""

    def __init__(self, views: Mapping[int, Sequence[tuple[str, str]]], held_out: Iterable[str],
                 normalise: Callable[[str], str]):
        self._normalise = normalise
        self._held = {self._key(q) for q in held_out}
        self._owners: dict[str, set[int]] = collections.defaultdict(set)
        for term, term_views in views.items():
            for text, kind in term_views:
                if kind in ("name", "synonym"):
                    self._owners[self._key(text)].add(term)

    def _key(self, text: str) -> str:
        # Number folded too: 'thin nails' reproduces the held-out 'Thin nail' as surely as 'thin nail' would.
        words = self._normalise(text).split(" ")
        return " ".join(words[:-1] + [singularise(words[-1])])

    def __call__(self, term: int, variant: str) -> bool:
        """True when `variant` may be a view of `term`."""
        key = self._key(variant)
        return key not in self._held and self._owners.get(key, {term}) == {term}


def rewrite_views(texts: list[str], strings: list[str], rate: float, rng: np.random.Generator,
                  allowed: Callable[[str], bool]) -> list[str]:
    """`texts` (a term's sampled views, its name first) with each later view, with probability `rate`, replaced by a
    mention-like variant of one of `strings` (its name and training synonyms) that `allowed` accepts: a variant
    equal to a held-out query or to another term's string would leak the query or teach a wrong label."""
    out = list(texts)
    for j in range(1, len(out)):
        if rng.random() < rate:
            variant = mention_like(strings[int(rng.integers(len(strings)))], rng)
            if variant is not None and allowed(variant):
                out[j] = variant
    return out


def mention_like(text: str, rng: np.random.Generator, max_ops: int = 2) -> str | None:
    """`text` rewritten by 1..max_ops operations that apply (random order), lower-cased; None when none applies."""
    out = text
    applied = 0
    for j in rng.permutation(len(OPERATIONS)):
        if applied == max_ops or (applied and rng.random() < 0.5):
            break
        new = OPERATIONS[j](out, rng)
        if new is not None and new != out:
            out, applied = new, applied + 1
    return out.lower() if applied else None
