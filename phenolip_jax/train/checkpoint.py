"""Orbax checkpointing of the train state and the data iterator, with keep-N, content checks and resume fallback.

Orbax (tensorstore OCDBT + zstd) notices truncated or missing array files and broken metadata, but a flipped
byte inside a stored array chunk can restore silently as wrong numbers (measured: docs/reliability.md).
So every save also records a fingerprint per state leaf in the JSON meta item, and `restore` recomputes and
compares them; a checkpoint that fails either check is set aside and an older one is used.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "leaf_fingerprints"  # meta field: {leaf path: [sum, position-weighted sum]} (uint32 each)
UNREADABLE_PREFIX = "unreadable-step-"  # set-aside checkpoints; orbax ignores these names (not `N` / `x_N`)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose restored arrays do not match the fingerprints written with it."""


def _grain_args():
    import grain  # local: grain pulls absl flags machinery that plain restores don't need

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


def _leaf_words(x: jax.Array) -> jax.Array:
    """The leaf's raw bits as a flat uint32 vector (bit-exact, any dtype)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).ravel()
    size = x.dtype.itemsize
    if size >= 4:  # 8-byte dtypes bitcast to a trailing pair of words
        return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()


def _fingerprint(x: jax.Array) -> jax.Array:
    """[sum of words, sum of words * (2i+1)] mod 2**32: any single-bit change or swap alters it.

    Integer sums are associative, so the value is the same for any sharding or reduction order, and it is
    computed where the (possibly multi-host) array lives: no gather of the whole state to one host.
    """
    w = _leaf_words(x)
    odd = jnp.arange(w.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * odd, dtype=jnp.uint32)])


_fingerprints_jit = jax.jit(lambda tree: jax.tree.map(_fingerprint, tree))


def fingerprints(tree: Any) -> dict[str, list[int]]:
    """{leaf path: [sum, weighted sum]} of a pytree of arrays, as plain ints (JSON-ready)."""
    prints = jax.device_get(_fingerprints_jit(tree))
    return {jax.tree_util.keystr(path): [int(v) for v in np.asarray(fp)]
            for path, fp in jax.tree_util.tree_leaves_with_path(prints)}


def _mismatches(expected: dict[str, list[int]], actual: dict[str, list[int]]) -> list[str]:
    keys = sorted(set(expected) | set(actual))
    return [k for k in keys if expected.get(k) != actual.get(k)]


class Checkpointer:
    """Saves `state` (+ data iterator + JSON meta) every N steps; restores the newest readable one."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                enable_async_checkpointing=async_save,
                # A process killed mid-save leaves `<step>.orbax-checkpoint-tmp-*`: never a step, safe to drop.
                cleanup_tmp_directories=True,
                create=True,
            ),
        )

    def all_steps(self) -> list[int]:
        """Steps present on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest step on disk, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any = None, meta: dict | None = None, force: bool = False) -> bool:
        """Starts an (async) save with per-leaf fingerprints in the meta item; returns whether one was started."""
        if not force and not self.manager.should_save(step):
            return False  # skip the fingerprint pass for steps orbax would not save anyway
        # Computed (and fetched) before orbax returns: the loop donates `state` to the next step.
        meta = dict(meta or {}, **{FINGERPRINT_KEY: fingerprints(state)})
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if data_iter is not None:
            items["data"] = _grain_args()[0](data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def _restore_step(self, step: int, abstract_state: Any, data_iter: Any) -> tuple[Any, dict]:
        items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        if data_iter is not None:
            items["data"] = _grain_args()[1](data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        meta = dict(out["meta"] or {})
        expected = meta.pop(FINGERPRINT_KEY, None)
        if expected is None:
            log.warning("checkpoint at step %d has no leaf fingerprints (older format): contents not verified", step)
        else:
            bad = _mismatches(expected, fingerprints(out["state"]))
            if bad:
                raise CorruptCheckpointError(
                    f"{len(bad)} restored arrays differ from the fingerprints saved with them, e.g. {bad[:3]}")
        return out["state"], meta

    def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores `step` (default: newest good one; unreadable or corrupt newer ones are set aside).

        Falling back logs a warning naming each skipped step and moves it to `unreadable-step-N-<time>`
        (kept for inspection, never deleted), so the resumed run can write that step again.
        """
        candidates = [step] if step is not None else list(reversed(self.all_steps()))
        if not candidates:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        errors: list[tuple[int, str]] = []
        for s in candidates:
            try:
                state, meta = self._restore_step(s, abstract_state, data_iter)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back to an older one
                detail = f"{type(e).__name__}: {str(e)[:300]}"
                errors.append((s, detail))
                log.warning("checkpoint at step %d in %s is unreadable or corrupt (%s); trying an older one",
                            s, self.directory, detail)
                continue
            if errors:
                skipped = [e[0] for e in errors]
                log.warning("restored step %d after skipping unreadable checkpoint steps %s", s, skipped)
                if step is None:
                    self._set_aside(skipped)
            return s, state, meta
        raise RuntimeError(f"no readable checkpoint in {self.directory}: "
                           + "; ".join(f"step {s}: {d}" for s, d in errors))

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable step dirs out of orbax's view (process 0), so those steps can be saved again."""
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in steps:
                src = os.path.join(self.directory, str(s))
                if os.path.isdir(src):
                    dst, n = os.path.join(self.directory, f"{UNREADABLE_PREFIX}{s}-{stamp}"), 1
                    while os.path.exists(dst):  # the same step can go bad twice within a second
                        dst, n = os.path.join(self.directory, f"{UNREADABLE_PREFIX}{s}-{stamp}-{n}"), n + 1
                    os.replace(src, dst)
                    log.warning("moved unreadable checkpoint step %d to %s", s, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("phenolip_checkpoint_set_aside")
        self.manager.reload()

    def close(self) -> None:
        """Waits for saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with the given shardings, as a restore target."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
