"""Graph computations that turn per-term parent lists into the CSR arrays of an `Ontology`."""
from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import numpy as np

from phenolip_jax.ontology.hpo import PHENOTYPIC_ABNORMALITY_ID, ROOT_ID, Ontology, OntologyFormatError


@dataclasses.dataclass(frozen=True)
class RawTerms:
    """What the parser reads from the file: current terms sorted by id, plus alias resolution."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    definitions: tuple[str, ...]
    exact_synonyms: tuple[tuple[str, ...], ...]
    other_synonyms: tuple[tuple[str, ...], ...]
    parent_ids: tuple[tuple[str, ...], ...]
    aliases: dict[str, str]  # alt or obsolete id -> current id
    obsolete_candidates: dict[str, tuple[str, ...]]
    release: str


def csr_from_lists(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) int32 arrays for a list of index lists."""
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    flat = [x for r in rows for x in r]
    return indptr, np.asarray(flat, dtype=np.int32)


def topological_order(parents: Sequence[Sequence[int]]) -> list[int]:
    """Indices ordered so every term comes after all its parents; raises on an is-a cycle."""
    n = len(parents)
    pending = [len(p) for p in parents]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].append(i)
    queue = deque(i for i in range(n) if pending[i] == 0)
    order = []
    while queue:
        i = queue.popleft()
        order.append(i)
        for c in children[i]:
            pending[c] -= 1
            if pending[c] == 0:
                queue.append(c)
    if len(order) != n:
        raise OntologyFormatError(f"is_a relations contain a cycle ({n - len(order)} terms involved)")
    return order


def ancestor_closure(parents: Sequence[Sequence[int]]) -> list[dict[int, int]]:
    """Per term, {ancestor: shortest is-a hops}, excluding the term itself."""
    closure: list[dict[int, int]] = [{} for _ in parents]
    for i in topological_order(parents):
        hops = closure[i]
        for p in parents[i]:
            hops[p] = 1
        for p in parents[i]:
            for a, h in closure[p].items():
                if hops.get(a, h + 2) > h + 1:
                    hops[a] = h + 1
    return closure


def depths(children: Sequence[Sequence[int]], root: int | None) -> np.ndarray:
    """Shortest is-a path length from each term up to `root` (BFS downwards); -1 when unreachable."""
    depth = np.full(len(children), -1, dtype=np.int32)
    if root is None:
        return depth
    depth[root] = 0
    queue = deque([root])
    while queue:
        i = queue.popleft()
        for c in children[i]:
            if depth[c] < 0:
                depth[c] = depth[i] + 1
                queue.append(c)
    return depth


def build_ontology(raw: RawTerms, source_sha256: str) -> Ontology:
    """Index the raw terms and compute children, closure, depth and organ systems."""
    index = {hpo_id: i for i, hpo_id in enumerate(raw.ids)}
    # Parents that are not current terms (obsolete or undeclared) would dangle: the parser keeps only
    # current ones, so a KeyError here means the parser broke that contract.
    parents = [sorted(index[p] for p in ps) for ps in raw.parent_ids]
    children: list[list[int]] = [[] for _ in parents]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].append(i)  # i ascends, so each child list comes out sorted

    closure = ancestor_closure(parents)
    anc_rows = [sorted(c) for c in closure]
    anc_hops = [[closure[i][a] for a in row] for i, row in enumerate(anc_rows)]
    anc_indptr, anc_indices = csr_from_lists(anc_rows)
    _, anc_hops_flat = csr_from_lists(anc_hops)

    pa = index.get(PHENOTYPIC_ABNORMALITY_ID)
    organ_ids = np.asarray(children[pa] if pa is not None else [], dtype=np.int32)
    organ_set = set(organ_ids.tolist())
    organ_rows = [sorted(({i} | closure[i].keys()) & organ_set) for i in range(len(parents))]
    parent_indptr, parent_indices = csr_from_lists(parents)
    child_indptr, child_indices = csr_from_lists(children)
    organ_indptr, organ_indices = csr_from_lists(organ_rows)
    return Ontology(
        ids=raw.ids, names=raw.names, definitions=raw.definitions,
        exact_synonyms=raw.exact_synonyms, other_synonyms=raw.other_synonyms,
        parent_indptr=parent_indptr, parent_indices=parent_indices,
        child_indptr=child_indptr, child_indices=child_indices,
        anc_indptr=anc_indptr, anc_indices=anc_indices, anc_hops=anc_hops_flat,
        depth=depths(children, index.get(ROOT_ID)),
        organ_indptr=organ_indptr, organ_indices=organ_indices, organ_system_ids=organ_ids,
        aliases={k: index[v] for k, v in raw.aliases.items()},
        obsolete_candidates=raw.obsolete_candidates,
        release=raw.release, source_sha256=source_sha256,
    )
