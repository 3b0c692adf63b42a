"""The parsed HPO as an immutable bundle of numpy arrays, with id resolution and graph queries."""
from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Mapping

import numpy as np

ROOT_ID = "HP:0000001"  # 'All': depth is measured from here.
PHENOTYPIC_ABNORMALITY_ID = "HP:0000118"  # its children are the organ systems.

# Fields stored as int32 arrays; every other field is text/metadata (JSON in the cache).
ARRAY_FIELDS = (
    "parent_indptr", "parent_indices",
    "child_indptr", "child_indices",
    "anc_indptr", "anc_indices", "anc_hops",
    "depth",
    "organ_indptr", "organ_indices",
    "organ_system_ids",
)


class UnknownHPOIdError(KeyError):
    """An HPO id that is neither a current term, an alt_id nor a resolvable obsolete id."""

    def __str__(self) -> str:
        # KeyError's default __str__ shows repr(message); keep the message readable.
        return str(self.args[0]) if self.args else ""


class ObsoleteHPOIdError(UnknownHPOIdError):
    """An obsolete HPO id with no unique replacement (see `Ontology.index`)."""


class OntologyFormatError(ValueError):
    """The file is not an OBO ontology that can be loaded as HPO."""


@dataclasses.dataclass(frozen=True, eq=False)
class Ontology:
    """Non-obsolete HPO terms with a stable index (sorted by id) and their is-a structure as CSR arrays.

    `anc_*` is the strict ancestor closure: row i lists every ancestor of term i (not i itself), sorted by
    index, with `anc_hops` the shortest is-a path length to it. `organ_*` lists, per term, the organ
    systems (children of HP:0000118) among its ancestors-or-self. `depth` is the shortest is-a path
    length to HP:0000001 (-1 for a term that cannot reach it, e.g. in a non-HPO file).

    Obsolete ids resolve, in this order of preference, to: their `replaced_by` target when there is
    exactly one; the current term that lists them as alt_id (HPO records merges this way); their
    `consider` target when there is exactly one and no replaced_by (a single suggestion is as good as a
    replacement for mapping old annotations). Otherwise `index` raises `ObsoleteHPOIdError` listing the
    candidates. Chains (a replacement that is itself obsolete or an alt_id) are followed. Every alt_id
    resolves to the term that declares it.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]
    definitions: tuple[str, ...]
    exact_synonyms: tuple[tuple[str, ...], ...]
    other_synonyms: tuple[tuple[str, ...], ...]
    parent_indptr: np.ndarray
    parent_indices: np.ndarray
    child_indptr: np.ndarray
    child_indices: np.ndarray
    anc_indptr: np.ndarray
    anc_indices: np.ndarray
    anc_hops: np.ndarray
    depth: np.ndarray
    organ_indptr: np.ndarray
    organ_indices: np.ndarray
    organ_system_ids: np.ndarray
    aliases: Mapping[str, int]  # alt_id / resolvable obsolete id -> current term index
    obsolete_candidates: Mapping[str, tuple[str, ...]]  # unresolvable obsolete id -> its candidates
    release: str  # the header's data-version, e.g. 'hp/releases/2025-01-16' ('' when absent)
    source_sha256: str

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS:
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.int32)
            arr.setflags(write=False)  # row views handed to callers must not alter the ontology
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "aliases", types.MappingProxyType(dict(self.aliases)))
        object.__setattr__(self, "obsolete_candidates", types.MappingProxyType(
            {k: tuple(v) for k, v in self.obsolete_candidates.items()}))
        n = len(self.ids)
        if not (len(self.names) == len(self.definitions) == len(self.exact_synonyms)
                == len(self.other_synonyms) == len(self.depth) == n):
            raise ValueError("per-term fields disagree in length")
        for prefix in ("parent", "child", "anc", "organ"):
            if len(getattr(self, f"{prefix}_indptr")) != n + 1:
                raise ValueError(f"{prefix}_indptr must have len(ids) + 1 entries")

    def __len__(self) -> int:
        """Number of non-obsolete terms."""
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Ontology({len(self)} terms, release={self.release!r}, sha256={self.source_sha256[:12]})"

    @functools.cached_property
    def _id_to_index(self) -> dict[str, int]:
        return {hpo_id: i for i, hpo_id in enumerate(self.ids)}

    @functools.cached_property
    def _closure_keys(self) -> np.ndarray:
        # row * n + ancestor is globally sorted (rows ascending, ancestors ascending within a row), so a
        # searchsorted over it answers "is y an ancestor of x" for whole index grids at once.
        rows = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.anc_indptr))
        return rows * len(self) + self.anc_indices.astype(np.int64)

    @functools.cached_property
    def _organ_membership(self) -> np.ndarray:
        member = np.zeros((len(self), len(self.organ_system_ids)), dtype=np.int32)
        column = {int(o): c for c, o in enumerate(self.organ_system_ids)}
        rows = np.repeat(np.arange(len(self)), np.diff(self.organ_indptr))
        member[rows, [column[int(o)] for o in self.organ_indices]] = 1
        return member

    def resolve(self, hpo_id: str) -> str:
        """The current id for a current, alt or obsolete id; raises UnknownHPOIdError/ObsoleteHPOIdError."""
        return self.ids[self.index(hpo_id)]

    def index(self, hpo_id: str) -> int:
        """The stable integer index of a term, resolving alt_ids and obsolete ids."""
        key = hpo_id.strip() if isinstance(hpo_id, str) else hpo_id
        found = self._id_to_index.get(key)
        if found is None:
            found = self.aliases.get(key)
        if found is not None:
            return found
        if key in self.obsolete_candidates:
            candidates = self.obsolete_candidates[key]
            hint = f" (candidates: {', '.join(candidates)})" if candidates else ""
            raise ObsoleteHPOIdError(f"HPO id {key!r} is obsolete and has no unique replacement{hint}")
        raise UnknownHPOIdError(f"unknown HPO id {key!r} (not in release {self.release or '?'})")

    def indices(self, hpo_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """`index` over a sequence of ids, as an int32 array."""
        return np.array([self.index(h) for h in hpo_ids], dtype=np.int32)

    def _as_index(self, term: int | str | np.integer) -> int:
        if isinstance(term, str):
            return self.index(term)
        i = int(term)
        if not 0 <= i < len(self):
            raise IndexError(f"term index {i} out of range [0, {len(self)})")
        return i

    def parents(self, term: int | str) -> np.ndarray:
        """Direct is-a parents of a term (index or id), as sorted indices."""
        i = self._as_index(term)
        return self.parent_indices[self.parent_indptr[i]:self.parent_indptr[i + 1]]

    def children(self, term: int | str) -> np.ndarray:
        """Direct is-a children of a term (index or id), as sorted indices."""
        i = self._as_index(term)
        return self.child_indices[self.child_indptr[i]:self.child_indptr[i + 1]]

    def ancestors(self, term: int | str, include_self: bool = False) -> np.ndarray:
        """All is-a ancestors of a term (index or id), as sorted indices."""
        i = self._as_index(term)
        anc = self.anc_indices[self.anc_indptr[i]:self.anc_indptr[i + 1]]
        return np.sort(np.append(anc, np.int32(i))).astype(np.int32) if include_self else anc

    def ancestor_hops(self, term: int | str) -> np.ndarray:
        """Shortest is-a path length to each of `ancestors(term)`, aligned with it."""
        i = self._as_index(term)
        return self.anc_hops[self.anc_indptr[i]:self.anc_indptr[i + 1]]

    def subtree(self, root: int | str) -> np.ndarray:
        """The root and all its descendants, as sorted indices."""
        r = self._as_index(root)
        rows = np.repeat(np.arange(len(self), dtype=np.int32), np.diff(self.anc_indptr))
        return np.union1d(rows[self.anc_indices == r], [r]).astype(np.int32)

    def organ_systems(self, term: int | str) -> np.ndarray:
        """Organ systems (children of HP:0000118) among the term's ancestors-or-self, as sorted indices."""
        i = self._as_index(term)
        return self.organ_indices[self.organ_indptr[i]:self.organ_indptr[i + 1]]


def organ_system_index(onto: Ontology, organ: str) -> int:
    """The term index of an organ system given by id ('HP:0000707', 'HP_0000707') or name (case-insensitive)."""
    systems = {int(i): onto.names[int(i)] for i in onto.organ_system_ids}
    found = re.fullmatch(r"hp[:_](\d{7})", organ.strip(), re.I)
    key = f"HP:{found.group(1)}" if found else organ.strip()
    for i, name in systems.items():
        if key == onto.ids[i] or organ.strip().lower() == name.lower():
            return i
    allowed = "; ".join(f"{onto.ids[i]} {name}" for i, name in sorted(systems.items(), key=lambda kv: kv[1]))
    raise ValueError(f"config.organ_system={organ!r} is not an organ system: use one of {allowed}")
