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


@pytest.fixture
def own_run(stage2_workdir, tmp_path):
    """A private copy of the tiny stage-2 run (its phenotype cache starts empty), saved as a demo run's config."""
    from tests.evaluate.conftest import TINY_DEMO

    run = tmp_path / "run"
    shutil.copytree(stage2_workdir, run, ignore=shutil.ignore_patterns("phenotype_cache"))
    (run / "config.json").write_text(json.dumps({"stage": "stage2", "seed": 0,
                                                 "data": {"source": "demo", "demo": TINY_DEMO}}))
    return str(run)


def test_phenotype_embeddings_are_cached_in_the_run_and_reused(own_run, image_folder, tmp_path, capsys):
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES[:3]))
    first = predict.run(_config(checkpoint=own_run, images=image_folder, candidates=str(cand), top_k=2),
                        str(tmp_path / "a"))
    assert first["phenotypes_encoded"] == 3 and first["phenotypes_cached"] == 0
    assert first["phenotype_cache"].startswith(os.path.join(own_run, "phenotype_cache"))
    assert "3/3 phenotypes" in capsys.readouterr().err  # progress while encoding
    again = predict.run(_config(checkpoint=own_run, images=image_folder, candidates=str(cand), top_k=2),
                        str(tmp_path / "b"))  # another output folder: the run's cache still serves it
    assert again["phenotypes_encoded"] == 0 and again["phenotypes_cached"] == 3
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()
    cand.write_text("\n".join(CANDIDATES))  # a superset encodes only the new ids
    more = predict.run(_config(checkpoint=own_run, images=image_folder, candidates=str(cand)), str(tmp_path / "c"))
    assert more["phenotypes_encoded"] == 2 and more["phenotypes_cached"] == 3
    other = predict.run(_config(checkpoint=own_run, images=image_folder, candidates=str(cand),
                                templates=("a photo of {}",)), str(tmp_path / "d"))
    assert other["phenotypes_encoded"] == 5 and other["phenotype_cache"] != more["phenotype_cache"]


def test_cached_embeddings_equal_fresh_ones_and_a_broken_cache_is_rebuilt(own_run, tmp_path, capsys):
    import numpy as np

    from phenolip_jax import inference
    from phenolip_jax.evaluate import phenotype_cache

    model = inference.load(own_run)
    ids = [c.replace("_", ":") for c in CANDIDATES]
    dirs = [str(tmp_path / "cache")]
    emb, info = phenotype_cache.phenotype_embeddings(model, ids, dirs)
    np.testing.assert_allclose(emb, model.encode_phenotypes(ids), atol=1e-6)
    back, info2 = phenotype_cache.phenotype_embeddings(model, ids[::-1], dirs)
    assert info2["encoded"] == 0 and np.array_equal(back, emb[::-1])
    with open(info["cache"], "wb") as f:
        f.write(b"not a zip")
    again, info3 = phenotype_cache.phenotype_embeddings(model, ids, dirs)
    assert info3["encoded"] == 5 and "ignoring unreadable phenotype cache" in capsys.readouterr().err
    np.testing.assert_allclose(again, emb, atol=1e-6)
    blocked = tmp_path / "a_file"
    blocked.write_text("")  # a folder that cannot be made: the next candidate folder takes the cache
    _, info4 = phenotype_cache.phenotype_embeddings(model, ids, [str(blocked / "cache"), str(tmp_path / "out")])
    assert info4["cache"].startswith(str(tmp_path / "out"))


def test_demo_run_defaults_to_its_own_phenotypes(own_run, tiny_demo_dir, image_folder, tmp_path, capsys):
    demo_ids = [p["hpo_id"] for p in json.loads(open(os.path.join(tiny_demo_dir, "phenotypes.json")).read())]
    summary = predict.run(_config(checkpoint=own_run, images=image_folder, top_k=3), str(tmp_path / "out"))
    assert summary["candidates"] == len(demo_ids) == 8
    assert "trained on the generated demo: candidates are its 8 phenotypes" in capsys.readouterr().out
    with open(tmp_path / "out" / "predictions.jsonl") as f:
        assert {p["hpo_id"] for line in f for p in json.loads(line)["predictions"]} <= set(demo_ids)
    everything = predict.run(_config(checkpoint=own_run, images=image_folder, candidates="all",
                                     organ_system="HP:0000598"), str(tmp_path / "all"))
    assert everything["candidates"] > 100


def test_an_unwritable_output_fails_before_anything_loads(stage2_workdir, image_folder, tmp_path, monkeypatch):
    from phenolip_jax import inference

    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setattr(inference, "load", lambda *a, **k: pytest.fail("loaded the model before checking the output"))
    with pytest.raises(ValueError, match="config.output: --workdir=.*is not a writable folder"):
        predict.run(_config(checkpoint=stage2_workdir, images=image_folder), str(blocked / "out"))


def test_predict_reads_dicom_files(stage2_workdir, image_folder, tmp_path):
    import numpy as np

    from tests.data.test_dicom import STORED, dicom_bytes

    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "ct.dcm").write_bytes(dicom_bytes(np.tile(STORED, (4, 4))))
    shutil.copy(os.path.join(image_folder, "img0.png"), folder / "photo.png")
    cand = tmp_path / "cands.txt"
    cand.write_text("\n".join(CANDIDATES[:3]))
    summary = predict.run(_config(checkpoint=stage2_workdir, images=str(folder), candidates=str(cand), top_k=2,
                                  dicom_window="lung"), str(tmp_path / "out"))
    assert summary["predicted"] == 2 and summary["skipped"] == []
    with pytest.raises(ValueError, match="config.dicom_window='lungs'"):
        predict.run(_config(checkpoint=stage2_workdir, images=str(folder), dicom_window="lungs"), str(tmp_path / "o2"))
