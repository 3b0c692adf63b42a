"""Metric writers: JSONL (machine-readable), TensorBoard event files and a console progress line."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np


def _to_float(v: Any) -> float | None:
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        return None
    return f


def truncate_metrics(path: str, last_step: int) -> int:
    """Keeps the complete rows of a metrics.jsonl with step <= last_step (atomically); returns the rows dropped.

    A run resumed from the checkpoint at `last_step` replays the steps after it, so their old rows go; a
    partial last line (a killed writer) goes too, so that the next row does not glue onto it.
    """
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.read().split("\n")
    kept, dropped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            keep = int(row["step"]) <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


class MetricLogger:
    """Writes one JSON object per logged step to `workdir/metrics.jsonl` and TensorBoard events.

    Only process 0 writes, so multi-host runs produce one file.
    """

    def __init__(self, workdir: str, total_steps: int, *, tensorboard: bool = True, console: bool = True,
                 resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.console = console and self.enabled
        self._t0 = time.time()
        self._tb = None
        self._fh = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            if resume_step is not None:
                truncate_metrics(os.path.join(workdir, "metrics.jsonl"), resume_step)
            self._fh = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
            if tensorboard:
                from tensorboardX import SummaryWriter

                # purge_step hides TensorBoard events of the steps that are about to run again.
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge)

    def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
        """Logs scalar metrics at `step`; returns the floats written."""
        scalars = {}
        for k, v in metrics.items():
            f = _to_float(v)
            if f is not None:
                scalars[prefix + k] = f
        if not self.enabled:
            return scalars
        record = {"step": int(step), **{k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()}}
        self._fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k.replace("@", "_at_"), v, step)  # TB tags allow no '@'
            self._tb.flush()
        return scalars

    def progress(self, step: int, scalars: dict[str, float], keys: tuple[str, ...] = ("loss",)) -> None:
        """Prints one progress line: step/total, ETA, chosen metrics."""
        if not self.console:
            return
        elapsed = time.time() - self._t0
        frac = step / max(self.total_steps, 1)
        eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
        width = 20
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        shown = " ".join(f"{k}={scalars[k]:.4g}" for k in keys if k in scalars)
        print(f"[{bar}] step {step}/{self.total_steps} {shown} elapsed {elapsed:.0f}s eta {eta:.0f}s", flush=True)
        sys.stdout.flush()

    def close(self) -> None:
        """Flushes and closes the writers."""
        if self._fh:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()
