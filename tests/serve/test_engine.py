"""The serve engine: a case's terms are the predict stage's, each with its place in the hierarchy; bad uploads are
refused file by file with a reason; the download is the case's phenopacket."""
import json
import os
import shutil

import pytest

from phenolip_jax.serve import download
from phenolip_jax.serve.engine import CaseError, Upload, hierarchy_path
from tests.serve.conftest import FIFTY_MB, corrupt_dicom
from tests.tasks.conftest import load_config


def uploads(paths):
    return [Upload(os.path.basename(p), open(p, "rb").read()) for p in paths]


def test_a_case_gets_the_predict_stages_terms_and_probabilities(engine, demo_images, candidates_file,
                                                                 stage2_workdir, tmp_path):
    from phenolip_jax.evaluate import predict

    folder = tmp_path / "case"
    folder.mkdir()
    for p in demo_images:
        shutil.copy(p, folder)
    cfg = load_config("predict")
    cfg.update(checkpoint=stage2_workdir, images=str(folder), candidates=candidates_file, top_k=5, batch_size=4,
               formats=("jsonl",))
    predict.run(cfg, str(tmp_path / "out"))
    with open(tmp_path / "out" / "predictions.jsonl") as f:
        expected = {r["image"]: r["predictions"] for r in map(json.loads, f)}
    case = engine.predict_case(uploads(demo_images), note="three photographs")
    assert [im["name"] for im in case["images"]] == [os.path.basename(p) for p in demo_images]
    assert case["candidates"] == 8 and case["skipped"] == [] and case["note"] == "three photographs"
    for im in case["images"]:
        got = im["predictions"]
        assert [p["hpo_id"] for p in got] == [p["hpo_id"] for p in expected[im["name"]]]
        assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in expected[im["name"]]],
                                                                abs=1e-5)
        assert all(p["path"][-1] == p["name"] and p["organ_systems"] for p in got)


def test_hierarchy_path_runs_from_the_organ_system_down_is_a_links(engine):
    onto = engine.onto
    path = hierarchy_path(onto, onto.index("HP:0000316"))  # Hypertelorism
    assert path[-1] == "Hypertelorism" and path[0] in {o["name"] for o in engine.organ_systems} | {
        onto.names[int(o)] for o in onto.organ_system_ids}
    index = {name: i for i, name in enumerate(onto.names)}
    for parent, child in zip(path, path[1:]):
        assert index[parent] in set(int(p) for p in onto.parents(index[child])), (parent, child)
    organ = onto.organ_system_ids[0]
    assert hierarchy_path(onto, int(organ)) == [onto.names[int(organ)]]


def test_organ_system_restricts_the_candidates(engine, demo_images):
    organ = engine.organ_systems[0]
    case = engine.predict_case(uploads(demo_images[:1]), organ_system=organ["id"])
    assert case["candidates"] == organ["candidates"] < 8
    assert all(organ["name"] in p["organ_systems"] for p in case["images"][0]["predictions"])
    with pytest.raises(CaseError, match="HP:0001250.*is not an organ system.*GET /api/info") as e:
        engine.predict_case(uploads(demo_images[:1]), organ_system="HP:0001250")
    assert e.value.status == 422


def test_bad_uploads_are_refused_file_by_file_with_a_reason(engine, demo_images):
    bad = [Upload("notes.txt", b"this is a note"), Upload("broken.dcm", corrupt_dicom()),
           Upload("huge.png", b"", size=FIFTY_MB), Upload("empty.png", b"")]
    with pytest.raises(CaseError) as e:
        engine.predict_case(bad)
    assert e.value.status == 400
    reasons = {f["name"]: f["error"] for f in e.value.files}
    assert reasons["notes.txt"] == ("not a readable image (no image format recognised); images are png, jpg, jpeg, "
                                    "bmp, gif, tif, tiff, webp, dcm, dicom")
    assert reasons["broken.dcm"].startswith("not a readable DICOM image")
    assert reasons["huge.png"] == "50.0 MB is over the limit of 20 MB per image (config.max_upload_mb)"
    assert reasons["empty.png"] == "empty file (0 bytes)"
    with pytest.raises(CaseError, match="over the limit") as e:
        engine.predict_case(bad[2:3])
    assert e.value.status == 413
    mixed = engine.predict_case(uploads(demo_images[:1]) + bad[:1])
    assert len(mixed["images"]) == 1 and [s["name"] for s in mixed["skipped"]] == ["notes.txt"]
    with pytest.raises(CaseError, match="no image uploaded"):
        engine.predict_case([])
    with pytest.raises(CaseError, match="at most 16 images"):
        engine.predict_case(uploads(demo_images[:1]) * 17)


def test_the_download_is_the_cases_phenopacket(engine, demo_images):
    from phenolip_jax.evaluate import phenopacket

    case = engine.predict_case(uploads(demo_images[:2]), note="No hearing impairment.")
    name, media_type, body = download.case_download(engine.case(case["case_id"]))
    assert name == f"case-{case['case_id']}.phenopacket.json" and media_type == "application/json"
    packet = phenopacket.parse_phenopacket(body.decode())  # the schema's own parser
    features = {f.type.id: f for f in packet.phenotypic_features}
    present = [t["hpo_id"] for t in case["profile"]["present"]]
    assert present and all(h in features and not features[h].excluded for h in present)
    assert features["HP:0000365"].excluded  # the note's negated term (Hearing impairment)
    assert packet.meta_data.resources and case["model"]["id"] in body.decode()
    with pytest.raises(CaseError, match="no case 'nope'") as e:
        engine.case("nope")
    assert e.value.status == 404
