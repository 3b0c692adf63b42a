"""Stage-1 evaluation: held-out synonym -> concept retrieval over all candidate terms."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def gold_ranks(query_emb: np.ndarray, cand_emb: np.ndarray, gold: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's gold candidate (pessimistic: ties rank against the gold)."""
    ranks = np.empty(len(gold), np.int64)
    for s in range(0, len(gold), chunk):
        sims = query_emb[s:s + chunk] @ cand_emb.T
        g = sims[np.arange(sims.shape[0]), gold[s:s + chunk]]
        ranks[s:s + chunk] = (sims >= g[:, None]).sum(axis=1)
    return ranks


def concept_retrieval_metrics(
    query_emb: np.ndarray,
    cand_emb: np.ndarray,
    gold: np.ndarray,
    ks: Sequence[int] = (1, 10),
    top1_related: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Acc@K, MRR and (given `top1_related(top1, gold) -> bool`) the hierarchy-aware hit@1.

    `gold` indexes rows of `cand_emb`. Hierarchy-aware: the top candidate is the gold term or its
    direct parent or child.
    """
    gold = np.asarray(gold, np.int64)
    ranks = gold_ranks(query_emb, cand_emb, gold)
    out = {f"acc@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    if top1_related is not None:
        top1 = np.concatenate(
            [np.argmax(query_emb[s:s + 1024] @ cand_emb.T, axis=1) for s in range(0, len(gold), 1024)]
        ) if len(gold) else np.zeros(0, np.int64)
        out["hier@1"] = float(np.mean(top1_related(top1, gold))) if len(gold) else float("nan")
    out["num_queries"] = int(len(gold))
    out["num_candidates"] = int(cand_emb.shape[0])
    out["chance_acc@1"] = 1.0 / max(cand_emb.shape[0], 1)
    return out
