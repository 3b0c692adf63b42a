"""Length-grouped order (`data.length_group_window`): global batches of captions of similar length.

The shuffled, repeated stream is cut into windows of W global batches (W*G positions, G = the global batch).
Within a window the positions are stably sorted by caption length, cut into W chunks of G, and the chunks are
put in an order drawn from (seed, window index). Global batch k is then one chunk, so its longest caption is
close to its shortest and its length bucket is small more often than the longest of G random captions allows.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, Sequence

import grain
import numpy as np

CACHED_WINDOWS = 4  # windows whose order is kept: readers work on a few consecutive batches at a time


def window_order(lengths: np.ndarray, group: int, seed: int, window: int) -> np.ndarray:
    """Positions of one window in grouped order: stable length sort, chunks of `group`, chunks permuted."""
    chunks = np.argsort(lengths, kind="stable").reshape(-1, group)
    return chunks[np.random.default_rng((seed, window)).permutation(len(chunks))].reshape(-1)


class LengthGroupedMapDataset(grain.MapDataset):
    """`parent` reordered so that each run of `group` positions holds captions of similar length.

    `lengths` is a dataset aligned with `parent` (lengths[i]: the caption length of parent[i]), so grouping the
    lengths dataset itself with the same arguments gives each grouped batch's lengths from its index alone.
    Random access: the order of a window is a pure function of its index, so resume from an index is exact.
    With a finite parent, a last window shorter than `window * group` positions keeps its order.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, lengths: grain.MapDataset, *, window: int, group: int, seed: int):
        super().__init__(parent)
        if window <= 0 or group <= 0:
            raise ValueError(f"window={window} and group={group} must be positive")
        if len(lengths) < len(parent):
            raise ValueError(f"lengths has {len(lengths)} entries for a dataset of {len(parent)}")
        self._lengths, self._seed = lengths, int(seed)
        self._span = window * group
        self._group = group
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # read threads ask for the same window at once

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"LengthGroupedMapDataset(span={self._span}, group={self._group})"

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes get a copy without the lock (unpicklable) or the cache (rebuilt on demand).
        state = dict(self.__dict__)
        state.pop("_lock"), state.pop("_cache")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache, self._lock = OrderedDict(), threading.Lock()

    def _order(self, window: int) -> np.ndarray:
        with self._lock:
            if window in self._cache:
                self._cache.move_to_end(window)
                return self._cache[window]
        start = window * self._span
        lengths = np.asarray(self._lengths._getitems(range(start, start + self._span)))  # pylint: disable=protected-access
        order = window_order(lengths, self._group, self._seed, window) + start
        with self._lock:
            self._cache[window] = order
            while len(self._cache) > CACHED_WINDOWS:
                self._cache.popitem(last=False)
        return order

    def _grouped_index(self, index: int) -> int:
        window, offset = divmod(index, self._span)
        if len(self._parent) < sys.maxsize and (window + 1) * self._span > len(self._parent):
            return index  # a partial last window (finite parent only)
        return int(self._order(window)[offset])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._grouped_index(index)]

    def _getitems(self, indices: Sequence[int]):
        return self._parent._getitems([self._grouped_index(i) for i in indices])  # pylint: disable=protected-access
