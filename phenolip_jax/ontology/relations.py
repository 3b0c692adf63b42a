"""Relations between HPO terms as vectorised numpy, and the padded tables an on-device loss needs.

The relation of term b to term a (`relation_codes[i, j]` for a = a_idx[i], b = b_idx[j]):

  SAME               a == b                                              score 1
  ANCESTOR           b is an is-a ancestor of a, h hops away, h <= max_hops    score w[h]
  DESCENDANT         b is an is-a descendant of a, h hops away, h <= max_hops  score w[h]
  SAME_ORGAN_SYSTEM  none of the above, and they share an organ system       score organ_weight
  UNRELATED          otherwise                                              score 0

with h the shortest is-a path length and w = hop_weights(max_hops, hop_decay), i.e. w[h] = hop_decay**h
rounded once to float32. Device code reproduces these numbers exactly from `ancestor_table` and
`organ_table` by the rule: if b appears in a's table at hop h -> w[h] (h == 0 is SAME); elif a appears in
b's table at hop h -> w[h]; elif a's and b's organ rows share a non-negative id -> organ_weight; else 0.
Gather w from `hop_weights` instead of computing pow on device, so host and device agree bit for bit.
"""
from __future__ import annotations

import enum
import warnings

import numpy as np

from phenolip_jax.ontology.hpo import Ontology


class Relation(enum.IntEnum):
    """How term b relates to term a."""

    SAME = 0
    ANCESTOR = 1  # b is an ancestor of a within max_hops
    DESCENDANT = 2  # b is a descendant of a within max_hops
    SAME_ORGAN_SYSTEM = 3
    UNRELATED = 4


def _check_indices(onto: Ontology, idx: np.ndarray | list, name: str, ndim: int = 1,
                   allow_pad: bool = False) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a {ndim}-d integer array, got shape {arr.shape} dtype {arr.dtype}")
    low = -1 if allow_pad else 0
    if arr.size and (arr.min() < low or arr.max() >= len(onto)):
        raise IndexError(f"{name} holds indices outside [{low}, {len(onto)})")
    return arr.astype(np.int64)


def _check_max_hops(max_hops: int) -> int:
    if int(max_hops) != max_hops or max_hops < 0:
        raise ValueError(f"max_hops must be a non-negative integer, got {max_hops!r}")
    return int(max_hops)


def hop_weights(max_hops: int, hop_decay: float) -> np.ndarray:
    """float32 [max_hops + 1]: w[0] = 1 (same term), w[h] = hop_decay**h for an ancestor/descendant h hops away."""
    max_hops = _check_max_hops(max_hops)
    if not 0.0 <= hop_decay <= 1.0:
        raise ValueError(f"hop_decay must lie in [0, 1], got {hop_decay!r}")
    return (float(hop_decay) ** np.arange(max_hops + 1, dtype=np.float64)).astype(np.float32)


def hops_up(onto: Ontology, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """int32 [len(x), len(y)]: shortest is-a hops from x[i] up to y[j], 0 if equal, -1 if y[j] is not above x[i]."""
    x = _check_indices(onto, x, "x")
    y = _check_indices(onto, y, "y")
    keys = onto._closure_keys
    query = x[:, None] * len(onto) + y[None, :]
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    found = (keys[pos] == query) if len(keys) else np.zeros(query.shape, dtype=bool)
    hops = np.where(found, onto.anc_hops[pos] if len(keys) else 0, -1).astype(np.int32)
    hops[x[:, None] == y[None, :]] = 0
    return hops


def _shares_organ(onto: Ontology, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    member = onto._organ_membership
    return (member[a] @ member[b].T) > 0


def relation_codes(onto: Ontology, a_idx: np.ndarray, b_idx: np.ndarray, max_hops: int = 2) -> np.ndarray:
    """int8 [len(a), len(b)] of `Relation` codes: how b_idx[j] relates to a_idx[i]."""
    max_hops = _check_max_hops(max_hops)
    a = _check_indices(onto, a_idx, "a_idx")
    b = _check_indices(onto, b_idx, "b_idx")
    up = hops_up(onto, a, b)  # b above a
    down = hops_up(onto, b, a).T  # a above b, i.e. b below a
    codes = np.full(up.shape, Relation.UNRELATED, dtype=np.int8)
    codes[_shares_organ(onto, a, b)] = Relation.SAME_ORGAN_SYSTEM
    codes[(down >= 1) & (down <= max_hops)] = Relation.DESCENDANT
    codes[(up >= 1) & (up <= max_hops)] = Relation.ANCESTOR
    codes[up == 0] = Relation.SAME
    return codes


def relation_scores(onto: Ontology, a_idx: np.ndarray, b_idx: np.ndarray, max_hops: int = 2,
                    hop_decay: float = 0.5, organ_weight: float = 0.0) -> np.ndarray:
    """float32 [len(a), len(b)] soft-positive weights (see the module docstring for the rule)."""
    if not 0.0 <= organ_weight <= 1.0:
        raise ValueError(f"organ_weight must lie in [0, 1], got {organ_weight!r}")
    weights = hop_weights(max_hops, hop_decay)
    a = _check_indices(onto, a_idx, "a_idx")
    b = _check_indices(onto, b_idx, "b_idx")
    up = hops_up(onto, a, b)
    down = hops_up(onto, b, a).T
    near_up = (up >= 0) & (up <= max_hops)
    near_down = (down >= 1) & (down <= max_hops)
    scores = np.zeros(up.shape, dtype=np.float32)
    scores[_shares_organ(onto, a, b)] = np.float32(organ_weight)
    scores[near_down] = weights[down[near_down]]
    scores[near_up] = weights[up[near_up]]
    return scores


def set_relation_scores(onto: Ontology, a_sets: np.ndarray, b_sets: np.ndarray, max_hops: int = 2,
                        hop_decay: float = 0.5, organ_weight: float = 0.0) -> np.ndarray:
    """float32 [n, m]: max of `relation_scores` over the valid (non -1) pairs of term sets a_sets[i], b_sets[j].

    a_sets [n, M] and b_sets [m, M'] hold term indices padded with -1 (a caption linked to several
    terms). A row with no valid index scores 0 against everything, itself included: an empty caption
    is not a positive for anything.
    """
    a = _check_indices(onto, a_sets, "a_sets", ndim=2, allow_pad=True)
    b = _check_indices(onto, b_sets, "b_sets", ndim=2, allow_pad=True)
    (n, ma), (m, mb) = a.shape, b.shape
    if 0 in (n, ma, m, mb):
        return np.zeros((n, m), dtype=np.float32)
    flat = relation_scores(onto, np.maximum(a.ravel(), 0), np.maximum(b.ravel(), 0),
                           max_hops=max_hops, hop_decay=hop_decay, organ_weight=organ_weight)
    valid = (a.ravel() >= 0)[:, None] & (b.ravel() >= 0)[None, :]
    flat = np.where(valid, flat, np.float32(0))  # scores are >= 0, so 0 is neutral for the max
    return flat.reshape(n, ma, m, mb).max(axis=(1, 3))


def _pad_rows(rows: np.ndarray, values: list[np.ndarray], n: int, width: int | None) -> list[np.ndarray]:
    # rows must be sorted; each row's entries keep their order and are cut at `width`.
    counts = np.bincount(rows, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(rows)) - np.repeat(offsets, counts)
    w = max(int(counts.max()) if n else 0, 1) if width is None else width
    keep = col < w
    out = []
    for v in values:
        table = np.full((n, w), -1, dtype=np.int32)
        table[rows[keep], col[keep]] = v[keep]
        out.append(table)
    return out


def _csr_gather(indptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # (row number in idx, position in the flat CSR array) for every entry of the selected rows.
    starts, counts = indptr[idx].astype(np.int64), (indptr[idx + 1] - indptr[idx]).astype(np.int64)
    rows = np.repeat(np.arange(len(idx)), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(starts, counts)
    return rows, pos


def _check_width(width: int | None) -> None:
    if width is not None and (int(width) != width or width < 1):
        raise ValueError(f"width must be a positive integer or None, got {width!r}")


def ancestor_table(onto: Ontology, idx: np.ndarray, max_hops: int,
                   width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(anc, hops), int32 [n, A]: each term's ancestors-or-self within max_hops, nearest first, -1 padded.

    Column 0 is the term itself at hop 0; the rest are sorted by (hops, index). A is the largest row
    count (at least 1) unless `width` is given: then rows are padded or truncated to it, dropping the
    farthest ancestors first; a truncated table no longer reproduces `relation_scores` for the dropped
    ancestors (check `width >= ancestor_table(onto, idx, max_hops)[0].shape[1]` to be exact).
    """
    max_hops = _check_max_hops(max_hops)
    _check_width(width)
    idx = _check_indices(onto, idx, "idx")
    rows, pos = _csr_gather(onto.anc_indptr, idx)
    near = onto.anc_hops[pos] <= max_hops
    rows = np.concatenate([np.arange(len(idx)), rows[near]])
    anc = np.concatenate([idx, onto.anc_indices[pos[near]]])
    hops = np.concatenate([np.zeros(len(idx), dtype=np.int64), onto.anc_hops[pos[near]]])
    order = np.lexsort((anc, hops, rows))
    return tuple(_pad_rows(rows[order], [anc[order], hops[order]], len(idx), width))


def sized_ancestor_table(onto: Ontology, idx: np.ndarray, max_hops: int, width: int = 0, *, strict: bool = False,
                         field: str = "config.data.max_ancestors") -> tuple[np.ndarray, np.ndarray]:
    """`ancestor_table` sized from the ontology and hops (width 0), or cut at `width` only with a warning.

    A cut row loses its farthest ancestors, whose pairs then get target 0 on the device while the host
    rule (`relation_scores`) scores them: so a width below the need warns with the number of cut terms,
    and raises ValueError under `strict`.
    """
    if int(width) != width or width < 0:
        raise ValueError(f"{field}={width!r}: use 0 (sized from the ontology) or a positive width")
    anc, hops = ancestor_table(onto, idx, max_hops)
    need = anc.shape[1]
    if not width or width == need:
        return anc, hops
    if width > need:
        pad = np.full((len(anc), width - need), -1, np.int32)
        return np.concatenate([anc, pad], 1), np.concatenate([hops, pad], 1)
    cut = int(((anc >= 0).sum(1) > width).sum())
    msg = (f"{field}={width} cuts the ancestor table of {cut} of {len(anc)} terms (max_hops={max_hops} needs "
           f"{need}; 0 sizes it from the ontology): their farthest ancestors would get hierarchical target 0")
    if strict:
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=2)
    return anc[:, :width], hops[:, :width]


def organ_table(onto: Ontology, idx: np.ndarray, width: int | None = None) -> np.ndarray:
    """int32 [n, O]: each term's organ systems (term indices, ascending), -1 padded; O = max count (>= 1) or width."""
    _check_width(width)
    idx = _check_indices(onto, idx, "idx")
    rows, pos = _csr_gather(onto.organ_indptr, idx)
    return _pad_rows(rows, [onto.organ_indices[pos]], len(idx), width)[0]
