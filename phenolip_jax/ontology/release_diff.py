"""What changed between two HPO releases, as far as a model's phenotype texts are concerned.

A phenotype's embedding is its name through the prompt templates, so a release matters to a trained model in
three ways: a term is added (a new candidate), renamed (same id, new text: a new embedding), or obsoleted (the id
leaves; HPO names its successor with `replaced_by`, an alt_id merge or a single `consider`, which
`Ontology.index` follows). Definitions and synonyms never reach a phenotype embedding and are not compared.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phenolip_jax.ontology.hpo import Ontology, UnknownHPOIdError


@dataclasses.dataclass(frozen=True)
class ReleaseDiff:
    """Term-level differences from release `old` to release `new` (ids sorted)."""

    old_release: str
    new_release: str
    added: tuple[str, ...]  # current in new, not current in old
    renamed: Mapping[str, tuple[str, str]]  # id current in both -> (old name, new name)
    obsoleted: Mapping[str, str | None]  # id current in old only -> its successor in new, or None (none unique)
    why_unmapped: Mapping[str, str]  # obsoleted id without successor -> new's reason (its candidates, or unknown)

    def summary(self) -> dict[str, Any]:
        """Counts, for reports: added, renamed, obsoleted (with and without a successor)."""
        replaced = sum(v is not None for v in self.obsoleted.values())
        return dict(old_release=self.old_release, new_release=self.new_release, added=len(self.added),
                    renamed=len(self.renamed), obsoleted=len(self.obsoleted), obsoleted_replaced=replaced,
                    obsoleted_without_replacement=len(self.obsoleted) - replaced)

    def to_json(self) -> dict[str, Any]:
        """Every difference, JSON-ready."""
        return dict(self.summary(), added_ids=list(self.added),
                    renamed_ids={k: dict(old=o, new=n) for k, (o, n) in self.renamed.items()},
                    obsoleted_ids=dict(self.obsoleted), unmapped_reasons=dict(self.why_unmapped))


def successor(hpo_id: str, onto: Ontology) -> tuple[str | None, str]:
    """(the current id `hpo_id` means in `onto`, '') or (None, why not: obsolete without a unique replacement,
    or unknown to that release)."""
    try:
        return onto.resolve(hpo_id), ""
    except UnknownHPOIdError as err:  # ObsoleteHPOIdError included
        return None, str(err)


def diff_releases(old: Ontology, new: Ontology) -> ReleaseDiff:
    """The added, renamed and obsoleted terms from `old` to `new`."""
    old_ids, new_ids = set(old.ids), set(new.ids)
    renamed = {}
    for h in sorted(old_ids & new_ids):
        before, after = old.names[old.index(h)], new.names[new.index(h)]
        if before != after:
            renamed[h] = (before, after)
    obsoleted, why = {}, {}
    for h in sorted(old_ids - new_ids):
        obsoleted[h], reason = successor(h, new)
        if reason:
            why[h] = reason
    return ReleaseDiff(old.release, new.release, tuple(sorted(new_ids - old_ids)), renamed, obsoleted, why)


def added_beneath(diff: ReleaseDiff, new: Ontology, roots: Iterable[str]) -> list[str]:
    """The terms `new` adds below any of `roots` (ids current in `new`), sorted."""
    root_idx = {new.index(r) for r in roots}
    return [h for h in diff.added if root_idx & {int(a) for a in new.ancestors(h)}]


def carry_over(ids: Sequence[str], old: Ontology, new: Ontology) -> tuple[list[str], list[str]]:
    """A candidate list of release `old` in release `new`: (each id through its successor, deduplicated, then
    the terms `new` adds beneath them; the ids without a successor, dropped)."""
    mapped, dropped = [], []
    for h in ids:
        current, _ = successor(h, new)
        (mapped if current else dropped).append(current or h)
    mapped = list(dict.fromkeys(mapped))
    diff = diff_releases(old, new)
    return mapped + [h for h in added_beneath(diff, new, mapped) if h not in mapped], dropped


def label_mapping(labels: Iterable[str], onto: Ontology) -> dict[str, Any]:
    """How a data set's HPO labels (one entry per occurrence) read in release `onto`: how many are current, which
    map to another id (alt_id, replaced_by) and which map to none (with the reason), each with its count."""
    counts = Counter(h.strip() for h in labels)
    remapped, unmapped, current = {}, {}, 0
    for h, n in sorted(counts.items()):
        target, why = successor(h, onto)
        if target == h:
            current += n
        elif target:
            remapped[h] = dict(to=target, name=onto.names[onto.index(target)], labels=n)
        else:
            unmapped[h] = dict(reason=why, labels=n)
    return dict(release=onto.release, labels=sum(counts.values()), current=current,
                remapped_labels=sum(v["labels"] for v in remapped.values()),
                unmapped_labels=sum(v["labels"] for v in unmapped.values()), remapped=remapped, unmapped=unmapped)
