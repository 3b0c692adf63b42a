"""Zero-shot image -> phenotype on phenotypes never seen in training, reported apart from the seen ones.

An image is *unseen* when one of its phenotypes never occurs in the training split, *seen* otherwise. Each
group is scored among its own candidates (top-1 and R@K: unseen images among the unseen phenotypes only,
seen images among the seen ones) and among all phenotypes, exactly and hierarchy-aware (the top-1
candidate is a gold term or its parent / child within `max_hops`). Keys are `zs_<group>_<metric>`, fractions,
each with its chance level (`zs_<group>_chance_<metric>`, `_all_chance_top1`, `_hier_chance_top1`), and the
unseen group with the score of the image-free rule "name a seen relative" (`zs_unseen_parent_rule_hier_top1`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate import metrics
from phenolip_jax.evaluate.evaluators import needs_images
from phenolip_jax.ontology import Relation, relation_codes

DEFAULT_MAX_HOPS = 1  # hierarchy-aware credit: the prediction is a gold term's parent or child
GROUPS = ("seen", "unseen")


def related_phenotypes(onto: Any, hpo_ids: Sequence[str], max_hops: int = DEFAULT_MAX_HOPS) -> np.ndarray:
    """bool [C, C]: candidate j is an ancestor or descendant of candidate i within `max_hops` is-a steps."""
    idx = np.array([onto.index(h) for h in hpo_ids], np.int64)
    codes = relation_codes(onto, idx, idx, max_hops)
    return np.isin(codes, (Relation.ANCESTOR, Relation.DESCENDANT))


def unseen_zero_shot(sim: np.ndarray, positives: np.ndarray, seen: np.ndarray, related: np.ndarray,
                     ks: Sequence[int] = (10,)) -> dict[str, float]:
    """Seen / unseen zero-shot scores of images [N, C] `sim` against phenotypes (`seen` [C] marks trained ones).

    `positives` [N, C] marks each image's gold phenotypes; `related` [C, C] the hierarchy-aware credit.
    Ties count against the gold (pessimistic, as every retrieval figure here).
    """
    sim, pos = np.asarray(sim, np.float64), np.asarray(positives, bool)
    seen, related = np.asarray(seen, bool), np.asarray(related, bool)
    if sim.shape != pos.shape or seen.shape != (sim.shape[1],) or related.shape != (sim.shape[1],) * 2:
        raise ValueError(f"shapes disagree: sim {sim.shape}, positives {pos.shape}, seen {seen.shape}, "
                         f"related {related.shape}")
    # Gold, or a parent / child of a gold term, earns hierarchy-aware credit.
    hier = pos | ((pos.astype(np.int64) @ related.astype(np.int64)) > 0)
    image_unseen = (pos & ~seen).any(axis=1)
    out: dict[str, float] = {}
    for group, images, cands in (("seen", ~image_unseen & pos.any(axis=1), seen), ("unseen", image_unseen, ~seen)):
        out[f"zs_{group}_images"] = float(images.sum())
        out[f"zs_{group}_phenotypes"] = float(cands.sum())
        if not images.any() or not cands.any():
            continue  # no such images or candidates (e.g. a dataset without held-out phenotypes)
        own_sim, own_pos = sim[images][:, cands], pos[images][:, cands]
        rec = metrics.retrieval_recall(own_sim, own_pos, ks=sorted({1, *ks}))
        out[f"zs_{group}_top1"] = rec["r@1"]
        out[f"zs_{group}_chance_top1"] = metrics.chance_recall(own_pos, 1)
        for k in ks:
            out[f"zs_{group}_r@{k}"] = rec[f"r@{k}"]
            out[f"zs_{group}_chance_r@{k}"] = metrics.chance_recall(own_pos, k)
        out[f"zs_{group}_all_top1"] = metrics.retrieval_recall(sim[images], pos[images], ks=(1,))["r@1"]
        out[f"zs_{group}_all_chance_top1"] = metrics.chance_recall(pos[images], 1)
        out[f"zs_{group}_hier_top1"] = metrics.retrieval_recall(sim[images], hier[images], ks=(1,))["r@1"]
        out[f"zs_{group}_hier_chance_top1"] = metrics.chance_recall(hier[images], 1)
    if image_unseen.any():
        # The trivial rule "name a seen relative of the gold term (its parent)" needs no image at all: the
        # hierarchy-aware score among all phenotypes means something only above this rule's score.
        out["zs_unseen_parent_rule_hier_top1"] = float((hier[image_unseen][:, seen]).any(axis=1).mean())
    return out


def unseen_report(image_emb: np.ndarray, image_ids: Sequence[Any], phenotype_emb: np.ndarray,
                  row_phenotypes: Sequence[Sequence[int]], seen: np.ndarray, related: np.ndarray,
                  ks: Sequence[int] = (10,)) -> dict[str, float]:
    """`unseen_zero_shot` from per-pair rows: rows sharing an image id are one image (phenotypes united)."""
    _, first, img_of_row = np.unique(np.asarray(image_ids), return_index=True, return_inverse=True)
    pos = np.zeros((len(first), len(phenotype_emb)), bool)
    for r, ph in enumerate(row_phenotypes):
        pos[img_of_row[r], list(ph)] = True
    return unseen_zero_shot(np.asarray(image_emb)[first] @ np.asarray(phenotype_emb).T, pos, seen, related, ks)


def evaluate_encoder(encoder: Any, images: Sequence[Any], gold: Sequence[Sequence[str]], candidates: Sequence[str],
                     train_hpo: set[str], onto: Any, max_hops: int = DEFAULT_MAX_HOPS,
                     templates: Sequence[str] | None = None, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """The eval command's entry: unique test images with their gold HPO ids, candidates, training HPO ids."""
    needs_images(encoder)
    if not train_hpo:
        raise ValueError("no training phenotypes given: the dataset needs a 'train' split to tell unseen ones")
    cands = list(candidates)
    at = {h: i for i, h in enumerate(cands)}
    pos = np.zeros((len(gold), len(cands)), bool)
    for i, g in enumerate(gold):
        pos[i, [at[h] for h in g if h in at]] = True
    sim = encoder.encode_images(images) @ encoder.encode_phenotypes(cands, templates).T
    seen = np.array([h in train_hpo for h in cands])
    out = unseen_zero_shot(sim, pos, seen, related_phenotypes(onto, cands, max_hops), ks)
    out["max_hops"] = float(max_hops)
    return out


def markdown(scores: dict[str, float]) -> list[str]:
    """Report lines: one table row per group (percentages), in the evaluation report's style."""
    ks = sorted(int(k.split("@")[1]) for k in scores if k.startswith("zs_seen_r@") or k.startswith("zs_unseen_r@"))
    k = ks[0] if ks else 10
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = ["## Zero-shot on seen and unseen phenotypes (unseen = never in the train split)", "",
             f"| images | n images | n candidates | top-1 (chance) | R@{k} (chance) | top-1 among all (chance) | "
             "hierarchy-aware top-1 among all (chance; seen-relative rule) |", "|---|---|---|---|---|---|---|"]
    for g in GROUPS:
        s = lambda key: scores.get(f"zs_{g}_{key}")  # noqa: E731
        rule = f"; {pct(s('parent_rule_hier_top1'))}" if s("parent_rule_hier_top1") is not None else ""
        lines.append(f"| {g} | {int(s('images') or 0)} | {int(s('phenotypes') or 0)} | {pct(s('top1'))} "
                     f"({pct(s('chance_top1'))}) | {pct(s(f'r@{k}'))} ({pct(s(f'chance_r@{k}'))}) | "
                     f"{pct(s('all_top1'))} ({pct(s('all_chance_top1'))}) | {pct(s('hier_top1'))} "
                     f"({pct(s('hier_chance_top1'))}{rule}) |")
    return lines + ["", "Top-1 and R@K rank a group's images among that group's phenotypes only; 'among all' ranks "
                    "them among every phenotype; hierarchy-aware credits a gold term's parent or child. The "
                    "seen-relative rule names a seen parent or child of the gold term without looking at the "
                    "image: a hierarchy-aware score at or below it shows nothing.", ""]
