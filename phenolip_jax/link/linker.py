"""The linker: caption text -> evidence (span, offsets, HPO term, method, score, negated / uncertain).

Methods: 'lexical' (HPO names and synonyms), 'encoder' (candidate spans scored against every term's name by a
stage-1 encoder, best cosine per span, kept above the threshold), 'hybrid' (lexical mentions, plus encoder
mentions on words no lexical mention covers). Mentions of one text never overlap. Every mention gets NegEx-style
context; a negated mention is evidence marked `excluded` (as a phenopacket's excluded phenotype) and is not
linked, an uncertain one is linked only under `link_uncertain`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.link import lexical, negation, spans
from phenolip_jax.link import text as text_lib
from phenolip_jax.link.encoder import SpanScorer
from phenolip_jax.ontology import Ontology

METHODS = ("lexical", "encoder", "hybrid")


@dataclasses.dataclass(frozen=True, eq=False)
class Linker:
    """Everything `link_texts` needs: the ontology, the lexicon and/or span scorer, and the policy knobs."""

    ontology: Ontology
    method: str
    lexicon: lexical.Lexicon | None = None
    scorer: SpanScorer | None = None
    threshold: float = 1.0  # encoder mentions need a cosine >= threshold
    max_span_words: int = 6
    negation: bool = True  # False: no mention is negated or uncertain (the NegEx step is skipped)
    negation_window: int = 6
    link_uncertain: bool = False
    span_filter: spans.SpanFilter = spans.SpanFilter()  # which candidate spans the encoder scores

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"config.method={self.method!r}: use one of {', '.join(METHODS)}")
        if self.method != "encoder" and self.lexicon is None:
            raise ValueError(f"config.method={self.method!r} needs the lexicon")
        if self.method != "lexical" and self.scorer is None:
            raise ValueError(f"config.method={self.method!r} needs an encoder: set --config.encoder=RUN")


@dataclasses.dataclass(frozen=True)
class _Mention:
    start: int  # words
    stop: int
    term: int
    method: str
    score: float
    matched: str = ""  # the HPO string matched (lexical)
    string_kind: str = ""  # 'name' or the synonym's scope
    synonym_type: str = ""


def _lexical(ws: text_lib.Words, lexicon: lexical.Lexicon) -> list[_Mention]:
    return [_Mention(m.start, m.stop, e.term, "lexical", 1.0, e.text, e.kind, e.synonym_type)
            for m in lexical.lexical_mentions(ws, lexicon) for e in m.entries]


def _encoder(ws: text_lib.Words, candidates: list[tuple[int, int]], scores: list[tuple[int, float]],
             threshold: float, taken: list[bool]) -> list[_Mention]:
    """Best-scoring spans first, each kept when above the threshold and clear of every word already taken."""
    order = sorted(range(len(candidates)), key=lambda k: (-scores[k][1], candidates[k][0] - candidates[k][1]))
    out = []
    for k in order:
        (a, b), (term, score) = candidates[k], scores[k]
        if score < threshold:
            break
        if not any(taken[a:b]):
            taken[a:b] = [True] * (b - a)
            out.append(_Mention(a, b, term, "encoder", score))
    return out


def link_texts(texts: Sequence[str], linker: Linker) -> list[list[dict[str, Any]]]:
    """Per text, its evidence: one dict per (mention, term), in text order (see `evidence_item`)."""
    parsed = [text_lib.words(t) for t in texts]
    found: list[list[_Mention]] = []
    for ws in parsed:
        found.append(_lexical(ws, linker.lexicon) if linker.method != "encoder" else [])
    if linker.method != "lexical":
        cands = [[(a, b) for a, b in spans.candidate_spans(ws, linker.max_span_words)
                  if linker.span_filter.keep(ws, a, b)] for ws in parsed]
        flat = [ws.span_text(a, b) for ws, cs in zip(parsed, cands) for a, b in cs]
        scores = linker.scorer.score(flat)
        pos = 0
        for ws, cs, mentions in zip(parsed, cands, found):
            taken = [False] * len(ws)
            for m in mentions:
                taken[m.start:m.stop] = [True] * (m.stop - m.start)
            mentions += _encoder(ws, cs, scores[pos:pos + len(cs)], linker.threshold, taken)
            pos += len(cs)
    out = []
    for ws, mentions in zip(parsed, found):
        triggers = negation.find_triggers(ws) if linker.negation else []
        out.append([evidence_item(ws, m, linker, triggers) for m in sorted(mentions, key=lambda m: (m.start, m.term))])
    return out


def evidence_item(ws: text_lib.Words, m: _Mention, linker: Linker, triggers: list[negation.Trigger]
                  ) -> dict[str, Any]:
    """The JSON evidence of one mention: span text and char offsets, term, method, score, context, linked."""
    ctx = negation.context(ws, triggers, m.start, m.stop, linker.negation_window) if linker.negation else \
        negation.Context()
    item = dict(span=ws.span_text(m.start, m.stop), start=ws.words[m.start].start, end=ws.words[m.stop - 1].end,
                hpo_id=linker.ontology.ids[m.term], name=linker.ontology.names[m.term], method=m.method,
                score=round(m.score, 4), excluded=ctx.negated, uncertain=ctx.uncertain and not ctx.negated,
                linked=not ctx.negated and (linker.link_uncertain or not ctx.uncertain))
    if m.matched:
        item.update(matched=m.matched, string=m.string_kind)
        if m.synonym_type:
            item["synonym_type"] = m.synonym_type
    if ctx.triggers:
        item["triggers"] = list(ctx.triggers)
    return item


def linked_ids(evidence: Sequence[dict[str, Any]]) -> list[str]:
    """The HPO ids a text's evidence links (excluded and unlinked uncertain mentions left out), first-seen order."""
    return list(dict.fromkeys(e["hpo_id"] for e in evidence if e["linked"]))


def allowed_terms(onto: Ontology, root: str, organ: int | None = None) -> np.ndarray:
    """Term indices strictly under `root` (HP:0000118 by default), optionally only those under one organ system."""
    r = onto.index(root)
    terms = np.array([int(i) for i in onto.subtree(r) if int(i) != r], np.int64)
    if organ is not None:
        terms = np.array([t for t in terms if organ in set(int(o) for o in onto.organ_systems(int(t)))], np.int64)
    return terms
