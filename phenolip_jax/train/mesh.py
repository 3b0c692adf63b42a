"""Device mesh and sharding rules: parameters by regex / FSDP heuristic, batches along the data axes."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from phenolip_jax.data import sharding as data_sharding

# Activations are sharded along both axes: FSDP is data parallel for the batch, sharded for the weights.
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ('data', 'fsdp') mesh; data=-1 takes every device not used by fsdp."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"config.mesh.fsdp={fsdp} must divide the device count {n}")
    if data == -1:
        data = n // fsdp
    if data * fsdp != n:
        raise ValueError(f"config.mesh data={data} x fsdp={fsdp} != {n} devices")
    return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2, devices=devices)


def path_str(path: tuple[Any, ...]) -> str:
    """Turns a jax tree path into 'a/b/c' for regex matching."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """Shards the largest dimension divisible by the fsdp size; small arrays stay replicated."""
    if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, tuple]] = (), min_size: int = 2**14) -> Any:
    """Shardings for every leaf of a (shape) tree: first matching regex rule, else the FSDP heuristic.

    Rules are `(regex, spec_tuple)` searched in the leaf's path; the same rules then cover optimizer
    moments, whose paths end with the parameter's path.
    """
    compiled = [(re.compile(pattern), P(*spec)) for pattern, spec in rules]
    fsdp_size = mesh.shape["fsdp"]

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        name = path_str(path)
        for pattern, spec in compiled:
            if pattern.search(name):
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, fsdp_spec(shape, fsdp_size, min_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading dimension split over the data and fsdp axes."""
    return data_sharding.batch_sharding(mesh, BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on the mesh."""
    return NamedSharding(mesh, P())


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles per-process numpy batches into global arrays sharded along the batch axes."""
    return data_sharding.to_global(batch, mesh, BATCH_AXES)


def host_copy(tree: Any) -> Any:
    """NumPy copy of a pytree on every process, gathering arrays sharded across processes (FSDP, several hosts).

    `jax.device_get` cannot fetch an array whose shards live on other processes' devices; such leaves are
    resharded to replicated (`process_allgather`), then read from a local copy.
    """
    def one(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)
