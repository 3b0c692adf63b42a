"""The ROCO dev-set builder on a miniature captions.txt / cuis.txt, and the caption-level scoring."""
import json

import pytest

from phenolip_jax.link import evaluate, roco_devset, scoring
from phenolip_jax.link.linker import link_texts
from tests.link.conftest import IDS

CAPTIONS = ("ROCO_01\t Axial CT showing pleural effusion (arrow).\n"
            "ROCO_02\t Chest radiograph with pneumothorax.\n"
            "ROCO_03\t Normal\tstudy.\n"
            "ROCO_04\t MRI of the spine.\n")
CUIS = ("ROCO_01\t\tC0032227\tC9999999\n"
        "ROCO_02\t\tC1111111\tC0032326\tC0018800\n"
        "ROCO_03\t\t\n"
        "ROCO_04\t\tC0025594\n")


@pytest.fixture
def roco_dir(tmp_path):
    folder = tmp_path / "clone" / "data" / "validation" / "radiology"
    folder.mkdir(parents=True)
    (folder / "captions.txt").write_text(CAPTIONS)
    (folder / "cuis.txt").write_text(CUIS)
    return tmp_path / "clone"


def test_devset_maps_cuis_to_hpo_through_xrefs(roco_dir, mini_obo):
    caps, cuis = roco_devset.find_files(str(roco_dir))
    rows = roco_devset.build_devset(caps, cuis, mini_obo, seed=0)
    assert [r["image_id"] for r in rows] == ["ROCO_01", "ROCO_02", "ROCO_03", "ROCO_04"]
    assert [r["hpo_ids"] for r in rows] == [[IDS["effusion"]], [IDS["cardiomegaly"], IDS["pneumothorax"]], [],
                                            [IDS["metatarsus"]]]
    assert rows[0]["caption"] == "Axial CT showing pleural effusion (arrow)." and rows[2]["caption"] == "Normal study."
    assert sorted(r["half"] for r in rows) == ["report", "report", "tune", "tune"]
    assert rows == roco_devset.build_devset(caps, cuis, mini_obo, seed=0)  # the halves are seeded


def test_devset_cli_prints_the_count_and_refuses_the_test_split(roco_dir, mini_obo, tmp_path, capsys):
    out = tmp_path / "dev.jsonl"
    assert roco_devset.main([f"--roco={roco_dir}", f"--output={out}", f"--obo={mini_obo}"]) == 0
    assert "all: 4 captions, 3 with >= 1 silver HPO term, 4 silver labels" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 4
    test_dir = tmp_path / "roco" / "test" / "radiology"
    test_dir.mkdir(parents=True)
    (test_dir / "captions.txt").write_text(CAPTIONS)
    (test_dir / "cuis.txt").write_text(CUIS)
    assert roco_devset.main([f"--roco={test_dir}", f"--output={out}", f"--obo={mini_obo}"]) == 2
    assert "test split" in capsys.readouterr().err


def test_micro_prf_by_hand():
    got = scoring.micro_prf([["a", "b"], [], ["c"]], [["a"], ["d"], ["c", "e"]])
    assert (got["tp"], got["fp"], got["fn"]) == (2, 1, 2)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(0.5)
    assert got["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    only = scoring.micro_prf([["a", "b"]], [["a", "z"]], vocabulary={"a", "b"})
    assert (only["tp"], only["fp"], only["fn"]) == (1, 1, 0)


def test_exact_name_matcher(mini):
    onto, _, terms = mini
    match = scoring.ExactNameMatcher(onto, terms)
    assert match("Pleural-effusion and SCOLIOSIS; no pneumothorax") == [IDS["effusion"], IDS["scoliosis"],
                                                                       IDS["pneumothorax"]]
    assert match("pleural effusions") == []  # names only, as written: no plural folding


def test_filtering_evidence_equals_relinking_at_the_higher_threshold(make_linker):
    table = {"dilated heart": ("HP:0001640", 0.93), "heart": ("HP:0001640", 0.85), "lung fluid": ("HP:0002202", 0.7),
             "fluid": ("HP:0002202", 0.82), "scoliosis": ("HP:0002650", 0.99)}
    captions = ["Dilated heart, lung fluid.", "Scoliosis and dilated heart and fluid."]
    low = link_texts(captions, make_linker("hybrid", table, threshold=0.5))
    for t in (0.5, 0.75, 0.84, 0.9, 0.95):
        high = link_texts(captions, make_linker("hybrid", table, threshold=t))
        assert [scoring.ids_at_threshold(ev, t) for ev in low] == [[e["hpo_id"] for e in ev if e["linked"]]
                                                                  for ev in high]


def test_sweep_and_best_threshold():
    ev = [[dict(hpo_id="a", method="encoder", score=0.9, linked=True),
           dict(hpo_id="b", method="encoder", score=0.7, linked=True)]]
    table = scoring.sweep(ev, [["a"]], [0.6, 0.8, 0.95], None)
    assert [r["f1"] for r in table] == pytest.approx([2 / 3, 1.0, 0.0])
    assert scoring.best_threshold(table) == 0.8


def test_evaluate_cli_on_the_miniature(roco_dir, mini_obo, tmp_path, capsys):
    dev = tmp_path / "dev.jsonl"
    roco_devset.main([f"--roco={roco_dir}", f"--output={dev}", f"--obo={mini_obo}"])
    rows = [json.loads(x) for x in dev.read_text().splitlines()]
    for r in rows:
        r["half"] = "report"  # score every caption
    rows.append(dict(rows[0], half="tune"))
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    assert evaluate.main([f"--devset={dev}", "--methods=exact,lexical", f"--obo={mini_obo}", f"--output={out}"]) == 0
    res = json.loads(out.read_text())["results"]
    # exact: 'pleural effusion', 'pneumothorax' found; gold also has cardiomegaly (C0018800) and metatarsus adductus.
    assert (res["exact"]["report"]["tp"], res["exact"]["report"]["fp"], res["exact"]["report"]["fn"]) == (2, 0, 2)
    assert res["lexical"]["report"]["f1"] == pytest.approx(res["exact"]["report"]["f1"])
    assert "| exact | - | 100.0 | 50.0 | 66.7 |" in capsys.readouterr().out
    assert evaluate.main([f"--devset={dev}", "--methods=exact,fuzzy"]) == 2
