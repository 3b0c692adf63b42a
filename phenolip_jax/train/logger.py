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


class MetricLogger:
    """Writes one JSON object per logged step to `workdir/metrics.jsonl` and TensorBoard events.

    Only process 0 writes, so multi-host runs produce one file.
    """

    def __init__(self, workdir: str, total_steps: int, *, tensorboard: bool = True, console: bool = True):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.console = console and self.enabled
        self._t0 = time.time()
        self._tb = None
        self._fh = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._fh = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tb"))

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
