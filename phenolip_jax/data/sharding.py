"""Per-host numpy batches -> global jax.Arrays sharded along the batch dimension."""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def batch_sharding(mesh: Mesh, data_axes: Sequence[str] = ("data",)) -> NamedSharding:
    """Leading (batch) dim split over `data_axes` (jointly), other dims replicated."""
    return NamedSharding(mesh, P(tuple(data_axes)))


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh,
              data_axes: Sequence[str] = ("data",)) -> dict[str, jax.Array]:
    """Assemble each host's slice of the batch into one global array per key.

    Every process passes its own per-host batch; the global batch is process_count times larger,
    ordered by process. The per-host batch must divide evenly over this host's devices on the
    data axes.
    """
    sharding = batch_sharding(mesh, data_axes)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
