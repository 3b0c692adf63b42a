"""open_clip (BiomedCLIP layout) import/export: strict key set, parity with the torch reference, round trips."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from phenolip_jax.convert import open_clip as oc
from phenolip_jax.models import two_tower
from tests.convert.conftest import random_params, tiny_fields

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from phenolip_jax.convert import torch_reference  # noqa: E402

TOL = 1e-4


def _bert_config(fields):
    return oc.bert_config_from_fields(fields["text_config"]["bert"])


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(1, 100, (3, 12))
    ids[1, 5:] = 0  # padding, masked as open_clip does (ids != pad_token_id)
    return images, ids


def _flax(fields, params, images, ids):
    out = two_tower.from_config(fields).apply({"params": params}, images, ids, (ids != 0).astype(np.int32))
    logits = out["logit_scale"] * out["image"] @ out["text"].T
    if out["logit_bias"] is not None:
        logits = logits + out["logit_bias"]
    return np.asarray(out["image"]), np.asarray(out["text"]), np.asarray(logits)


def _reference(fields, params):
    """The torch reference built from the exported config, loaded strictly with the exported state dict."""
    state = oc.two_tower_to_state_dict(fields, params)
    config = oc.open_clip_config(fields, _bert_config(fields), has_logit_bias="logit_bias" in state)
    model = torch_reference.build_from_open_clip_config(json.loads(json.dumps(config))).eval()
    result = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model, state, config


VARIANTS = {
    "biomedclip": {},
    "mlp_image_head_linear_text_logit_bias": dict(image_head="mlp", text_head="linear", logit_bias=-10.0),
    "pooler_and_avg_pool": dict(pooling="pooler", vit_pool="mean"),
    "mean_pooling": dict(pooling="mean"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_matches_reference(variant):
    fields = tiny_fields(**VARIANTS[variant])
    params = random_params(fields, seed=1)
    model, _, _ = _reference(fields, params)
    images, ids = _inputs()
    img, txt, logits = _flax(fields, params, images, ids)
    timg, tids = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(ids)
    with torch.no_grad():
        diffs = dict(image=np.abs(model.encode_image(timg).numpy() - img).max(),
                     text=np.abs(model.encode_text(tids).numpy() - txt).max(),
                     logits=np.abs(model.get_logits(timg, tids).numpy() - logits).max())
    print(f"{variant}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) < TOL, diffs


def test_biomedclip_key_layout(fields, params):
    state = oc.two_tower_to_state_dict(fields, params)
    assert state["visual.trunk.pos_embed"].shape == (1, 17, 64)
    assert state["visual.trunk.blocks.1.attn.qkv.weight"].shape == (192, 64)
    assert state["visual.head.proj.weight"].shape == (32, 64) and "visual.head.proj.bias" not in state
    assert state["text.proj.0.weight"].shape == (48, 64) and state["text.proj.2.weight"].shape == (32, 48)
    assert state["logit_scale"].shape == () and "logit_bias" not in state
    assert not any(k.startswith("text.transformer.pooler") or k.endswith("position_ids") for k in state)
    cfg = oc.open_clip_config(fields, _bert_config(fields))["model_cfg"]
    assert cfg["text_cfg"]["hf_proj_type"] == "mlp"
    assert cfg["text_cfg"]["hf_pooler_type"] == "cls_last_hidden_state_pooler"
    assert cfg["vision_cfg"]["timm_proj"] == "linear" and cfg["vision_cfg"]["timm_pool"] == ""


def _write_checkpoint(folder, state, config, as_bin=False):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / oc.CONFIG_NAME).write_text(json.dumps(config))
    if as_bin:
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, folder / "open_clip_pytorch_model.bin")
    else:
        save_file(state, str(folder / "open_clip_model.safetensors"))


def test_import_then_export_is_bit_exact(tmp_path, fields, params):
    state = oc.two_tower_to_state_dict(fields, params)
    _write_checkpoint(tmp_path, state, oc.open_clip_config(fields, _bert_config(fields)))
    got_fields, got_params = oc.import_open_clip(tmp_path)
    assert got_fields["image_config"]["vit"] == fields["image_config"]["vit"]
    assert got_fields["text_config"]["head_hidden_dim"] == 48
    assert jax.tree.structure(got_params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    back = oc.two_tower_to_state_dict(got_fields, got_params)
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k
    # The imported fields build a TwoTower that applies to the imported params.
    images, ids = _inputs()
    np.testing.assert_array_equal(_flax(got_fields, got_params, images, ids)[2], _flax(fields, params, images, ids)[2])


def test_import_biomedclip_hub_style_checkpoint(tmp_path, fields, params):
    """A hub-style folder: torch pickle with a position_ids buffer and 'module.' prefixes, config without
    hf_model_config, BERT sizes from a text_config.json next to it."""
    state = oc.two_tower_to_state_dict(fields, params)
    config = oc.open_clip_config(fields, _bert_config(fields))
    del config["model_cfg"]["text_cfg"]["hf_model_config"]
    saved = {f"module.{k}": v for k, v in state.items()}
    saved["module.text.transformer.embeddings.position_ids"] = np.arange(32)[None]
    _write_checkpoint(tmp_path, saved, config, as_bin=True)
    (tmp_path / "text_config.json").write_text(json.dumps(_bert_config(fields)))
    got_fields, got_params = oc.import_open_clip(tmp_path)
    assert got_fields["text_config"]["bert"]["num_heads"] == 4
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    meta = oc.open_clip_metadata(tmp_path)
    assert meta["image_size"] == 32 and meta["context_length"] == 256 and len(meta["mean"]) == 3
    # Without any BERT config the sizes come from the shapes, heads assumed width // 64.
    (tmp_path / "text_config.json").unlink()
    shaped, _ = oc.import_open_clip(tmp_path)
    bert = shaped["text_config"]["bert"]
    assert (bert["vocab_size"], bert["width"], bert["depth"], bert["mlp_dim"], bert["num_heads"]) == (100, 64, 2, 128, 1)


def test_import_errors_list_every_problem(tmp_path, fields, params):
    state = oc.two_tower_to_state_dict(fields, params)
    state.pop("text.proj.2.weight")
    state.pop("visual.trunk.blocks.0.norm1.bias")
    state["visual.head.extra.weight"] = np.zeros((2, 2), np.float32)
    state["text.transformer.embeddings.word_embeddings.weight"] = np.zeros((101, 64), np.float32)
    _write_checkpoint(tmp_path, state, oc.open_clip_config(fields, _bert_config(fields)))
    with pytest.raises(ValueError) as err:
        oc.import_open_clip(tmp_path)
    msg = str(err.value)
    for needle in ("text.proj.2.weight", "visual.trunk.blocks.0.norm1.bias", "visual.head.extra.weight",
                   "word_embeddings.weight: (101, 64) != expected (100, 64)"):
        assert needle in msg, needle
    with pytest.raises(FileNotFoundError, match="does not exist"):
        oc.import_open_clip(tmp_path / "nowhere")
    (tmp_path / oc.CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        oc.import_open_clip(tmp_path)


def test_non_open_clip_heads_are_refused(params):
    fields = tiny_fields()
    fields["text_config"]["head_hidden_dim"] = 64  # open_clip's mlp hidden is (64 + 32) // 2 = 48
    with pytest.raises(ValueError, match="hidden"):
        oc.two_tower_to_state_dict(fields, params)
    fields = tiny_fields()
    fields["text_config"]["head_bias"] = True
    with pytest.raises(ValueError, match="no biases"):
        oc.open_clip_config(fields, {})


def test_mlp_head_with_fc1_bias_only_is_refused(tmp_path):
    fields = tiny_fields(image_head="mlp")
    state = oc.two_tower_to_state_dict(fields, random_params(fields))
    assert np.all(state["visual.head.mlp.fc1.bias"] == 0)  # a bias-free head exports a zero fc1 bias
    state["visual.head.mlp.fc1.bias"] = state["visual.head.mlp.fc1.bias"] + 1.0
    with pytest.raises(ValueError, match="fc1.bias is non-zero"):
        oc.state_dict_to_two_tower(state, fields)


def test_stage2_can_initialise_from_import(tmp_path, fields, params):
    """import_open_clip's output is a drop-in TwoTower init: same tree as model.init for those fields."""
    state = oc.two_tower_to_state_dict(fields, params)
    _write_checkpoint(tmp_path, state, oc.open_clip_config(fields, _bert_config(fields)))
    got_fields, got_params = oc.import_open_clip(tmp_path)
    model = two_tower.from_config(got_fields)
    init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 8), jnp.int32))
    assert jax.tree.map(lambda x: x.shape, init["params"]) == jax.tree.map(np.shape, got_params)
    assert got_fields["logit_scale_init"] == pytest.approx(float(params["logit_scale"]))


BIOMEDCLIP_CONFIG = {  # the model_cfg of microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224
    "embed_dim": 512,
    "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 224},
    "text_cfg": {"hf_model_name": oc.BIOMEDCLIP_TEXT, "hf_tokenizer_name": oc.BIOMEDCLIP_TEXT,
                 "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
}
BERT_BASE = dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")


def test_biomedclip_sizes_and_config_round_trip():
    """At BiomedCLIP's real sizes (no weights built): METHOD.md's shapes, and the config written back."""
    fields = oc.fields_from_open_clip(BIOMEDCLIP_CONFIG, BERT_BASE)
    assert fields["text_config"]["head_hidden_dim"] == 640
    shapes = oc.expected_shapes(fields)
    assert shapes["visual.trunk.pos_embed"] == (1, 197, 768)
    assert shapes["visual.trunk.patch_embed.proj.weight"] == (768, 3, 16, 16)
    assert shapes["visual.trunk.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert shapes["visual.head.proj.weight"] == (512, 768)
    assert shapes["text.proj.0.weight"] == (640, 768) and shapes["text.proj.2.weight"] == (512, 640)
    assert shapes["text.transformer.embeddings.position_embeddings.weight"] == (512, 768)
    assert "text.transformer.pooler.dense.weight" not in shapes
    written = oc.open_clip_config(fields, BERT_BASE)["model_cfg"]
    for section in ("vision_cfg", "text_cfg"):
        for key, value in BIOMEDCLIP_CONFIG[section].items():
            assert written[section][key] == value, (section, key)
    assert "timm_model_kwargs" not in written["vision_cfg"]


def test_logit_bias_in_weights_but_not_in_config(tmp_path):
    fields = tiny_fields(logit_bias=-10.0)
    params = random_params(fields, seed=2)
    state = oc.two_tower_to_state_dict(fields, params)
    config = oc.open_clip_config(fields, _bert_config(fields))  # has_logit_bias left False: no init_logit_bias
    assert "init_logit_bias" not in config["model_cfg"]
    _write_checkpoint(tmp_path, state, config)
    got_fields, got_params = oc.import_open_clip(tmp_path)
    assert got_fields["logit_bias_init"] == float(params["logit_bias"])
    assert np.array_equal(got_params["logit_bias"], params["logit_bias"])
