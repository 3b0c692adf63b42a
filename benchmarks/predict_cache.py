"""Time predict on a stage-2 run: the first call (phenotype embeddings encoded) against a second (read from the
run's phenotype cache), each as the user runs it (`python -m phenolip_jax.main --config=configs/predict.py`).

Usage: python benchmarks/predict_cache.py [--run workdirs/stage2] [--images N] [--candidates all]
The run is copied (without its cache) into a temporary folder, so the first call really encodes; the images are
the first N test images of the demo the run trained on (a run on other data: pass --image_folder). Prints both
wall-clock times, their ratio and the cache file's size.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_test_images(run: str, n: int, dest: str) -> str:
    """Copies the first n test images of the demo `run` trained on into dest; returns dest."""
    from phenolip_jax.data import demo

    cfg = json.load(open(os.path.join(run, "config.json")))
    if cfg.get("data", {}).get("source") != "demo":
        raise SystemExit(f"{run} did not train on the demo: pass --image_folder")
    sizes = cfg["data"]["demo"]
    folder = demo.generate_demo_dataset(cfg["data"].get("demo_dir") or None, seed=int(cfg.get("seed", 0)),
                                        image_size=int(cfg["data"]["image_size"]), verbose=False, **sizes)
    records = [json.loads(line) for line in open(os.path.join(folder, "manifest.jsonl"))]
    test = [r["image"] for r in records if r["split"] == "test"][:n]
    os.makedirs(dest, exist_ok=True)
    for i, image in enumerate(test):
        shutil.copy(os.path.join(folder, image), os.path.join(dest, f"{i:03d}{os.path.splitext(image)[1]}"))
    return dest


def predict(run: str, images: str, out: str, candidates: str) -> tuple[float, dict]:
    """Wall-clock seconds of one predict command and its summary line."""
    cmd = [sys.executable, "-m", "phenolip_jax.main", "--config=configs/predict.py", f"--config.checkpoint={run}",
           f"--config.images={images}", f"--config.candidates={candidates}", f"--workdir={out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run predict twice on a cache-less copy of the run and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="workdirs/stage2", help="a finished stage-2 workdir")
    parser.add_argument("--images", type=int, default=15, help="test images of the run's demo to predict")
    parser.add_argument("--image_folder", default="", help="a folder of images instead of the demo's")
    parser.add_argument("--candidates", default="all", help="predict's config.candidates ('all' = 18,386 terms)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("phenotype_cache", "teacher"))
        images = args.image_folder or demo_test_images(args.run, args.images, os.path.join(tmp, "images"))
        first, s1 = predict(run, images, os.path.join(tmp, "p1"), args.candidates)
        second, s2 = predict(run, images, os.path.join(tmp, "p2"), args.candidates)
        size = os.path.getsize(s2["phenotype_cache"]) if s2["phenotype_cache"] else 0
    print(f"predict on {s1['images']} images, {s1['candidates']} candidate phenotypes ({args.run})")
    print(f"first  (encodes {s1['phenotypes_encoded']} phenotypes): {first:7.1f} s")
    print(f"second (reads {s2['phenotypes_cached']} from the cache):  {second:7.1f} s")
    print(f"ratio first / second: {first / second:.1f}x; cache file {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
