"""Demo dataset generator: determinism, coverage, real HPO ids, captions, hierarchy, learnability, idempotence."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from phenolip_jax.data import demo

SMALL = dict(seed=0, num_phenotypes=40, train_pairs=400, val_pairs=40, test_pairs=200, verbose=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, onto):
    return demo.generate_demo_dataset(tmp_path_factory.mktemp("demo") / "a", ontology=onto, **SMALL)


def _records(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def _phenotypes(folder):
    return json.loads((folder / "phenotypes.json").read_text())


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path, onto):
    again = demo.generate_demo_dataset(tmp_path / "b", ontology=onto, **SMALL)
    for name in ("manifest.jsonl", "testdata.csv", "phenotypes.json", "images/train/000000.png",
                 "images/val/000013.png", "images/test/000199.png"):
        assert (again / name).read_bytes() == (dataset / name).read_bytes(), name
    other = demo.generate_demo_dataset(tmp_path / "c", ontology=onto, **{**SMALL, "seed": 1})
    assert (other / "manifest.jsonl").read_bytes() != (dataset / "manifest.jsonl").read_bytes()
    assert (other / "images/train/000000.png").read_bytes() != (dataset / "images/train/000000.png").read_bytes()


def test_more_test_pairs_keep_train_val_and_the_first_test_pairs(dataset, tmp_path, onto):
    # The ablation re-evaluates trained runs on a larger test split: the runs' train data must not move.
    more = demo.generate_demo_dataset(tmp_path / "more", ontology=onto, **{**SMALL, "test_pairs": 400})
    old, new = _records(dataset), _records(more)
    assert [r for r in new if r["split"] != "test"] == [r for r in old if r["split"] != "test"]
    assert [r for r in new if r["split"] == "test"][:200] == [r for r in old if r["split"] == "test"]
    assert len([r for r in new if r["split"] == "test"]) == 400
    for name in ("images/train/000000.png", "images/train/000399.png", "images/val/000039.png",
                 "images/test/000199.png"):
        assert (more / name).read_bytes() == (dataset / name).read_bytes(), name


def test_splits_files_and_coverage(dataset):
    records = _records(dataset)
    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 400, "val": 40, "test": 200}
    assert len({r["image_id"] for r in records}) == len(records)
    ids = {p["hpo_id"] for p in _phenotypes(dataset)}
    assert len(ids) == 40
    unseen = {p["hpo_id"] for p in _phenotypes(dataset) if p["unseen"]}
    assert {h for r in by_split["test"] for h in r["hpo_ids"]} == ids
    for split in ("train", "val"):  # held-out phenotypes appear at test time only
        assert {h for r in by_split[split] for h in r["hpo_ids"]} <= ids - unseen
    assert {h for r in by_split["train"] for h in r["hpo_ids"]} == ids - unseen
    for r in records:
        assert r["source"] == "phenolip-demo" and r["image"] == f"images/{r['split']}/{r['image'][-10:]}"
    with Image.open(dataset / records[0]["image"]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    assert "SYNTHETIC" in (dataset / "README.txt").read_text()


def test_ids_are_current_hpo_terms_of_their_organ_system(dataset, onto):
    phenos = _phenotypes(dataset)
    for p in phenos:
        i = onto.index(p["hpo_id"])
        assert onto.ids[i] == p["hpo_id"] and onto.names[i] == p["name"]  # current id, not an alias
        assert onto.index(p["organ_system"]) in onto.organ_systems(i).tolist()
        assert 3 <= onto.depth[i] <= 6
    assert len({p["organ_system"] for p in phenos}) == 8
    for r in _records(dataset):
        assert all(onto.ids[onto.index(h)] == h for h in r["hpo_ids"])


def test_captions_name_their_phenotypes_with_held_out_templates_for_test(dataset, onto):
    def prefixes(templates):
        return tuple(t.split("{")[0] for t in templates if not t.startswith("{"))

    train_prefixes = prefixes(demo.TRAIN_TEMPLATES + demo.TRAIN_PAIR_TEMPLATES)
    test_prefixes = prefixes(demo.TEST_TEMPLATES + demo.TEST_PAIR_TEMPLATES)
    for r in _records(dataset):
        caption = r["caption"].casefold()
        for h in r["hpo_ids"]:
            i = onto.index(h)
            forms = (onto.names[i], *onto.exact_synonyms[i])
            assert any(f.casefold() in caption for f in forms), (h, r["caption"])
        if r["split"] == "test":
            assert r["caption"].startswith(test_prefixes)
        else:
            assert not r["caption"].startswith(test_prefixes)
            assert r["caption"].startswith(train_prefixes) or not r["caption"].startswith(test_prefixes)
    assert any("; " in r["caption"] and len(r["caption"]) > 80 for r in _records(dataset))  # definitions used


def test_hierarchy_parent_child_and_siblings(dataset, onto):
    phenos = _phenotypes(dataset)
    parents = [p["visual_parent"] for p in phenos if p["visual_parent"]]
    direct = 0
    for p in phenos:
        if p["visual_parent"]:
            child, parent = onto.index(p["hpo_id"]), onto.index(p["visual_parent"])
            assert parent in onto.ancestors(child).tolist()
            direct += parent in onto.parents(child).tolist()
    assert direct >= 10
    assert max(parents.count(p) for p in set(parents)) >= 2  # siblings


def test_unseen_phenotypes_test_only_alone_with_a_seen_parent(dataset):
    phenos = {p["hpo_id"]: p for p in _phenotypes(dataset)}
    unseen = {h for h, p in phenos.items() if p["unseen"]}
    assert len(unseen) == round(demo.UNSEEN_FRACTION * len(phenos))  # on by default
    for h in unseen:  # a seen parent (the motif it inherits from), itself not held out
        parent = phenos[h]["visual_parent"]
        assert parent is not None and not phenos[parent]["unseen"]
    test = [r for r in _records(dataset) if r["split"] == "test"]
    for r in test:  # an image shows exactly one unseen phenotype or only seen ones
        assert not (set(r["hpo_ids"]) & unseen) or len(r["hpo_ids"]) == 1
    assert {r["hpo_ids"][0] for r in test} >= unseen


def test_unseen_fraction_zero_sees_everything(tmp_path, onto):
    folder = demo.generate_demo_dataset(tmp_path / "z", ontology=onto, unseen_fraction=0.0,
                                        **{**SMALL, "num_phenotypes": 16, "train_pairs": 32, "val_pairs": 0,
                                           "test_pairs": 16})
    assert not any(p["unseen"] for p in _phenotypes(folder))
    train = {h for r in _records(folder) if r["split"] == "train" for h in r["hpo_ids"]}
    assert len(train) == 16
    with pytest.raises(ValueError, match="unseen_fraction"):
        demo.generate_demo_dataset(tmp_path / "w", ontology=onto, unseen_fraction=1.0, **SMALL)


def test_pairs_with_two_phenotypes_of_one_organ_system(dataset):
    system = {p["hpo_id"]: p["organ_system"] for p in _phenotypes(dataset)}
    pairs = [r for r in _records(dataset) if len(r["hpo_ids"]) == 2]
    assert 0.1 < len(pairs) / len(_records(dataset)) < 0.3
    assert all(system[a] == system[b] and a != b for a, b in (r["hpo_ids"] for r in pairs))


def test_testdata_csv_is_the_test_split(dataset):
    with open(dataset / "testdata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test = [r for r in _records(dataset) if r["split"] == "test"]
    assert list(rows[0]) == ["image_path", "caption", "full_matches"]
    assert [(r["image_path"], r["caption"], r["full_matches"].split(";")) for r in rows] == \
        [(r["image"], r["caption"], r["hpo_ids"]) for r in test]


def test_learnable_from_raw_pixels(dataset):
    figures = demo.pixel_baseline(dataset)
    assert figures["organ_system_chance"] < 0.2 and figures["phenotype_chance"] < 0.05
    assert figures["organ_system_accuracy"] > 0.9
    assert figures["phenotype_accuracy"] > 0.4


def test_related_phenotypes_look_related(dataset):
    # The mean image of a child is closer to its parent's than to an unrelated phenotype's of the same
    # organ system (images centred per channel, so brightness jitter does not swamp the motifs).
    records = [r for r in _records(dataset) if r["split"] != "val" and len(r["hpo_ids"]) == 1]
    phenos = _phenotypes(dataset)

    def centred(r):
        x = np.asarray(Image.open(dataset / r["image"]), np.float32) / 255
        return x - x.mean(axis=(0, 1))

    mean = {p["hpo_id"]: np.mean([centred(r) for r in records if r["hpo_ids"][0] == p["hpo_id"]], axis=0)
            for p in phenos}
    related, unrelated = [], []
    for p in phenos:
        for q in phenos:
            if p["organ_system"] == q["organ_system"] and p is not q:
                d = float(np.abs(mean[p["hpo_id"]] - mean[q["hpo_id"]]).mean())
                (related if p["visual_parent"] == q["hpo_id"] else unrelated).append(d)
    assert len(related) >= 10
    assert np.mean(related) < 0.85 * np.mean(unrelated)


def test_idempotent_overwrite_and_refusals(dataset, tmp_path, onto):
    stamp = (dataset / "manifest.jsonl").stat().st_mtime_ns
    assert demo.generate_demo_dataset(dataset, ontology=onto, **SMALL) == dataset
    assert (dataset / "manifest.jsonl").stat().st_mtime_ns == stamp
    # Same parameters without an ontology object: the default ontology hashes the same.
    assert demo.generate_demo_dataset(dataset, **SMALL) == dataset
    assert (dataset / "manifest.jsonl").stat().st_mtime_ns == stamp

    small = {**SMALL, "num_phenotypes": 16, "train_pairs": 32, "val_pairs": 0, "test_pairs": 16}
    target = tmp_path / "d"
    demo.generate_demo_dataset(target, ontology=onto, **small)
    with pytest.raises(FileExistsError):
        demo.generate_demo_dataset(target, ontology=onto, **{**small, "seed": 5})
    demo.generate_demo_dataset(target, ontology=onto, overwrite=True, **{**small, "seed": 5})
    assert json.loads((target / "params.json").read_text())["params"]["seed"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        demo.generate_demo_dataset(tmp_path / "other", ontology=onto, **small)


def test_bad_parameters_raise(tmp_path, onto):
    for bad in ({"train_pairs": 10}, {"test_pairs": 39}, {"image_size": 8}, {"num_phenotypes": 4}):
        with pytest.raises(ValueError):
            demo.generate_demo_dataset(tmp_path / "x", ontology=onto, **{**SMALL, **bad})
    assert not (tmp_path / "x").exists()


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path))
    assert demo.default_demo_dir() == tmp_path / "demo"


def test_default_location_keeps_one_folder_per_parameter_set(monkeypatch, tmp_path, onto):
    # Another seed (stage 2 seeds the generator with config.seed) or a newer generator must not be refused
    # because the default folder holds a cached dataset made with other parameters.
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path))
    small = {**SMALL, "num_phenotypes": 16, "train_pairs": 32, "val_pairs": 0, "test_pairs": 16}
    a = demo.generate_demo_dataset(ontology=onto, **small)
    b = demo.generate_demo_dataset(ontology=onto, **{**small, "seed": 1})
    assert a != b and a.parent == b.parent == tmp_path / "demo"
    assert json.loads((a / "params.json").read_text())["params"]["seed"] == 0
    assert demo.generate_demo_dataset(ontology=onto, **small) == a  # cached


def test_cli_prints_learnability(dataset, capsys):
    args = ["--out", str(dataset), "--num_phenotypes", "40", "--train_pairs", "400", "--val_pairs", "40",
            "--test_pairs", "200"]
    assert demo.main(args) == 0  # same parameters: no regeneration
    out = capsys.readouterr().out
    assert "demo dataset ready" in out and "organ_system accuracy" in out and "phenotype accuracy" in out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_unseen_phenotype_is_a_visual_parent(onto, seed):
    # Generator v2 held out visual parents of seen phenotypes (5 of 22 in seed 1): their look leaked into training.
    phenos = demo.build_phenotypes(onto, 150, seed)
    unseen = demo.choose_unseen(phenos, demo.UNSEEN_FRACTION, seed)
    assert len(unseen) == round(demo.UNSEEN_FRACTION * 150)
    parents = {p.visual_parent for p in phenos}
    assert not unseen & parents
    assert all(phenos[k].visual_parent >= 0 for k in unseen)
