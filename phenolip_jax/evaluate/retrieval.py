"""Cross-modal retrieval (I2T, T2I, I2P, P2I): the one implementation behind eval.json and the eval command.

As CLIP_benchmark: identical captions are one caption (a positive of every image it describes), rows that
share an image id are one image, an image's phenotypes are the union over its rows, and a query is a hit
at K when any of its positives is in its top K. Training-time evaluation (tasks/stage2.py -> eval.json)
and `evaluators.cross_modal_retrieval` (the eval command) both call `retrieval_metrics`.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate import metrics

# Direction names (by the query) and the short names of eval.json / metrics.jsonl.
SHORT_NAMES = {"image_to_text": "i2t", "text_to_image": "t2i", "image_to_phenotype": "i2p",
               "phenotype_to_image": "p2i"}


def first_rows(keys: Sequence[Hashable]) -> np.ndarray:
    """Row index of each distinct key's first occurrence, in first-seen order."""
    first: dict[Hashable, int] = {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    return np.fromiter(first.values(), np.int64, len(first))


def image_terms(image_keys: Sequence[Hashable], row_terms: Sequence[Iterable[Hashable]]) -> list[list[Hashable]]:
    """Per distinct image (first-seen order): the union of its rows' phenotype terms."""
    terms: dict[Hashable, dict[Hashable, None]] = {}
    for key, ts in zip(image_keys, row_terms):
        terms.setdefault(key, {}).update(dict.fromkeys(ts))
    return [list(t) for t in terms.values()]


def _with_chance(rec: dict[str, float], pos: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = dict(rec)
    for k in ks:
        out[f"chance_r@{k}"] = metrics.chance_recall(pos, k)
    return out


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, image_keys: Sequence[Hashable],
                      caption_keys: Sequence[Hashable], row_terms: Sequence[Iterable[Hashable]],
                      phenotype_emb: np.ndarray | None, candidates: Sequence[Hashable],
                      ks: Sequence[int] = (1, 5, 10, 50)) -> dict[str, Any]:
    """Multi-positive R@K (+ chance) per direction from per-row (image, caption) embeddings.

    Row r pairs image `image_keys[r]` with caption `caption_keys[r]` (the caption text, or an id that is
    equal exactly when the texts are) and the phenotype terms `row_terms[r]`; `phenotype_emb[j]` embeds
    `candidates[j]`. Rows of one image (or one caption) must carry the same embedding: the first is used.
    Without candidates (or phenotype_emb None) only image_to_text and text_to_image are scored.
    """
    image_emb, text_emb = np.asarray(image_emb), np.asarray(text_emb)
    if not len(image_emb) == len(text_emb) == len(image_keys) == len(caption_keys) == len(row_terms):
        raise ValueError("image_emb, text_emb, image_keys, caption_keys and row_terms need one entry per row")
    _, _, img_txt = metrics.image_text_positives(list(image_keys), list(caption_keys))
    img = image_emb[first_rows(image_keys)]
    txt = text_emb[first_rows(caption_keys)]
    tasks = {"image_to_text": (img @ txt.T, img_txt), "text_to_image": (txt @ img.T, img_txt.T)}
    candidates = list(candidates)
    if candidates and phenotype_emb is not None:
        img_ph = metrics.phenotype_positives(image_terms(image_keys, row_terms), candidates)
        ph = np.asarray(phenotype_emb)
        tasks["image_to_phenotype"] = (img @ ph.T, img_ph)
        tasks["phenotype_to_image"] = (ph @ img.T, img_ph.T)
    out: dict[str, Any] = {name: _with_chance(metrics.retrieval_recall(sim, pos, ks), pos, ks)
                           for name, (sim, pos) in tasks.items()}
    out.update(n_images=len(img), n_captions=len(txt), n_phenotypes=len(candidates))
    return out


def eval_json(result: dict[str, Any], ks: Sequence[int]) -> dict[str, float]:
    """The flat figures of eval.json (i2t_r@K, i2t_chance_r@K, ..., chance_r@K = image-to-text chance)."""
    out: dict[str, float] = {}
    for name, short in SHORT_NAMES.items():
        if name in result:
            for k in ks:
                out[f"{short}_r@{k}"] = float(result[name][f"r@{k}"])
                out[f"{short}_chance_r@{k}"] = float(result[name][f"chance_r@{k}"])
    for k in ks:  # the headline chance figure: image-to-text at K
        out[f"chance_r@{k}"] = out[f"i2t_chance_r@{k}"]
    out.update(num_images=float(result["n_images"]), num_texts=float(result["n_captions"]),
               num_phenotypes=float(result["n_phenotypes"]))
    return out
