"""ONNX export (issue 28): image_encoder.onnx / text_encoder.onnx under onnxruntime (CPU) against JAX."""
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phenolip_jax import config_checks, config_lib
from phenolip_jax.convert import export, onnx_export
from phenolip_jax.convert import open_clip as oc
from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import two_tower
from tests.convert.test_export import _config, _run_snippet, _snippet, _text_hf_dir, _write_run

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

TOL = 1e-4
# The snippet's process must not lean on what the export replaces: torch, JAX and phenolip_jax all look absent
# (None in sys.modules: imports fail, and importlib.util.find_spec, which transformers asks, answers None).
NO_TORCH_NO_JAX = "import sys\nsys.modules.update(dict.fromkeys(('torch', 'jax', 'jaxlib', 'flax', 'phenolip_jax')))\n"


def clip_fields(vit, bert_arch, embed_dim=512):
    """TwoTower fields in BiomedCLIP's layout (linear image head, open_clip's text MLP head) at the given sizes."""
    bert = dict(bert_lib.config_from_hf(bert_lib.KNOWN_HF_CONFIGS[bert_arch]), pooling="cls", use_pooler=False)
    return dict(image_config=dict(vit=dict(vit), head="linear", embed_dim=embed_dim, head_hidden_dim=None,
                                  head_bias=False),
                text_config=dict(bert=bert, head="mlp", embed_dim=embed_dim,
                                 head_hidden_dim=(bert["width"] + embed_dim) // 2, head_bias=False),
                logit_scale_init=float(np.log(25.0)))


def demo_fields():
    """The demo run's model (configs/stage2.py): ViT 64 px / patch 8, width 192, depth 4, + all-MiniLM-L6-v2."""
    cfg = config_lib.load_config("stage2")
    return clip_fields(cfg.model.image.to_dict(), "minilm-l6", int(cfg.model.embed_dim))


def random_params(fields, seed=0, std=0.05):
    """Random params of every leaf (norm scales around 1) from the shapes alone: model.init of a ViT-B/16 +
    BERT-base takes ~30 s on a 2-core CPU, this ~4 s. std 0.05 is the order of a trained BERT's weights."""
    size = fields["image_config"]["vit"]["image_size"]
    ids = jnp.ones((1, 8), jnp.int32)
    shapes = jax.eval_shape(two_tower.from_config(fields).init, jax.random.key(0), jnp.zeros((1, size, size, 3)),
                            ids, ids)["params"]
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        x = rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(std)
        return 1.0 + x if "'scale'" in jax.tree_util.keystr(path) else x

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _inputs(fields, batch, seq_len, seed=1):
    """Random NHWC images and token ids (the first row padded from the middle)."""
    rng = np.random.default_rng(seed)
    size = fields["image_config"]["vit"]["image_size"]
    ids = rng.integers(1, fields["text_config"]["bert"]["vocab_size"], (batch, seq_len))
    ids[0, seq_len // 2:] = 0
    return rng.standard_normal((batch, size, size, 3)).astype(np.float32), ids


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    fields = demo_fields()
    params = random_params(fields, seed=3)
    _write_run(root / "run", fields, params, _text_hf_dir())
    meta = json.loads((root / "run" / "model_config.json").read_text())
    meta["image_size"] = fields["image_config"]["vit"]["image_size"]  # _write_run writes the tiny model's 32
    (root / "run" / "model_config.json").write_text(json.dumps(meta))
    summary = export.run(_config(checkpoint=str(root / "run"), output=str(root / "out"), formats=("onnx",)))
    return root / "out", fields, params, summary


def test_export_writes_both_graphs_with_dynamic_batch_and_parity(exported):
    out, _, _, summary = exported
    assert json.loads((out / "export.json").read_text()) == summary
    assert set(summary["parity"]) == {"onnx_image_max_abs", "onnx_text_max_abs"}
    assert max(summary["parity"].values()) <= TOL, summary["parity"]
    assert "vocab.txt" in summary["onnx"]["tokenizer_files"]
    dims = {}
    for name in (onnx_export.IMAGE_FILE, onnx_export.TEXT_FILE):
        model = onnx.load(str(out / "onnx" / name))
        onnx.checker.check_model(model)
        (graph_input,) = model.graph.input
        dims[graph_input.name] = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims["pixel_values"][0] and isinstance(dims["pixel_values"][0], str)  # symbolic batch
    assert dims["pixel_values"][1:] == [3, 64, 64]
    assert all(isinstance(d, str) for d in dims["input_ids"])  # symbolic batch and sequence
    readme = (out / "README.md").read_text()
    assert "| `onnx/` |" in readme and "### onnxruntime" in readme and "onnx_image_max_abs" in readme


def test_onnxruntime_snippet_reproduces_jax_in_a_fresh_process(exported, tmp_path):
    from PIL import Image

    from phenolip_jax import inference

    out = exported[0]
    copy = tmp_path / "moved_export"
    shutil.copytree(out, copy)  # another folder: only what the export holds
    rng = np.random.default_rng(0)
    # Batch 3 and 16 tokens: the graphs were traced at batch 2 and 8 tokens (and verified at 2 x 16).
    paths = ["image.png", "small.png", "tall.png"]
    for name, shape in zip(paths, [(90, 140, 3), (50, 41, 3), (120, 64, 3)]):  # larger, smaller than 64 px
        Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(copy / name)
    texts = ["Clinical photograph showing hypertelorism.", "Seizure", "a b c"]
    code = _snippet((copy / "README.md").read_text(), "### onnxruntime")
    assert "import onnxruntime" in code and "import torch" not in code
    code += (f"\nnp.save('img.npy', embed_images({paths!r}))\n"
             f"np.save('txt.npy', embed_texts({texts!r}))\n")
    proc = _run_snippet(NO_TORCH_NO_JAX + code, copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = inference.load(str(out.parent / "run"))
    want_img = model.encode_images([str(copy / p) for p in paths])
    want_txt = model.encode_texts(texts)
    got_img, got_txt = np.load(copy / "img.npy"), np.load(copy / "txt.npy")
    assert got_img.shape == want_img.shape == got_txt.shape == want_txt.shape == (3, 512)
    diffs = float(np.abs(got_img - want_img).max()), float(np.abs(got_txt - want_txt).max())
    print(f"onnxruntime snippet vs JAX (images, texts): max abs diffs {diffs[0]:.2e}, {diffs[1]:.2e}")
    assert max(diffs) <= TOL


def test_vit_b16_bert_base_sized_model_matches_jax(tmp_path):
    vit = dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072, pool="cls")
    fields = clip_fields(vit, "pubmedbert")
    params = random_params(fields, seed=7)
    bert_config = oc.bert_config_from_fields(fields["text_config"]["bert"])
    written = onnx_export.export_onnx(fields, params, tmp_path, bert_config, mean=(0.5,) * 3, std=(0.25,) * 3,
                                      max_len=16)
    images, ids = _inputs(fields, batch=1, seq_len=12)
    model = two_tower.from_config(fields)
    mask = (ids != 0).astype(np.int32)
    out = model.apply({"params": params}, jnp.asarray(images), jnp.asarray(ids), jnp.asarray(mask))
    diffs = onnx_export.max_abs_diffs(tmp_path, images, ids, np.asarray(out["image"]), np.asarray(out["text"]))
    print(f"ViT-B/16 + BERT-base random model: {written['megabytes']} MB, export {written['export_seconds']} s, "
          f"ONNX Runtime vs JAX {diffs}")
    assert max(diffs.values()) <= TOL, diffs


def test_missing_exporter_fails_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    fields = clip_fields(dict(image_size=32, patch_size=16, width=64, depth=1, num_heads=2, mlp_dim=64), "minilm-l6")
    with pytest.raises(ImportError, match="onnxscript==0.7.2"):
        onnx_export.export_onnx(fields, {}, tmp_path, {}, mean=(0.5,) * 3, std=(0.5,) * 3, max_len=8)


def test_config_accepts_onnx_and_names_unknown_formats(tmp_path):
    cfg = _config(checkpoint=str(tmp_path), output=str(tmp_path / "o"), formats=("open_clip", "onnx"))
    config_checks.validate(cfg, num_devices=1)
    cfg.formats = ("onnx", "tflite")
    with pytest.raises(ValueError, match="config.formats has unknown 'tflite'.*onnx"):
        config_checks.validate(cfg, num_devices=1)
