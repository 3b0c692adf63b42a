"""link_records over data.records.Record, the summary's counts, the organ-system restriction, the inputs."""
import json

import pytest

from phenolip_jax import config_lib
from phenolip_jax.data.records import Record
from phenolip_jax.link import corpus, inputs
from phenolip_jax.link.run import build_linker
from tests.link.conftest import IDS

CAPTIONS = ["Pleural effusion and scoliosis.", "No hydrocephalus.", "Normal study.", "Possible pneumothorax.",
            "Pleural effusions again, with an ASD."]


def records():
    return [Record(image=f"{i}.png", caption=c, hpo_ids=("HP:0000238",) if i == 2 else (), split="train")
            for i, c in enumerate(CAPTIONS)]


def test_link_records_fills_ids_and_keeps_evidence(make_linker):
    out, rows, summary = corpus.link_records(records(), make_linker(), chunk=2)
    assert [r.hpo_ids for r in out] == [(IDS["effusion"], IDS["scoliosis"]), (), ("HP:0000238",), (),
                                        (IDS["effusion"], IDS["asd"])]
    assert [r.image for r in out] == [f"{i}.png" for i in range(5)] and rows[1]["evidence"][0]["excluded"]
    replaced, _, _ = corpus.link_records(records(), make_linker(), existing="replace")
    assert replaced[2].hpo_ids == ()
    with pytest.raises(ValueError, match="config.existing"):
        corpus.link_records(records(), make_linker(), existing="keep")


def test_summary_counts(make_linker):
    _, _, s = corpus.link_records(records(), make_linker())
    assert (s["captions"], s["linked"], s["unlinked"]) == (5, 2, 3)
    assert s["terms_per_caption"]["distribution"] == {"0": 3, "1": 0, "2": 2, "3": 0, "4": 0, "5+": 0}
    assert s["terms_per_caption"]["mean"] == pytest.approx(0.8)
    assert s["top_terms"][0] == dict(hpo_id=IDS["effusion"], name="Pleural effusion", captions=2)
    assert (s["mentions"], s["linked_mentions"], s["negated"], s["uncertain"]) == (6, 4, 1, 1)
    assert s["method_share"] == {"lexical": 1.0}
    assert "top terms" in corpus.format_summary(s)


def test_summary_of_hybrid_counts_each_method(make_linker):
    lk = make_linker("hybrid", {"dilated heart": ("HP:0001640", 0.95)})
    _, _, s = corpus.link_records([Record("a", "Pleural effusion, dilated heart.")], lk)
    assert s["method_share"] == {"encoder": 0.5, "lexical": 0.5}


def test_progress_line(capsys):
    line = corpus.ProgressLine(every=2)
    for done in (1, 2, 3):
        line(done, 3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[-1].startswith("link: 3/3 captions (100%)") and "eta" in err[-1]


def link_cfg(mini_obo, path, **fields):
    cfg = config_lib.load_config("link")
    cfg.input, cfg.ontology.obo_path = str(path), mini_obo
    cfg.update(fields)
    return cfg


@pytest.mark.parametrize("organ", ["HP:0002086", "abnormality of the respiratory system"])
def test_organ_system_restricts_the_terms(mini_obo, tmp_path, monkeypatch, organ):
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path / "cache"))
    lk = build_linker(link_cfg(mini_obo, tmp_path / "x.txt", organ_system=organ), str(tmp_path))
    _, _, s = corpus.link_records(records(), lk)
    assert {t["hpo_id"] for t in s["top_terms"]} == {IDS["effusion"]}  # scoliosis and ASD are other systems


def test_unknown_organ_system_names_the_field(mini_obo, tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"^config.organ_system='lungs' is not an organ system"):
        build_linker(link_cfg(mini_obo, tmp_path / "x.txt", organ_system="lungs"), str(tmp_path))


def test_inputs_jsonl_tsv_and_text(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps(dict(image="a.png", caption="Scoliosis.", split="val",
                                                      hpo_ids=["HP:0000238"])) + "\n\n")
    (tmp_path / "captions.txt").write_text("ROCO_1\t Scoliosis.\nno tab here\n\nROCO_2\tPneumothorax\n")
    (tmp_path / "plain.txt").write_text("Scoliosis.\n\nPneumothorax\n")
    recs, report, fmt = inputs.read_input(str(tmp_path / "m.jsonl"))
    assert fmt == "jsonl" and recs[0].hpo_ids == ("HP:0000238",) and report.counts["blank_line"] == 1
    recs, report, fmt = inputs.read_input(str(tmp_path / "captions.txt"))
    assert fmt == "tsv" and [(r.image_id, r.caption, r.image) for r in recs] == [
        ("ROCO_1", "Scoliosis.", "images/ROCO_1.jpg"), ("ROCO_2", "Pneumothorax", "images/ROCO_2.jpg")]
    assert (report.total, report.kept, report.dropped) == (4, 2, 2)
    recs, report, fmt = inputs.read_input(str(tmp_path / "plain.txt"))
    assert fmt == "text" and [(r.image_id, r.caption) for r in recs] == [("line-1", "Scoliosis."),
                                                                          ("line-3", "Pneumothorax")]
    with pytest.raises(ValueError, match="config.input_format"):
        inputs.read_input(str(tmp_path / "plain.txt"), "csv")
