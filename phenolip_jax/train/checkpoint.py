"""Orbax checkpointing of the train state and the data iterator, with keep-N and resume fallback."""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _grain_args():
    import grain  # local: grain pulls absl flags machinery that plain restores don't need

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:
    """Saves `state` (+ data iterator + JSON meta) every N steps; restores the newest readable one."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                enable_async_checkpointing=async_save,
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
        """Starts an (async) save; returns whether one was started."""
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {}))
        if data_iter is not None:
            items["data"] = _grain_args()[0](data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores `step` (default: newest readable, falling back to older ones when one is corrupt)."""
        candidates = [step] if step is not None else list(reversed(self.all_steps()))
        if not candidates:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        errors = []
        for s in candidates:
            try:
                items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
                if data_iter is not None:
                    items["data"] = _grain_args()[1](data_iter)
                out = self.manager.restore(s, args=ocp.args.Composite(**items))
                if errors:
                    log.warning("restored step %d after skipping unreadable checkpoints: %s", s, errors)
                return s, out["state"], dict(out["meta"] or {})
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back to an older one
                errors.append(f"step {s}: {type(e).__name__}: {str(e)[:200]}")
                log.warning("checkpoint at step %d is unreadable (%s); trying an older one", s, type(e).__name__)
        raise RuntimeError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

    def close(self) -> None:
        """Waits for saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with the given shardings, as a restore target."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
