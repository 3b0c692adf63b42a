"""Method fidelity at paper scale: BiomedCLIP init is required, nothing random is frozen, the teacher is of the
student's family, and evaluation keeps every phenotype of a held-out record."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from phenolip_jax import config_checks
from tests.tasks.conftest import load_config


def test_biomedclip_variant_refuses_to_start_without_biomedclip(tmp_path):
    cfg = load_config("stage2", "biomedclip")
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("")
    cfg.data.manifest = str(manifest)
    with pytest.raises(ValueError, match=r"config.init.checkpoint is empty: .*huggingface-cli download"):
        config_checks.validate(cfg, 1)
    config_checks.validate(cfg, 1, aot=True)  # compiling for a TPU loads no weights
    cfg.init.checkpoint = cfg.text.hf_dir = str(tmp_path)
    config_checks.validate(cfg, 1)


def test_freezing_randomly_initialised_towers_is_refused():
    from phenolip_jax.train import optimizer

    params = {"image": {"encoder": {"w": np.zeros((2, 2))}, "head": {"w": np.zeros((2, 2))}},
              "text": {"encoder": {"w": np.zeros((2, 2))}, "head": {"w": np.zeros((2, 2))}}}
    optim = load_config("stage2", "biomedclip").optim  # freezes both towers' encoders for 4,000 steps
    with pytest.raises(ValueError, match=r"randomly initialised parameters of the image tower.*image/encoder/w"):
        optimizer.check_frozen_are_pretrained(params, optim, pretrained=r"^text/encoder/")
    optimizer.check_frozen_are_pretrained(params, optim, pretrained=r"^(image|text)/encoder/")  # BiomedCLIP init
    optim.freeze_steps = 0
    optimizer.check_frozen_are_pretrained(params, optim, pretrained=r"^text/encoder/")


def test_teacher_of_another_family_warns(tiny_bert_dir, tmp_path):
    from phenolip_jax.tasks import common

    cfg = load_config("stage2")
    cfg.text.hf_dir = tiny_bert_dir  # 1 layer x 32
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    minilm = dict(vocab_size=30522, depth=6, width=384)
    (teacher / "stage1_config.json").write_text(json.dumps({"text_tower": {"bert": minilm}}))
    cfg.teacher.workdir = str(teacher)
    warning = common.teacher_family_warning(cfg)
    assert warning and "layers 6, width 384" in warning and "layers 1, width 32" in warning
    (teacher / "stage1_config.json").write_text(json.dumps(
        {"text_tower": {"bert": dict(vocab_size=30522, depth=1, width=32)}}))
    assert common.teacher_family_warning(cfg) is None
    cfg.teacher.workdir = ""  # stage 2 makes its teacher from the student's own encoder
    assert common.teacher_family_warning(cfg) is None


def test_evaluation_keeps_every_phenotype_of_a_held_out_record(tmp_path):
    from phenolip_jax.ontology import load_ontology
    from phenolip_jax.tasks import stage2

    onto = load_ontology()
    ids = [h for h in onto.ids[200:400]][:6]
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    rows = [dict(image="a.png", caption="six findings", hpo_ids=ids, split="train"),
            dict(image="b.png", caption="six findings too", hpo_ids=ids, split="test")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config("stage2")
    cfg.data.source, cfg.data.manifest = "jsonl", str(tmp_path / "m.jsonl")
    assert cfg.data.max_hpo == 4
    splits, _ = stage2.load_records(cfg, onto, None)
    assert len(splits["train"][0].hpo_ids) == 4  # the training tables hold max_hpo ids
    assert list(splits["test"][0].hpo_ids) == ids  # the held-out record keeps all six


def test_split_names_are_normalised_unknown_ones_counted_and_missing_ones_said(tmp_path):
    from phenolip_jax.data.manifest import read_and_validate
    from phenolip_jax.ontology import load_ontology
    from phenolip_jax.tasks import stage2

    onto = load_ontology()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    rows = [dict(image="a.png", caption="one", split="Train"), dict(image="a.png", caption="two", split="VALIDATION"),
            dict(image="a.png", caption="three", split="holdout"), dict(image="a.png", caption="four")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, report = read_and_validate([str(tmp_path / "m.jsonl")], onto, str(tmp_path))
    assert [r.split for r in kept] == ["train", "val", "train"]  # 'Train' trains; a missing split trains
    assert report.counts["unknown_split"] == 1 and report.counts["no_split"] == 1
    assert report.total == report.kept + report.dropped == 4
    assert "holdout" in report.examples["unknown_split"][0]
    cfg = load_config("stage2")
    cfg.data.source, cfg.data.manifest = "jsonl", str(tmp_path / "m.jsonl")
    rows = [dict(image="a.png", caption="x", split="test")]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.data.manifest = str(tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match=r"no usable train records .*splits found: test: 1"):
        stage2.load_records(cfg, onto, None)


def test_eval_on_a_demo_run_reads_the_runs_demo(tmp_path):
    # A seed-1 run was scored on the seed-0 demo (26 of 150 phenotypes shared) with no warning.
    from phenolip_jax.evaluate import run as evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text("{}")
    demo_dir = tmp_path / "demo1"
    demo_dir.mkdir()
    (run / "config.json").write_text(json.dumps({"stage": "stage2", "seed": 1, "data": {
        "source": "demo", "demo_dir": str(demo_dir),
        "demo": dict(num_phenotypes=40, train_pairs=400, val_pairs=40, test_pairs=200)}}))
    cfg = load_config("eval")
    cfg.checkpoint = str(run)
    seed, sizes, folder = evaluate_run.run_demo_settings(cfg)
    assert (seed, sizes["num_phenotypes"], sizes["test_pairs"], folder) == (1, 40, 200, str(demo_dir))
    cfg.data.demo_seed, cfg.data.demo.test_pairs = 2, 600  # explicit fields win
    seed, sizes, _ = evaluate_run.run_demo_settings(cfg)
    assert (seed, sizes["test_pairs"], sizes["train_pairs"]) == (2, 600, 400)
    (run / "config.json").unlink()  # a run without its config: stage 2's defaults, seed 0 unless given
    cfg.data.demo_seed = -1
    assert evaluate_run.run_demo_settings(cfg)[0] == 0
