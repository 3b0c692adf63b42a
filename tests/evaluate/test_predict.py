"""The predict stage: top-k HPO terms per image of an unlabelled folder (tiny stage-2 model), CSV + JSONL out."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from phenolip_jax.evaluate import predict
from tests.tasks.conftest import REPO, load_config

CANDIDATES = ["HP:0000316", "HP_0001250", "HP:0000252", "HP:0001156", "HP:0000369"]


@pytest.fixture(scope="module")
def image_folder(tiny_demo_dir, tmp_path_factory):
    """Six demo images in a nested folder, plus one unreadable file with an image extension."""
    folder = tmp_path_factory.mktemp("unlabelled")
    src = sorted(os.path.join(r, f) for r, _, fs in os.walk(tiny_demo_dir) for f in fs if f.endswith(".png"))[:6]
    (folder / "sub").mkdir()
    for i, p in enumerate(src):
        shutil.copy(p, folder / ("sub" if i % 2 else "") / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return str(folder)


def _config(**kw):
    cfg = load_config("predict")
    cfg.update(kw)
    return cfg


def test_candidates_default_user_list_and_organ_system(stage2_workdir):
    from phenolip_jax import inference

    onto = inference.load(stage2_workdir).ontology
    everything = predict.select_candidates(onto)
    assert len(everything) == len(onto.subtree("HP:0000118")) - 1 and "HP:0000118" not in everything
    ear = predict.select_candidates(onto, organ_system="Abnormality of the ear")
    assert ear == predict.select_candidates(onto, organ_system="HP_0000598")
    assert 0 < len(ear) < len(everything) and all(onto.index("HP:0000598") in onto.organ_systems(h) for h in ear)
    with pytest.raises(ValueError, match="organ_system='HP:0001250' is not an organ system: use one of .*HP:0000707"):
        predict.select_candidates(onto, organ_system="HP:0001250")


def test_predict_writes_topk_csv_and_jsonl(stage2_workdir, image_folder, tmp_path, capsys):
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES) + "\n# a comment\n")
    summary = predict.run(_config(checkpoint=stage2_workdir, images=image_folder, candidates=str(cand), top_k=3,
                                  batch_size=4), str(tmp_path / "out"))
    assert summary["images"] == 7 and summary["predicted"] == 6 and summary["skipped"] == ["broken.png"]
    assert summary["candidates"] == 5 and summary["top_k"] == 3
    err = capsys.readouterr().err
    assert "7/7 images" in err and "skipped" in err  # the progress bar reached the end; the bad file is named
    with open(tmp_path / "out" / "predictions.jsonl") as f:
        rows = [json.loads(line) for line in f]
    images = [r["image"] for r in rows]
    assert images == sorted(images) and "sub/img1.png" in images
    for r in rows:
        preds = r["predictions"]
        assert [p["rank"] for p in preds] == [1, 2, 3]
        assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
        assert {p["hpo_id"] for p in preds} <= {c.replace("_", ":") for c in CANDIDATES}
        assert all(p["name"] and p["organ_systems"] for p in preds)
    with open(tmp_path / "out" / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 18 and table[0]["hpo_id"] == rows[0]["predictions"][0]["hpo_id"]


def test_bad_fields_fail_before_loading(stage2_workdir, image_folder, tmp_path):
    with pytest.raises(ValueError, match="config.images"):
        predict.run(_config(checkpoint=stage2_workdir, images=str(tmp_path / "nope")), str(tmp_path))
    with pytest.raises(ValueError, match="config.top_k=0"):
        predict.run(_config(checkpoint=stage2_workdir, images=image_folder, top_k=0), str(tmp_path))
    with pytest.raises(ValueError, match="config.formats"):
        predict.run(_config(checkpoint=stage2_workdir, images=image_folder, formats=("xlsx",)), str(tmp_path))
    with pytest.raises(ValueError, match="holds no images"):
        predict.run(_config(checkpoint=stage2_workdir, images=str(tmp_path)), str(tmp_path))


def test_main_dispatches_predict_end_to_end(stage2_workdir, image_folder, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "phenolip_jax.main", "--config=configs/predict.py",
           f"--config.checkpoint={stage2_workdir}", f"--config.images={image_folder}",
           "--config.organ_system=HP:0000598", "--config.top_k=2", f"--workdir={out}"]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "predictions.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 6
    assert all("Abnormality of the ear" in p["organ_systems"] for r in rows for p in r["predictions"])
