"""Stage-1 evaluation: held-out synonym (or real mention) -> concept retrieval over all candidate terms."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ScoreRows = Callable[[int, int], np.ndarray]  # (start, stop) -> dense scores [stop - start, C] of those queries


def gold_ranks(query_emb: np.ndarray, cand_emb: np.ndarray, gold: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's gold candidate (pessimistic: ties rank against the gold)."""
    return _ranks_and_top1(lambda s, e: query_emb[s:e] @ cand_emb.T, np.asarray(gold, np.int64), chunk)[0]


def _ranks_and_top1(scores: ScoreRows, gold: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    ranks, top1 = np.empty(len(gold), np.int64), np.empty(len(gold), np.int64)
    for s in range(0, len(gold), chunk):
        sims = scores(s, min(s + chunk, len(gold)))
        g = sims[np.arange(sims.shape[0]), gold[s:s + chunk]]
        ranks[s:s + chunk] = (sims >= g[:, None]).sum(axis=1)
        top1[s:s + chunk] = np.argmax(sims, axis=1)
    return ranks, top1


def concept_metrics_from_scores(
    scores: ScoreRows, num_candidates: int, gold: np.ndarray, ks: Sequence[int] = (1, 10),
    top1_related: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Acc@K, MRR and (given `top1_related(top1, gold) -> bool`) hierarchy-aware hit@1 from query scores.

    Any scorer works (embeddings, string matching); ranks are pessimistic, top-1 is the first argmax.
    """
    gold = np.asarray(gold, np.int64)
    ranks, top1 = _ranks_and_top1(scores, gold)
    out = {f"acc@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    if top1_related is not None:
        out["hier@1"] = float(np.mean(top1_related(top1, gold))) if len(gold) else float("nan")
    out["num_queries"] = int(len(gold))
    out["num_candidates"] = int(num_candidates)
    out["chance_acc@1"] = 1.0 / max(num_candidates, 1)
    return out


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
    return concept_metrics_from_scores(lambda s, e: query_emb[s:e] @ cand_emb.T, cand_emb.shape[0], gold, ks,
                                       top1_related)


def group_starts(groups: Sequence[Sequence[Any]]) -> np.ndarray:
    """Start offsets of contiguous groups in their concatenation, for `np.maximum.reduceat` (best per group)."""
    if any(len(g) == 0 for g in groups):
        raise ValueError("every candidate needs at least one string (its name)")
    return np.cumsum([0] + [len(g) for g in groups[:-1]])


def related_parent_child(onto: Any, candidates: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`(top1, gold) -> bool`: the top candidate is the gold term or its direct parent or child."""
    def related(top1: np.ndarray, g: np.ndarray) -> np.ndarray:
        hit = top1 == g
        for n, (a, b) in enumerate(zip(candidates[top1], candidates[g])):
            if not hit[n]:
                hit[n] = b in onto.parents(int(a)) or a in onto.parents(int(b))
        return hit

    return related


def results_table(query_sets: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (query set, method), Acc@1 / Acc@10 / MRR / hier@1 in percent."""
    lines = ["| query set | method | n | Acc@1 | Acc@10 | MRR | hier@1 |", "|---|---|---|---|---|---|---|"]
    for name, methods in query_sets.items():
        for method, m in methods.items():
            cells = " | ".join(f"{100 * m[k]:.1f}" if k in m else "n/a" for k in ("acc@1", "acc@10", "mrr", "hier@1"))
            lines.append(f"| {name} | {method} | {m.get('num_queries', 0)} | {cells} |")
    return "\n".join(lines)
