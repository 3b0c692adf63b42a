"""A hand-made ontology (diamond, obsolete chains, alt_id) with every expected value worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from phenolip_jax.ontology import (
    ObsoleteHPOIdError,
    OntologyFormatError,
    UnknownHPOIdError,
    load_ontology,
)


def test_structure(toy, T):
    assert len(toy) == 10
    assert toy.release == "toy/releases/2000-01-01"
    assert toy.parents("HP:0000300").tolist() == [T["0101"], T["0201"]]
    assert toy.children("HP:0000118").tolist() == [T["0100"], T["0200"]]
    assert toy.children(T["0301"]).size == 0
    np.testing.assert_array_equal(toy.depth, [0, 1, 2, 3, 3, 1, 2, 3, 4, 5])
    assert toy.ancestors("HP:0000301").tolist() == sorted(
        T[k] for k in ["0300", "0101", "0201", "0100", "0200", "0118", "0001"])
    hops = dict(zip(toy.ancestors("HP:0000301").tolist(), toy.ancestor_hops("HP:0000301").tolist()))
    assert hops == {T["0300"]: 1, T["0101"]: 2, T["0201"]: 2, T["0100"]: 3, T["0200"]: 3,
                    T["0118"]: 4, T["0001"]: 5}
    assert toy.ancestors("HP:0000001", include_self=True).tolist() == [T["0001"]]
    assert toy.subtree("HP:0000100").tolist() == [T["0100"], T["0101"], T["0102"], T["0300"], T["0301"]]
    assert toy.subtree(T["0301"]).tolist() == [T["0301"]]


def test_organ_systems(toy, T):
    assert toy.organ_system_ids.tolist() == [T["0100"], T["0200"]]
    assert toy.organ_systems("HP:0000301").tolist() == [T["0100"], T["0200"]]  # the diamond spans both
    assert toy.organ_systems("HP:0000102").tolist() == [T["0100"]]
    assert toy.organ_systems("HP:0000200").tolist() == [T["0200"]]  # an organ system is its own
    for outside in ["0001", "0005", "0118"]:
        assert toy.organ_systems(T[outside]).size == 0


def test_text_fields(toy, T):
    assert toy.names[T["0300"]] == "Diamond"
    assert toy.definitions[T["0118"]] == "A phenotypic abnormality."
    assert toy.definitions[T["0300"]] == ""
    assert toy.exact_synonyms[T["0101"]] == ("A first", "A-1")
    assert toy.other_synonyms[T["0101"]] == ("A uno",)
    assert toy.exact_synonyms[T["0300"]] == () and toy.other_synonyms[T["0300"]] == ()


def test_id_resolution(toy, T):
    assert toy.index("HP:0000301") == T["0301"]
    assert toy.index(" HP:0000301 ") == T["0301"]
    assert toy.resolve("HP:0000399") == "HP:0000301"  # alt_id
    assert toy.resolve("HP:0000900") == "HP:0000301"  # replaced_by
    assert toy.resolve("HP:0000904") == "HP:0000301"  # replaced_by an obsolete that is replaced
    assert toy.resolve("HP:0000901") == "HP:0000102"  # exactly one consider
    np.testing.assert_array_equal(toy.indices(["HP:0000900", "HP:0000001"]), [T["0301"], T["0001"]])
    with pytest.raises(ObsoleteHPOIdError, match="HP:0000902.*obsolete"):
        toy.index("HP:0000902")
    with pytest.raises(ObsoleteHPOIdError, match="HP:0000101, HP:0000102"):  # two considers: ambiguous
        toy.index("HP:0000903")
    with pytest.raises(UnknownHPOIdError, match="HP:0000777"):
        toy.index("HP:0000777")


def test_arrays_are_read_only(toy):
    with pytest.raises(ValueError):
        toy.anc_indices[0] = 3
    with pytest.raises(ValueError):
        toy.children(0)[0] = 3
    with pytest.raises(TypeError):
        toy.aliases["HP:1234567"] = 0


def test_bad_path_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "hp.obo"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_ontology(missing, cache_dir=tmp_path)


@pytest.mark.parametrize("text", [
    "hello world\nthis is not an ontology\n",
    "",
    "format-version: 1.2\n",  # a valid header with no terms
    "format-version: 1.2\n\n[Term]\nid: HP:1\nname: a\nis_a: HP:2 ! undeclared\n",
    "format-version: 1.2\n\n[Term]\nid: HP:1\nname: a\nsynonym: \"b\" EXACT undeclared_type []\n",
    "format-version: 1.2\n\n[Term]\nid: HP:1\nname: a\nis_a: HP:2\n\n[Term]\nid: HP:2\nname: b\nis_a: HP:1\n",
])
def test_not_obo_is_a_clear_error(tmp_path, text):
    bad = tmp_path / "bad.obo"
    bad.write_text(text)
    with pytest.raises(OntologyFormatError, match="bad.obo|cycle"):
        load_ontology(bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
