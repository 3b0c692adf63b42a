"""String-matching baselines for held-out synonym -> term retrieval: exact match and normalised fuzzy match.

Each candidate term is known by its strings (its name and its training synonyms). Exact: a query scores 1
on every term with a string equal to it, ignoring case. Fuzzy: strings are normalised (case-folded, non
alphanumerics to spaces) and compared by TF-IDF cosine over character trigrams; a term scores its best
string. Both return `(start, stop) -> [stop - start, C]` score rows for `concept_metrics_from_scores`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from phenolip_jax.evaluate.concept_retrieval import ScoreRows, group_starts

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Case-folded, every run of non-alphanumerics a single space, trimmed."""
    return _NON_ALNUM.sub(" ", text.casefold()).strip()


def trigrams(text: str) -> list[str]:
    """Character trigrams of the normalised text padded with a space on each side."""
    t = f" {normalise(text)} "
    return [t[i:i + 3] for i in range(len(t) - 2)]


def exact_scores(queries: Sequence[str], cand_strings: Sequence[Sequence[str]]) -> ScoreRows:
    """1 for candidates with a string equal to the query (ignoring case), else 0."""
    owners: dict[str, set[int]] = {}
    for c, strings in enumerate(cand_strings):
        for s in strings:
            owners.setdefault(s.casefold().strip(), set()).add(c)
    hits = [sorted(owners.get(q.casefold().strip(), ())) for q in queries]

    def rows(start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, len(cand_strings)), np.float32)
        for r, h in enumerate(hits[start:stop]):
            out[r, h] = 1.0
        return out

    return rows


def _tfidf(texts: Sequence[str], vocab: dict[str, int], idf: np.ndarray) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        grams, counts = np.unique(np.array([vocab[g] for g in trigrams(text) if g in vocab], np.int64),
                                  return_counts=True)
        rows += [r] * len(grams)
        cols += grams.tolist()
        vals += (counts * idf[grams]).tolist()
    m = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(texts), len(vocab)))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1))).ravel()
    return sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m


def fuzzy_scores(queries: Sequence[str], cand_strings: Sequence[Sequence[str]]) -> ScoreRows:
    """Best TF-IDF trigram cosine between the normalised query and each candidate's strings."""
    flat = [s for strings in cand_strings for s in strings]
    starts = group_starts(cand_strings)
    vocab: dict[str, int] = {}
    df: list[int] = []
    for s in flat:
        for g in set(trigrams(s)):
            if g not in vocab:
                vocab[g] = len(vocab)
                df.append(0)
            df[vocab[g]] += 1
    idf = (np.log((1 + len(flat)) / (1 + np.asarray(df, np.float64))) + 1).astype(np.float32)
    cand = _tfidf(flat, vocab, idf).T.tocsr()
    query = _tfidf(list(queries), vocab, idf)

    def rows(start: int, stop: int) -> np.ndarray:
        per_string = (query[start:stop] @ cand).toarray()
        return np.maximum.reduceat(per_string, starts, axis=1)

    return rows
