"""String-matching baselines against brute-force references, and ranks from any scorer."""
import math
from collections import Counter

import numpy as np
import pytest

from phenolip_jax.evaluate import concept_retrieval, string_match

CANDS = [["Short stature", "Small stature"], ["Tall stature", "Increased body height"], ["Seizure", "Fits"],
         ["Myopia", "Near-sightedness", "Short-sightedness"]]


def test_normalise_and_exact():
    assert string_match.normalise("  Near-Sightedness (severe)! ") == "near sightedness severe"
    rows = string_match.exact_scores(["fits", "Near-sightedness", "nothing"], CANDS)(0, 3)
    np.testing.assert_array_equal(rows, [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


def _reference_fuzzy(query, cands):
    """Python dicts: TF-IDF over trigrams of normalised strings, cosine, best string per candidate."""
    flat = [s for c in cands for s in c]
    df = Counter(g for s in flat for g in set(string_match.trigrams(s)))
    idf = {g: math.log((1 + len(flat)) / (1 + n)) + 1 for g, n in df.items()}

    def vec(s):
        v = {g: c * idf[g] for g, c in Counter(string_match.trigrams(s)).items() if g in idf}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1e-12
        return {g: x / norm for g, x in v.items()}

    q = vec(query)
    return [max(sum(q.get(g, 0) * x for g, x in vec(s).items()) for s in c) for c in cands]


@pytest.mark.parametrize("query", ["short statur", "Nearsightedness", "seizures", "height increased", "zzz"])
def test_fuzzy_matches_reference(query):
    got = string_match.fuzzy_scores([query], CANDS)(0, 1)[0]
    np.testing.assert_allclose(got, _reference_fuzzy(query, CANDS), atol=1e-5)


def test_metrics_from_scores_equal_embedding_metrics():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(30, 8)), rng.normal(size=(50, 8))
    gold = rng.integers(0, 50, 30)
    related = lambda top1, g: top1 == g  # noqa: E731
    a = concept_retrieval.concept_retrieval_metrics(q, c, gold, ks=(1, 10), top1_related=related)
    b = concept_retrieval.concept_metrics_from_scores(lambda s, e: q[s:e] @ c.T, 50, gold, (1, 10), related)
    assert a == b
    sims = [q[i] @ c.T for i in range(30)]
    ranks = [(row >= row[g]).sum() for row, g in zip(sims, gold)]  # pessimistic ties
    assert a["mrr"] == pytest.approx(np.mean(1 / np.array(ranks)))
