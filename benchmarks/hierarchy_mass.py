"""How much of the targets does the hierarchy hold? Stage 2: the pair itself's share of its target row, by batch
size, uncapped against `loss.hierarchy.own_share`; stage 1: related term pairs per batch and their target mass,
random batches against `data.group_relation='family'`.

Run: python benchmarks/hierarchy_mass.py [--batches 8] [--sizes 64 256 1024 2048] [--groups 4]

Stage 2 uses the seed-0 embedded demo's train split (generated if absent, ~1 min) through the run's own HPO
tables (`pipeline.HpoEncoder`) and target rule (`objectives.pair_targets`, `losses.own_share_targets`): the
figure is the mean over rows of the pair's own weight in its row distribution. Stage 1 uses the default
stage-1 config's text views and batches (`term_batches.stage1_dataset`) and its relation scores
(`objectives.batch_relation_scores`): pairs of views of *different* terms with a positive score, and their
share of all off-diagonal target mass. Nothing is trained; CPU only.
"""
from __future__ import annotations

import argparse
import os

import jax.numpy as jnp
import numpy as np

from phenolip_jax import config_lib, losses
from phenolip_jax.data import demo, pipeline
from phenolip_jax.data import term_batches as tb
from phenolip_jax.data import text_views as tv
from phenolip_jax.data.manifest import read_manifest
from phenolip_jax.ontology import load_ontology, organ_table, sized_ancestor_table
from phenolip_jax.train import objectives


def stage2_own_share(onto, sizes: list[int], batches: int, share: float) -> dict[int, tuple[float, float]]:
    """Batch size -> (uncapped, own_share) mean share of the pair itself in its target row."""
    cfg = config_lib.load_config("stage2")
    folder = demo.generate_demo_dataset(None, image_size=cfg.data.image_size, ontology=onto, seed=0,
                                        **dict(cfg.data.demo))
    train = [r for r in read_manifest(os.path.join(folder, "manifest.jsonl")) if r.split == "train"]
    h = cfg.loss.hierarchy
    enc = pipeline.HpoEncoder(onto, cfg.data.max_hpo, cfg.data.max_ancestors, h.max_hops, cfg.data.max_organs)
    tables = [enc(r.hpo_ids) for r in train]
    rng = np.random.default_rng(0)
    out = {}
    for b in sizes:
        plain, capped = [], []
        for _ in range(batches):
            pick = rng.choice(len(tables), size=b, replace=len(tables) < b)
            batch = {k: jnp.asarray(np.stack([tables[i][k] for i in pick])) for k in tables[0]}
            t = objectives.pair_targets(batch, h)
            rows = np.asarray(t) / np.asarray(t).sum(1, keepdims=True)
            plain.append(np.diag(rows).mean())
            capped.append(np.diag(np.asarray(losses.own_share_targets(t, share))).mean())
        out[b] = (float(np.mean(plain)), float(np.mean(capped)))
    return out


def stage1_related(onto, batches: int, groups: list[int]) -> dict[str, tuple[float, float]]:
    """Batching -> (related term pairs per batch, their share of the off-diagonal target mass)."""
    cfg = config_lib.load_config("stage1")
    h = cfg.loss.hierarchy
    views = tv.build_text_views(onto, holdout_fraction=cfg.data.heldout_fraction, seed=cfg.seed)
    every = np.arange(len(onto))
    anc, hops = sized_ancestor_table(onto, every, h.max_hops, cfg.data.max_ancestors)
    organs = organ_table(onto, every, width=cfg.data.max_organs)
    family = tb.family_groups(onto, views.terms, h.max_hops)
    out = {}
    for g in [1, *groups]:
        ds = tb.stage1_dataset(views, num_terms=cfg.data.terms_per_batch, views_per_term=cfg.data.views_per_term,
                               seed=0, group=g, related=family if g > 1 else None)
        pairs, mass = [], []
        for step in range(batches):
            _, terms = tb.flatten_term_batch(ds[step])
            batch = dict(hpo=jnp.asarray(terms[:, None]), hpo_anc=jnp.asarray(anc[terms][:, None]),
                         hpo_hops=jnp.asarray(hops[terms][:, None]), organs=jnp.asarray(organs[terms]))
            w = np.array(objectives.batch_relation_scores(batch, h))
            np.fill_diagonal(w, 0.0)
            other = terms[:, None] != terms[None, :]
            related = (w > 0) & other
            # a pair of terms counts once (not once per view pair, nor per direction)
            term_pairs = {(min(a, b), max(a, b)) for a, b in zip(*np.nonzero(related)) for a, b in
                          [(int(terms[a]), int(terms[b]))]}
            pairs.append(len(term_pairs))
            mass.append(w[related].sum() / w.sum())
        out["random" if g == 1 else f"family G={g}"] = (float(np.mean(pairs)), float(np.mean(mass)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="random batches per setting")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048], help="stage-2 batch sizes")
    parser.add_argument("--share", type=float, default=0.5, help="loss.hierarchy.own_share to compare")
    parser.add_argument("--groups", type=int, nargs="+", default=[4], help="stage-1 family group sizes G")
    args = parser.parse_args()
    onto = load_ontology()
    print(f"stage 2 (demo seed 0 train split): the pair itself's share of its target row, mean over rows")
    print(f"| batch | uncapped (own_share 0) | own_share {args.share} |\n|---|---|---|")
    for b, (plain, capped) in stage2_own_share(onto, args.sizes, args.batches, args.share).items():
        print(f"| {b} | {100 * plain:.1f}% | {100 * capped:.1f}% |")
    print("\nstage 1 (default config: 128 terms x 2 views): related term pairs per batch and their target mass")
    print("| batching | related term pairs | share of off-diagonal target mass |\n|---|---|---|")
    for name, (pairs, mass) in stage1_related(onto, args.batches, args.groups).items():
        print(f"| {name} | {pairs:.1f} | {100 * mass:.1f}% |")


if __name__ == "__main__":
    main()
