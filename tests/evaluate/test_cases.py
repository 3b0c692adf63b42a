"""Case profiles (evaluate/cases.py) and their Markdown page (evaluate/case_report.py): no model needed."""
import json
import os

import numpy as np
import pytest

from phenolip_jax.evaluate import case_report, cases
from phenolip_jax.ontology import load_ontology
from tests.tasks.conftest import load_config

NERVOUS, SEIZURE, FOCAL = "HP:0012638", "HP:0001250", "HP:0007359"  # a chain: each the parent of the next
HYPERTELORISM, MICROCEPHALY, CLEFT = "HP:0000316", "HP:0000252", "HP:0000175"
IDS = [HYPERTELORISM, MICROCEPHALY, SEIZURE, FOCAL, NERVOUS]


@pytest.fixture(scope="module")
def onto():
    return load_ontology()


@pytest.fixture(scope="module")
def linker(onto):
    return cases.note_linker(onto)


def _probs(*rows):
    """Rows of probabilities over IDS, each topped up with a sixth column (the other candidates) to sum to 1."""
    return np.array([list(r) + [1 - sum(r)] for r in rows])


def test_mean_and_max_aggregation_top_k_and_threshold(onto):
    probs = _probs((0.6, 0.1, 0, 0, 0), (0.5, 0.0, 0, 0, 0), (0.1, 0.55, 0, 0, 0))  # 6th: 0.3, 0.5, 0.35
    ids = IDS + ["HP:0000365"]
    mean = cases.profile_case(onto, "c", ids, probs, images=["a", "b", "c"], min_probability=0.2)
    assert [(t["hpo_id"], t["probability"]) for t in mean["present"]] == [
        (HYPERTELORISM, 0.4), ("HP:0000365", 0.383333), (MICROCEPHALY, 0.216667)]
    assert mean["present"][0]["image_probabilities"] == [0.6, 0.5, 0.1] and mean["aggregate"] == "mean"
    top = cases.profile_case(onto, "c", ids, probs, aggregate="max", min_probability=0.2)
    assert [(t["hpo_id"], t["probability"]) for t in top["present"]] == [
        (HYPERTELORISM, 0.6), (MICROCEPHALY, 0.55), ("HP:0000365", 0.5)]
    assert [t["hpo_id"] for t in cases.profile_case(onto, "c", ids, probs, top_k=1)["present"]] == [HYPERTELORISM]
    assert [t["hpo_id"] for t in cases.profile_case(onto, "c", ids, probs, min_probability=0.39)["present"]] == [
        HYPERTELORISM]
    with pytest.raises(ValueError, match="config.aggregate='median'"):
        cases.profile_case(onto, "c", ids, probs, aggregate="median")
    with pytest.raises(ValueError, match=r"probabilities of shape \(6, 3\), expected \[n_images, 6\]"):
        cases.profile_case(onto, "c", ids, probs.T)


def test_most_specific_terms_only_ancestors_implied(onto):
    probs = _probs((0.05, 0.05, 0.3, 0.2, 0.35))  # the chain nervous > seizure > focal, and two unrelated terms
    p = cases.profile_case(onto, "c", IDS + ["HP:0000365"], probs, min_probability=0.1)
    assert [t["hpo_id"] for t in p["present"]] == [FOCAL]
    assert {i["hpo_id"]: i["probability"] for i in p["present"][0]["implies"]} == {NERVOUS: 0.35, SEIZURE: 0.3}


def test_note_terms_negation_and_conflicts(onto, linker):
    probs = np.array([[0.3, 0.02, 0.02, 0.64, 0.02]])  # the images say focal-onset seizure; the note excludes it
    note = "Hypertelorism and microcephaly. No seizures and no focal-onset seizures. Possible cleft palate."
    p = cases.profile_case(onto, "c", IDS, probs, note=note, linker=linker, min_probability=0.05)
    present = {t["hpo_id"]: t for t in p["present"]}
    assert set(present) == {HYPERTELORISM, MICROCEPHALY}
    assert present[HYPERTELORISM]["sources"] == ["image", "note"] and present[MICROCEPHALY]["sources"] == ["note"]
    assert [t["hpo_id"] for t in p["excluded"]] == [SEIZURE]  # focal-onset is implied excluded, not listed twice
    assert p["excluded"][0]["implies"] == [{"hpo_id": FOCAL, "name": "Focal-onset seizure"}]
    assert [t["hpo_id"] for t in p["uncertain"]] == [CLEFT]
    assert [(t["hpo_id"], t["reason"]) for t in p["dropped"]] == [(FOCAL, f"excluded by the note ({SEIZURE} Seizure)")]
    # What the note states present stands against its own exclusion of an ancestor.
    both = cases.profile_case(onto, "c", IDS, np.zeros((0, 5)), note="Focal-onset seizure. No seizures.",
                              linker=linker)
    assert [t["hpo_id"] for t in both["present"]] == [FOCAL] and both["excluded"] == []
    assert both["dropped"][0]["hpo_id"] == SEIZURE


def test_cases_from_manifest_and_folders(tmp_path):
    for case, names in (("p1", ("a.png", "b.png")), ("p2", ("c.png",))):
        (tmp_path / case).mkdir()
        for n in names:
            (tmp_path / case / n).write_bytes(b"")
    (tmp_path / "p2" / "note.txt").write_text("Microcephaly.\n")
    (tmp_path / "loose.png").write_bytes(b"")
    found = sorted(str(p) for p in tmp_path.rglob("*.png"))
    groups, paths = cases.read_cases("folders", str(tmp_path), found)
    assert [(c.case_id, len(c.images), c.note) for c in groups] == [("p1", 2, ""), ("p2", 1, "Microcephaly.")]
    assert paths == found  # the loose image is predicted, in no case
    manifest = tmp_path / "cases.jsonl"
    rows = [dict(image="p2/c.png", case_id="B", note="Seizures."), dict(image="p1/a.png", case_id="A"),
            dict(image="p1/b.png", case_id="A", note="No cleft."), dict(image="p1/b.png", case_id="A")]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups, paths = cases.read_cases(str(manifest), str(tmp_path), found)
    assert [(c.case_id, [os.path.basename(i) for i in c.images], c.note) for c in groups] == [
        ("B", ["c.png"], "Seizures."), ("A", ["a.png", "b.png"], "No cleft.")]
    assert len(paths) == 3
    csv_manifest = tmp_path / "cases.csv"
    csv_manifest.write_text("image,case_id,note\np1/a.png,A,\np2/c.png,B,Seizures.\n")
    assert [c.case_id for c in cases.read_cases(str(csv_manifest), str(tmp_path), found)[0]] == ["A", "B"]
    for bad, message in ((dict(image="p1/zz.png", case_id="A"), "is not a file"),
                         (dict(image="p1/a.png"), "needs a non-empty 'image' and 'case_id'"),
                         (dict(image="p2/c.png", case_id="A"), "is in cases 'B' and 'A'")):
        manifest.write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=f"config.cases: .*cases.jsonl:2.*{message}"):
            cases.read_cases(str(manifest), str(tmp_path), found)
    with pytest.raises(ValueError, match="no sub-folder holding images"):
        cases.read_cases("folders", str(tmp_path), [str(tmp_path / "loose.png")])


def test_case_fields_are_validated(tmp_path):
    cfg = load_config("predict")
    cases.validate_fields(cfg)
    for field, value, message in (("cases", str(tmp_path / "none.jsonl"), "config.cases=.*use '' .*'folders'"),
                                  ("aggregate", "median", "config.aggregate='median': use one of mean, max"),
                                  ("case_min_probability", 1.5, "config.case_min_probability=1.5"),
                                  ("formats", ("csv", "phenopacket"), "'phenopacket' but config.cases is ''")):
        bad = load_config("predict")
        bad[field] = value
        with pytest.raises(ValueError, match=message):
            cases.validate_fields(bad)


def test_case_page_shows_images_profile_and_probabilities(onto, linker, tmp_path):
    probs = _probs((0.7, 0.1, 0, 0, 0), (0.5, 0.2, 0, 0, 0))
    profile = cases.profile_case(onto, "patient 7", IDS + ["HP:0000365"], probs, images=["p7/a.png", "p7/b b.png"],
                                 note="No seizures.", linker=linker, min_probability=0.1)
    out = tmp_path / "out"
    out.mkdir()
    path = case_report.write_case_report(str(out), [profile], str(tmp_path / "imgs"), ["Model m"])
    page = open(path).read()
    assert page.startswith("# Case profiles\n\n- Model m\n") and "## Case `patient 7`" in page
    assert "![p7/a.png](../imgs/p7/a.png) ![p7/b b.png](../imgs/p7/b%20b.png)" in page
    assert f"| present | {HYPERTELORISM} Hypertelorism | 0.600 | 0.700 / 0.500 | images |" in page
    assert f"| excluded | {SEIZURE} Seizure |  |  | note (\"seizures\") |" in page
    assert "> No seizures." in page
