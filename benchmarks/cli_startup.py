"""Time how soon a command answers a config mistake and `--list_config`, against importing every stage module
(what main.py did before it validated first), in the same run.

Usage: python benchmarks/cli_startup.py [--repeats 3]
Prints, per config, the best wall-clock seconds of `--list_config` and of a config error (exit 2), then the time
of `import` of all stage modules in a fresh interpreter, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One invalid field per config: each must fail validation (exit 2) before any stage module loads.
MISTAKES = {"stage1": "--config.text.remat=bogus", "stage2": "--config.model.remat=bogus",
            "eval": "--config.evaluators=(bogus,)", "export": "--config.formats=(bogus,)",
            "predict": "--config.checkpoint=/no/such/run", "ablation": "--config.arms=(bogus,)"}
STAGES = ("phenolip_jax.tasks.stage1", "phenolip_jax.tasks.stage2", "phenolip_jax.tasks.ablation",
          "phenolip_jax.tasks.aot", "phenolip_jax.evaluate.run", "phenolip_jax.evaluate.predict",
          "phenolip_jax.convert.export")


def best_of(args: list[str], repeats: int, expect: int) -> float:
    """Best wall-clock seconds of `python *args` over `repeats` runs (exit code checked)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != expect:
            raise SystemExit(f"{args}: exit {proc.returncode}, expected {expect}: {proc.stderr[-2000:]}")
    return min(times)


def main() -> None:
    """Time each config's --list_config and config error, then the stage imports; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    worst = 0.0
    print(f"{'config':<10} {'--list_config':>14} {'config error':>13}  (seconds, best of {args.repeats})")
    for name, mistake in MISTAKES.items():
        listed = best_of(["-m", "phenolip_jax.main", f"--config=configs/{name}.py", "--list_config"], args.repeats, 0)
        error = best_of(["-m", "phenolip_jax.main", f"--config=configs/{name}.py", mistake, "--workdir=/tmp/_cli"],
                        args.repeats, 2)
        worst = max(worst, listed, error)
        print(f"{name:<10} {listed:>14.2f} {error:>13.2f}")
    imports = best_of(["-c", "; ".join(f"import {m}" for m in STAGES)], args.repeats, 0)
    print(f"importing every stage module (before: paid first): {imports:.2f} s")
    print(f"slowest answer {worst:.2f} s (goal < 3 s); the stage imports alone take {imports / worst:.1f}x that")


if __name__ == "__main__":
    main()
