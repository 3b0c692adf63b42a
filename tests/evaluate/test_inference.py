"""inference.load on tiny stage-1 / stage-2 workdirs (and an open_clip dir): shapes, norms, ensembling, refusals."""
import json
import os
import shutil

import numpy as np
import pytest

from phenolip_jax import inference

PHENOTYPES = ["HP:0000316", "HP:0001250", "HP:0000252"]


@pytest.fixture(scope="module")
def stage2_model(stage2_workdir):
    return inference.load(stage2_workdir, batch_size=4)


def demo_images(demo_dir, n):
    with open(os.path.join(demo_dir, "manifest.jsonl")) as f:
        recs = [json.loads(line) for line in f][:n]
    return [os.path.join(demo_dir, r["image"]) for r in recs]


def assert_unit_rows(x, n, d):
    assert x.shape == (n, d) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_stage2_encodes_texts_images_phenotypes(stage2_model, tiny_demo_dir):
    m = stage2_model
    assert m.kind == "stage2" and m.has_images and m.image_size == 16
    assert_unit_rows(m.encode_texts(["a b", "hypertelorism", "seizure", "x", "y", "z"]), 6, 16)  # > batch
    paths = demo_images(tiny_demo_dir, 5)
    from_paths = m.encode_images(paths)
    assert_unit_rows(from_paths, 5, 16)
    from PIL import Image

    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_allclose(m.encode_images(arrays), from_paths, atol=1e-5)
    grey = np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)  # MedMNIST-like
    assert_unit_rows(m.encode_images(grey), 3, 16)
    assert_unit_rows(m.encode_phenotypes(PHENOTYPES), 3, 16)


def test_batching_does_not_change_embeddings(stage2_model):
    texts = ["short", "a somewhat longer caption about the skull", "seizure", "ear", "eye", "limb", "skin"]
    together = stage2_model.encode_texts(texts)
    alone = np.concatenate([stage2_model.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_phenotypes_are_template_ensembles_of_ontology_names(stage2_model):
    m = stage2_model
    templates = ("this is an image of {}", "{} presented in image")
    got = m.encode_phenotypes(PHENOTYPES, templates)
    names = [m.ontology.names[m.ontology.index(h)] for h in PHENOTYPES]
    assert names[1] == "Seizure"
    per = [m.encode_texts([t.format(n) for t in templates]) for n in names]
    want = np.stack([p.mean(0) / np.linalg.norm(p.mean(0)) for p in per])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(m.encode_phenotypes(PHENOTYPES[:1], ("{}",)), m.encode_texts([names[0]]), atol=1e-5)


def test_checkpoint_folders_load_the_same_model(stage2_workdir, stage2_model):
    # The final params/ equal the last training checkpoint's state params.
    want = stage2_model.encode_texts(["seizure"])
    last = max(int(s) for s in os.listdir(os.path.join(stage2_workdir, "checkpoints")) if s.isdigit())
    for sub in ("params", "checkpoints", f"checkpoints/{last}"):
        m = inference.load(os.path.join(stage2_workdir, sub))
        assert m.kind == "stage2"
        np.testing.assert_allclose(m.encode_texts(["seizure"]), want, atol=1e-5)
    first = inference.load(os.path.join(stage2_workdir, "checkpoints", "2"))
    assert not np.allclose(first.encode_texts(["seizure"]), want, atol=1e-5)  # an earlier step is another model


def test_stage1_is_text_only(stage1_workdir):
    m = inference.load(stage1_workdir)
    assert m.kind == "stage1" and not m.has_images and m.templates == ("{}",)
    assert_unit_rows(m.encode_texts(["Seizure"]), 1, 16)
    table = np.load(os.path.join(stage1_workdir, "phenotype_table.npz"))
    ids = [str(x) for x in table["ids"][:3]]
    # Bare names through the stage-1 encoder reproduce the table the stage-1 run exported.
    np.testing.assert_allclose(m.encode_phenotypes(ids), table["vectors"][:3], atol=1e-5)
    with pytest.raises(ValueError, match="stage-1 .*no image tower"):
        m.encode_images(np.zeros((1, 16, 16, 3), np.uint8))
    assert inference.load(os.path.join(stage1_workdir, "encoder")).kind == "stage1"
    # The last training checkpoint (step 3) holds the same text tower as encoder/.
    from_ckpt = inference.load(os.path.join(stage1_workdir, "checkpoints"))
    np.testing.assert_allclose(from_ckpt.encode_texts(["Seizure"]), m.encode_texts(["Seizure"]), atol=1e-5)


def test_bad_inputs_are_refused(stage2_model, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        stage2_model.encode_images(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(TypeError, match="list of strings"):
        stage2_model.encode_texts("one string")
    with pytest.raises(FileNotFoundError, match="not a phenolip_jax workdir"):
        inference.load(str(tmp_path))


def test_open_clip_directory(tmp_path, tiny_bert_dir):
    oc = pytest.importorskip("phenolip_jax.convert.open_clip")
    import jax
    from safetensors.numpy import save_file

    from phenolip_jax.models import bert as bert_lib
    from phenolip_jax.models import two_tower

    with open(os.path.join(tiny_bert_dir, "config.json")) as f:
        hf = json.load(f)
    bert = dict(bert_lib.config_from_hf(hf), pooling="cls", use_pooler=False)
    fields = dict(image_config=dict(vit=dict(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64,
                                             pool="cls"), head="linear", embed_dim=16, head_bias=False),
                  text_config=dict(bert=bert, head="mlp", embed_dim=16, head_hidden_dim=(32 + 16) // 2,
                                   head_bias=False))
    model = two_tower.TwoTower(**fields)
    ids = np.ones((1, 8), np.int32)
    params = jax.device_get(model.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32), ids, ids)["params"])
    save_file(oc.two_tower_to_state_dict(fields, params), str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps(oc.open_clip_config(fields, hf, context_length=32)))
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(tiny_bert_dir, f)):
            shutil.copy(os.path.join(tiny_bert_dir, f), tmp_path / f)
    m = inference.load(str(tmp_path))
    assert m.kind == "open_clip" and m.max_len == 32 and m.image_size == 16
    tok = m.tokenizer(["seizure"], max_length=32, truncation=True, padding="max_length", return_tensors="np")
    want = model.apply({"params": params}, tok["input_ids"].astype(np.int32), tok["attention_mask"].astype(np.int32),
                       method=model.encode_text)
    np.testing.assert_allclose(m.encode_texts(["seizure"]), np.asarray(want), atol=1e-5)
    assert_unit_rows(m.encode_images(np.zeros((2, 20, 20, 3), np.uint8)), 2, 16)


# ------------------------------------------------------------------- API papercuts (issue 16, item 8)
def test_one_hwc_image_is_refused_not_read_as_rows(stage2_model):
    one = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"one image of shape \(16, 16, 3\).*image\[None\]"):
        stage2_model.encode_images(one)
    with pytest.raises(ValueError, match="one image"):
        stage2_model.encode_images(np.zeros((16, 16), np.uint8))
    assert_unit_rows(stage2_model.encode_images(one[None]), 1, 16)


def test_empty_inputs_give_zero_rows_of_the_embedding_width(stage2_model, stage1_workdir):
    assert stage2_model.embed_dim == 16
    assert stage2_model.encode_texts([]).shape == (0, 16)
    assert stage2_model.encode_images([]).shape == (0, 16)
    assert stage2_model.encode_images(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, 16)
    assert stage2_model.encode_phenotypes([]).shape == (0, 16)
    assert inference.load(stage1_workdir).encode_texts([]).shape == (0, 16)


def test_empty_text_warns(stage2_model):
    with pytest.warns(UserWarning, match="empty text"):
        stage2_model.encode_texts(["seizure", "  "])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stage2_model.encode_texts(["seizure"])


def test_underscore_hpo_ids_are_accepted(stage2_model):
    assert inference.canonical_hpo_id("HP_0000316") == "HP:0000316"
    assert inference.canonical_hpo_id("Seizure") == "Seizure"
    np.testing.assert_allclose(stage2_model.encode_phenotypes(["HP_0000316", "hp:0001250"]),
                               stage2_model.encode_phenotypes(["HP:0000316", "HP:0001250"]), atol=1e-6)


def test_logit_scale_classify_and_short_repr(stage2_model, stage1_workdir, tiny_demo_dir):
    m = stage2_model
    assert m.logit_scale == pytest.approx(float(np.exp(m.params["logit_scale"])))
    paths = demo_images(tiny_demo_dir, 3)
    probs = m.classify(paths, PHENOTYPES)
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    logits = m.logit_scale * m.encode_images(paths) @ m.encode_phenotypes(PHENOTYPES).T
    np.testing.assert_array_equal(probs.argmax(1), logits.argmax(1))
    text = repr(m)
    assert text.startswith("Model(kind='stage2'") and "embed_dim=16" in text and len(text) < 300
    stage1 = inference.load(stage1_workdir)
    assert stage1.logit_scale is None and len(repr(stage1)) < 300
    with pytest.raises(ValueError, match="cannot classify"):
        stage1.classify(paths, PHENOTYPES)
