"""End to end: stage 1 and stage 2 on tiny models and data; exact resume; outputs on disk."""
import json
import os

import numpy as np
import pytest

from tests.tasks.conftest import load_config


def tiny_stage1(bert_dir):
    cfg = load_config("stage1")
    cfg.text.hf_dir = bert_dir
    cfg.text.head_hidden = 16
    cfg.text.embed_dim = 16  # the tiny stage 2's width, for distillation
    cfg.text.head, cfg.text.head_init = "mlp", "random"  # an identity head would need embed_dim >= width 32
    cfg.eval.before = True
    cfg.total_steps = 3
    cfg.log_every = 1
    cfg.checkpoint_every = 3
    cfg.data.terms_per_batch = 8
    cfg.data.views_per_term = 2
    cfg.data.max_len = 16
    cfg.eval.max_queries = 40
    cfg.eval.batch_size = 512
    return cfg


def tiny_stage2(bert_dir, demo_dir, teacher_dir):
    cfg = load_config("stage2")
    cfg.text.hf_dir = bert_dir  # text.head_hidden stays 0: open_clip's (width + embed) // 2 = 24
    cfg.data.demo_dir = demo_dir
    cfg.data.demo = dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16)
    cfg.data.image_size = 16
    cfg.data.batch_size = 16
    cfg.data.max_len = 32
    cfg.model.image = dict(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64, pool="cls")
    cfg.model.embed_dim = 16
    cfg.teacher.workdir = teacher_dir
    cfg.total_steps = 4
    cfg.log_every = 1
    cfg.eval_every = 4
    cfg.checkpoint_every = 2
    cfg.optim.schedule = "constant"  # lr independent of total_steps, so a shortened run is a prefix
    cfg.optim.warmup_steps = 0
    cfg.eval.batch_size = 16
    cfg.eval.ks = (1, 5, 10)
    return cfg


def read_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, tmp_path_factory):
    from phenolip_jax.tasks import stage1

    workdir = str(tmp_path_factory.mktemp("stage1"))
    real = tmp_path_factory.mktemp("mentions") / "real.jsonl"  # real mentions, scored beside the held-out sets
    real.write_text(json.dumps({"mention": "seizures", "hpo_id": "HP:0001250"}) + "\n"
                    + json.dumps({"mention": "fits", "hpo_id": "HP:0000006"}) + "\n")  # inheritance: dropped
    cfg = tiny_stage1(tiny_bert_dir)
    cfg.eval.mention_sets, cfg.data.mention_rate = str(real), 0.5  # mention-like views trained on too
    result = stage1.run(cfg, workdir)
    assert set(result) >= {"before", "after", "raw", "query_sets"}
    return workdir


def test_stage1_outputs(teacher_dir):
    with open(os.path.join(teacher_dir, "eval.json")) as f:
        ev = json.load(f)
    for part in ("before", "after", "raw"):
        for key in ("acc@1", "acc@10", "mrr"):
            assert 0.0 <= ev[part][key] <= 1.0
    # Every query set side by side: string baselines, the raw encoder, before and after training.
    assert set(ev["query_sets"]) == {"synonym", "layperson", "abbreviation", "val_synonym", "val_layperson",
                                     "val_abbreviation", "mentions:real"}  # test sets, validation sets, real mentions
    assert ev["query_sets"]["mentions:real"]["exact"]["acc@1"] == 1.0  # 'Seizures': a synonym, matched like the CLI
    assert ev["query_sets"]["mentions:real"]["after"]["num_queries"] == 1
    for methods in ev["query_sets"].values():
        assert set(methods) == {"exact", "fuzzy", "raw", "before", "after"}
        assert all(0.0 <= m["hier@1"] <= 1.0 and m["num_queries"] > 0 for m in methods.values())
    assert sorted(read_losses(teacher_dir)) == [1, 2, 3]
    table = np.load(os.path.join(teacher_dir, "phenotype_table.npz"))
    assert table["vectors"].shape == (len(table["ids"]), 16)
    np.testing.assert_allclose(np.linalg.norm(table["vectors"], axis=1), 1.0, atol=1e-5)
    assert os.path.isdir(os.path.join(teacher_dir, "encoder"))


def test_stage2_resume_is_exact(tiny_bert_dir, tiny_demo_dir, teacher_dir, tmp_path):
    from phenolip_jax.tasks import stage2

    full = str(tmp_path / "full")
    result = stage2.run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir), full)
    with open(os.path.join(full, "model_config.json")) as f:
        assert json.load(f)["text_config"]["head_hidden_dim"] == (32 + 16) // 2
    for key in ("i2t_r@10", "t2i_r@10", "i2p_r@10", "p2i_r@10", "chance_r@10"):
        assert 0.0 <= result[key] <= 1.0
    with open(os.path.join(full, "eval.json")) as f:
        assert json.load(f)["i2t_r@10"] == result["i2t_r@10"]

    # An interrupted run: stop after step 2 (its checkpoint), then restart with the full length.
    split = str(tmp_path / "split")
    cfg = tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir)
    cfg.total_steps = 2
    stage2.run(cfg, split)
    stage2.run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir), split)
    a, b = read_losses(full), read_losses(split)
    assert sorted(a) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert a[step] == b[step], (step, a[step], b[step])


def test_init_checkpoint_must_fit_the_model(tiny_bert_dir, tiny_demo_dir, teacher_dir, tmp_path):
    import jax

    from phenolip_jax.tasks import stage2

    run = str(tmp_path / "run")
    cfg = tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir)
    cfg.total_steps = 1
    cfg.eval_every = 1
    stage2.run(cfg, run)
    from phenolip_jax import artifacts

    params = artifacts.load_params(os.path.join(run, "params"))
    same = stage2.load_init_checkpoint(run, params)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    wider = jax.tree.map(lambda x: x, params)
    wider["image"]["head"]["proj"]["kernel"] = np.zeros((32, 24), np.float32)
    with pytest.raises(ValueError, match="does not fit config.model"):
        stage2.load_init_checkpoint(run, wider)
    # The run remembers its HPO release; a model loaded from it refuses another one unless told.
    from phenolip_jax import inference, ontology

    meta = artifacts.read_json(os.path.join(run, artifacts.MODEL_CONFIG))
    assert meta["ontology"] == ontology.release_info(ontology.load_ontology())
    other = tmp_path / "hp-other.obo"
    other.write_text(ontology.default_obo_path().read_text(encoding="utf-8").replace(
        "data-version: hp/releases/2025-01-16", "data-version: hp/releases/2099-01-01", 1), encoding="utf-8")
    model = inference.load(run)
    assert model.ontology.source_sha256 == meta["ontology"]["sha256"]
    model = inference.load(run)
    inference.use_ontology(model, {"obo_path": str(other)})
    with pytest.raises(ontology.OntologyReleaseError, match="2025-01-16"):
        model.ontology
    model = inference.load(run)
    inference.use_ontology(model, {"obo_path": str(other), "allow_other_release": True})
    assert model.ontology.source_sha256 != meta["ontology"]["sha256"]


def test_export_then_init_from_open_clip(tiny_bert_dir, tiny_demo_dir, teacher_dir, tmp_path):
    """A stage-2 run exports to open_clip layout, and that directory initialises a new stage 2 exactly."""
    import jax

    from phenolip_jax.convert import export
    from phenolip_jax import artifacts
    from phenolip_jax.tasks import stage2
    from tests.tasks.conftest import load_config

    run = str(tmp_path / "run")
    cfg = tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir)
    cfg.total_steps = 1
    cfg.eval_every = 1
    stage2.run(cfg, run)
    ecfg = load_config("export")
    ecfg.checkpoint, ecfg.output, ecfg.verify = run, str(tmp_path / "out"), False
    export.run(ecfg)
    params = artifacts.load_params(os.path.join(run, "params"))
    loaded = stage2.load_init_checkpoint(str(tmp_path / "out" / "open_clip"), params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_stage2_refuses_to_freeze_a_random_image_tower(tiny_bert_dir, tiny_demo_dir, teacher_dir, tmp_path):
    # Without init.checkpoint the ViT is random: freezing it for freeze_steps would train heads on noise.
    from phenolip_jax.tasks import stage2

    cfg = tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher_dir)
    cfg.optim.freeze_steps = 2
    with pytest.raises(ValueError, match=r"would freeze \d+ randomly initialised parameters of the image tower"):
        stage2.run(cfg, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    cfg.optim.freeze_pattern = r"^text/encoder/"  # the pretrained text encoder may be frozen
    cfg.total_steps = 2
    stage2.run(cfg, str(tmp_path / "run2"))
