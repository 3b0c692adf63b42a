"""Cross-modal retrieval on a held-out split: image<->text and image<->phenotype, multi-positive R@K."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phenolip_jax.evaluate import metrics


def dedupe_images(image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each unique image's first occurrence, unique image index of every row)."""
    uniq, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    del uniq
    return first, inverse


def retrieval_report(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    image_ids: np.ndarray,
    phenotype_emb: np.ndarray,
    row_phenotypes: Sequence[Sequence[int]],
    ks: Sequence[int] = (1, 5, 10, 50),
) -> dict[str, float]:
    """R@K for I2T, T2I, I2P, P2I and the chance level of each.

    Rows are (image, caption) pairs; rows sharing an image id are one image with several captions.
    `row_phenotypes[r]` lists the phenotype indices (rows of phenotype_emb) linked to row r.
    """
    first, img_of_row = dedupe_images(np.asarray(image_ids))
    imgs = image_emb[first]
    n_img = len(first)
    img_text = np.zeros((n_img, len(text_emb)), bool)
    img_text[img_of_row, np.arange(len(text_emb))] = True
    img_pheno = np.zeros((n_img, len(phenotype_emb)), bool)
    for r, ph in enumerate(row_phenotypes):
        img_pheno[img_of_row[r], list(ph)] = True
    out: dict[str, float] = {}
    tasks = {
        "i2t": (imgs @ text_emb.T, img_text),
        "t2i": (text_emb @ imgs.T, img_text.T),
        "i2p": (imgs @ phenotype_emb.T, img_pheno),
        "p2i": (phenotype_emb @ imgs.T, img_pheno.T),
    }
    for name, (sim, pos) in tasks.items():
        rec = metrics.retrieval_recall(sim, pos, ks=ks)
        for k in ks:
            out[f"{name}_r@{k}"] = float(rec[f"r@{k}"])
            out[f"{name}_chance_r@{k}"] = float(metrics.chance_recall(pos, k))
    for k in ks:  # the headline chance figure: image-to-text at K
        out[f"chance_r@{k}"] = out[f"i2t_chance_r@{k}"]
    out["num_images"] = float(n_img)
    out["num_texts"] = float(len(text_emb))
    out["num_phenotypes"] = float(len(phenotype_emb))
    return out
