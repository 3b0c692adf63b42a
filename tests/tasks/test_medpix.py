"""The MedPix path end to end (issue 26 item 1) on a miniature in MedPix 2.0's layout: pack with the link step,
train `configs/stage2.py:medpix` (shrunk) for two steps, evaluate phenotypes the linker found."""
import json
import os
import types

import pytest

from phenolip_jax.link.pack import pack_linked
from phenolip_jax.tasks import stage2
from tests.data import format_miniatures as mini_lib
from tests.tasks.conftest import load_config
from tests.tasks.test_data_sources import short_run


def medpix_config(bert_dir: str, packed: str):
    """configs/stage2.py:medpix with the tiny test model's sizes."""
    cfg = load_config("stage2", "medpix")
    cfg.data.packed_dir = packed
    cfg.text.hf_dir = bert_dir
    cfg.data.image_size, cfg.data.batch_size, cfg.data.max_len = 16, 8, 32
    cfg.model.image = dict(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64, pool="cls")
    cfg.model.embed_dim = 16
    cfg.log_every, cfg.eval.batch_size, cfg.eval.ks = 1, 8, (1, 5)
    return short_run(cfg)


def pack_miniature(mini_input: str, out: str) -> dict:
    """`python -m phenolip_jax.link.pack --format=medpix --link=lexical` of a miniature; its packing info."""
    flags = types.SimpleNamespace(
        manifest=None, input=mini_input, format="medpix", image_root=None, output=out, num_shards=2, tokenizer=None,
        image_size=18, image_format="jpeg", jpeg_quality=90, max_len=256, teacher_tokenizer=None, teacher_max_len=0,
        max_hpo=None, max_side=0, strict=False,
        allow_absolute_paths=False, csv_img_key="filepath", csv_caption_key="title", csv_separator="\t",
        parquet_image_column="image", parquet_caption_column="caption", link="lexical", link_encoder="",
        link_threshold=None)
    return pack_linked(flags)


def test_medpix_packed_linked_and_trained(tmp_path, tiny_bert_dir, capsys):
    mini = mini_lib.medpix(tmp_path)
    out = str(tmp_path / "packed")
    info = pack_miniature(mini.input, out)
    assert {s: v["num_examples"] for s, v in info["splits"].items()} == mini.splits  # the official split
    assert info["link"]["linked"] == 12 and info["splits"]["train"]["terms"] == ["HP:0001250"]  # "seizure"
    run = str(tmp_path / "run")
    stage2.run(medpix_config(tiny_bert_dir, out), run)
    scores = json.loads(open(os.path.join(run, "eval.json")).read())
    assert "i2t_r@1" in scores and "i2p_r@1" in scores  # phenotype figures, from the linked ids


def test_medpix_variant_says_how_to_get_the_data():
    from phenolip_jax.data import sources

    cfg = load_config("stage2", "medpix")
    with pytest.raises(ValueError, match="packed_dir is empty.*git clone https://github.com/CHILab1/MedPix-2.0"):
        sources.validate_source(cfg.data)


def test_ablation_medpix_variant_with_its_labels(tmp_path, tiny_bert_dir, stage1_workdir):
    """configs/ablation.py:medpix on the miniature: two arms, one seed, each run also scored on MedPix's labels."""
    from phenolip_jax.tasks import ablation

    mini = mini_lib.medpix(tmp_path)
    mini_lib.label_medpix(mini)
    packed = str(tmp_path / "packed")
    pack_miniature(mini.input, packed)
    cfg = load_config("ablation", "medpix")
    assert cfg.stage2.data.source == "arrayrecord" and cfg.stage2.data.max_len == 64  # the stage-2 medpix variant
    cfg.arms, cfg.seeds = ("clip", "paper_kd_hier_mask"), (0,)
    cfg.teacher_workdir = stage1_workdir  # the session's tiny stage-1 run (16-d, as the tiny stage 2)
    cfg.stage2 = medpix_config(tiny_bert_dir, packed)
    cfg.medpix.dir, cfg.medpix.min_test_images = mini.input, 1
    work = str(tmp_path / "abl")
    ablation.run(cfg, work)
    saved = json.load(open(os.path.join(work, "ablation.json")))
    for arm in cfg.arms:
        figures = saved["runs"][arm][0]
        for task in ("modality", "plane", "location"):
            assert 0.0 <= figures[f"{task}_zs_top1"] <= 1.0 and 0.0 <= figures[f"{task}_probe_top1"] <= 1.0
        assert figures["plane_chance_uniform"] == 0.5  # Axial and Coronal keep test images (Sagittal has none)
        assert os.path.exists(os.path.join(work, arm, "seed0", ablation.LABELS_FILE))
    assert set(saved["labels"]["summary"]) == set(cfg.arms)
    table = open(os.path.join(work, "ablation.md")).read()
    assert "MedPix 2.0's own labels" in table and "\n| (chance, majority) |" in table
    assert "| modality zero-shot | plane zero-shot | location zero-shot | modality probe |" in table
    # Rerun: the label figures are reused while their settings hold, and made again when a setting changes.
    cached = os.path.join(work, "clip", "seed0", ablation.LABELS_FILE)
    stamp = os.path.getmtime(cached)
    ablation.run(cfg, work)
    assert os.path.getmtime(cached) == stamp
    cfg.medpix.templates = ("{}",)
    ablation.run(cfg, work)
    assert json.load(open(cached))["settings"]["medpix"]["templates"] == ["{}"]
    cfg.medpix.dir = str(tmp_path / "nowhere")  # a missing folder is refused before anything trains
    with pytest.raises(ValueError, match="config.medpix.dir=.*is not a folder"):
        ablation.run(cfg, work)
