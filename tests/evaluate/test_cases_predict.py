"""predict with cases (tiny stage-2 model on the tiny demo): profiles, the case page and phenopackets, end to end."""
import json
import os
import re
import shutil

import numpy as np

from phenolip_jax.evaluate import phenopacket, predict
from tests.evaluate.test_predict import CANDIDATES, _config


def _demo_images(demo_dir, n):
    return sorted(os.path.relpath(os.path.join(r, f), demo_dir) for r, _, fs in os.walk(demo_dir)
                  for f in fs if f.endswith(".png"))[:n]


def test_predict_writes_a_profile_page_and_phenopacket_per_case(stage2_workdir, tiny_demo_dir, tmp_path):
    images = _demo_images(tiny_demo_dir, 5)
    manifest = tmp_path / "cases.jsonl"
    rows = [dict(image=im, case_id="A" if i < 3 else "B") for i, im in enumerate(images)]
    rows[0]["note"] = "No seizures."
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES))
    out = tmp_path / "out"
    summary = predict.run(_config(checkpoint=stage2_workdir, images=tiny_demo_dir, candidates=str(cand), top_k=3,
                                  cases=str(manifest), case_min_probability=0.0, formats=("jsonl", "phenopacket")),
                          str(out))
    assert summary["images"] == 5 and summary["cases"] == 2 and summary["images_in_no_case"] == 0
    assert {os.path.relpath(p, out) for p in summary["outputs"]} == {
        "predictions.jsonl", "cases.jsonl", "cases.md", "phenopackets/A.json", "phenopackets/B.json"}
    per_image = {json.loads(line)["image"]: {p["hpo_id"]: p["probability"] for p in json.loads(line)["predictions"]}
                 for line in open(out / "predictions.jsonl")}
    profiles = [json.loads(line) for line in open(out / "cases.jsonl")]
    assert [(p["case_id"], p["images"]) for p in profiles] == [("A", images[:3]), ("B", images[3:])]
    for p in profiles:
        assert p["present"], "every case keeps at least one term at case_min_probability=0"
        for t in p["present"]:  # each image's probability is the one predict reports for that image
            np.testing.assert_allclose(t["probability"], np.mean(t["image_probabilities"]), atol=2e-6)
            for image, q in zip(p["images"], t["image_probabilities"]):
                if t["hpo_id"] in per_image[image]:
                    np.testing.assert_allclose(q, per_image[image][t["hpo_id"]], atol=2e-6)
    assert [t["hpo_id"] for t in profiles[0]["excluded"]] == ["HP:0001250"]
    pa = json.loads((out / "phenopackets" / "A.json").read_text())
    parsed = phenopacket.parse_phenopacket(json.dumps(pa))
    assert [(f.type.id, f.excluded) for f in parsed.phenotypic_features][-1] == ("HP:0001250", True)
    assert summary["model_id"] in json.dumps(pa) and parsed.meta_data.resources[0].version == "2025-01-16"
    page = (out / "cases.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    assert len(links) == 5 and all(os.path.isfile(out / link) for link in links)
    assert "## Case `A`" in page and "## Case `B`" in page and "| excluded | HP:0001250 Seizure |" in page


def test_predict_forms_cases_from_sub_folders(stage2_workdir, tiny_demo_dir, tmp_path):
    folder = tmp_path / "cases"
    for i, image in enumerate(_demo_images(tiny_demo_dir, 3)):
        (folder / f"case{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(tiny_demo_dir, image), folder / f"case{i % 2}" / f"{i}.png")
    shutil.copy(os.path.join(tiny_demo_dir, _demo_images(tiny_demo_dir, 1)[0]), folder / "loose.png")
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES))
    summary = predict.run(_config(checkpoint=stage2_workdir, images=str(folder), candidates=str(cand), top_k=2,
                                  cases="folders", aggregate="max"), str(tmp_path / "out"))
    assert summary["cases"] == 2 and summary["images"] == 4 and summary["images_in_no_case"] == 1
    profiles = [json.loads(line) for line in open(tmp_path / "out" / "cases.jsonl")]
    assert [(p["case_id"], len(p["images"]), p["aggregate"]) for p in profiles] == [("case0", 2, "max"),
                                                                                     ("case1", 1, "max")]
    for t in profiles[0]["present"]:
        assert t["probability"] == max(t["image_probabilities"])


def test_notes_linked_with_the_hybrid_linker(stage1_workdir, stage2_workdir, tiny_demo_dir, tmp_path):
    import pytest

    images = _demo_images(tiny_demo_dir, 2)
    manifest = tmp_path / "cases.jsonl"
    manifest.write_text("".join(json.dumps(dict(image=im, case_id="A", note="No seizures.")) + "\n" for im in images))
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES))
    cfg = _config(checkpoint=stage2_workdir, images=tiny_demo_dir, candidates=str(cand), top_k=3,
                  cases=str(manifest), note_link="hybrid", note_encoder=stage1_workdir)
    predict.run(cfg, str(tmp_path / "out"))
    profile = json.loads(open(tmp_path / "out" / "cases.jsonl").readline())
    assert profile["note_method"] == "hybrid"
    assert "HP:0001250" in {t["hpo_id"] for t in profile["excluded"]}  # Seizure, negated in the note
    with pytest.raises(ValueError, match="note_link='encoder' needs config.note_encoder"):
        predict.run(_config(checkpoint=stage2_workdir, images=tiny_demo_dir, cases=str(manifest), note_link="encoder"),
                    str(tmp_path / "bad"))
