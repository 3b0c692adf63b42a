"""convert.hf_bert: key map, error reporting, round trip, .bin loading; artifacts: the tokenizer check."""
import json
import shutil
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from phenolip_jax import artifacts
from phenolip_jax.convert import hf_bert
from phenolip_jax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A small random BertModel saved as a local HF directory (config.json + model.safetensors)."""
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=24, type_vocab_size=2)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    out = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(str(out))
    return out


def _tensors(path):
    return load_file(str(path / "model.safetensors"))


def test_tiny_model_forward_matches_torch(tiny_dir):
    kwargs, params = hf_bert.load_hf_bert(tiny_dir, pooling="pooler")
    model = transformers.BertModel.from_pretrained(str(tiny_dir), attn_implementation="eager").eval()
    ids = np.array([[2, 17, 33, 9, 4], [2, 5, 6, 0, 0]], np.int64)
    mask = (ids != 0).astype(np.int64)
    types = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], np.int64)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types))
    hidden, pooled = bert.BERT(**kwargs).apply({"params": params}, ids, mask, types)
    keep = mask.astype(bool)
    assert np.abs(np.asarray(hidden)[keep] - ref.last_hidden_state.numpy()[keep]).max() <= 1e-5
    assert np.abs(np.asarray(pooled) - ref.pooler_output.numpy()).max() <= 1e-5


def test_round_trip_is_exact(tiny_dir):
    kwargs, params = hf_bert.load_hf_bert(tiny_dir, pooling="pooler")
    state = hf_bert.bert_params_to_hf_state_dict(params)
    original = {k: v for k, v in _tensors(tiny_dir).items() if not k.endswith("position_ids")}
    assert set(state) == set(original)
    for key, value in original.items():
        np.testing.assert_array_equal(state[key], value)
    again = hf_bert.state_dict_to_bert_params(state, kwargs)
    jax.tree.map(np.testing.assert_array_equal, again, params)
    # The exported tree also matches what the Flax module initialises.
    init = jax.eval_shape(bert.BERT(**kwargs).init, jax.random.key(0), np.ones((1, 4), np.int32))["params"]
    assert jax.tree.map(lambda a: a.shape, init) == jax.tree.map(lambda a: a.shape, params)


def test_prefix_buffers_and_heads_are_handled(tiny_dir):
    kwargs, params = hf_bert.load_hf_bert(tiny_dir)  # pooling 'cls': the pooler is dropped
    assert "pooler" not in params and kwargs["use_pooler"] is False
    state = {"bert." + k: v for k, v in _tensors(tiny_dir).items()}
    state["bert.embeddings.position_ids"] = np.arange(24)[None]
    state["cls.predictions.bias"] = np.zeros(64, np.float32)
    state["cls.seq_relationship.weight"] = np.zeros((2, 16), np.float32)
    # Legacy TF-era names.
    state["bert.embeddings.LayerNorm.gamma"] = state.pop("bert.embeddings.LayerNorm.weight")
    state["bert.embeddings.LayerNorm.beta"] = state.pop("bert.embeddings.LayerNorm.bias")
    loaded = hf_bert.state_dict_to_bert_params(state, kwargs)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_missing_and_unexpected_keys_are_named(tiny_dir):
    kwargs, _ = hf_bert.load_hf_bert(tiny_dir)
    state = dict(_tensors(tiny_dir))
    del state["encoder.layer.1.attention.self.key.weight"]
    state["encoder.layer.0.adapter.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError) as err:
        hf_bert.state_dict_to_bert_params(state, kwargs)
    assert "encoder.layer.1.attention.self.key.weight" in str(err.value)
    assert "encoder.layer.0.adapter.weight" in str(err.value)
    with pytest.raises(ValueError, match="pooler.dense.weight"):
        hf_bert.state_dict_to_bert_params({k: v for k, v in _tensors(tiny_dir).items() if "pooler" not in k},
                                          dict(kwargs, use_pooler=True))
    state = dict(_tensors(tiny_dir))
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="encoder.layer.0.intermediate.dense.weight"):
        hf_bert.state_dict_to_bert_params(state, kwargs)


def test_pytorch_bin_loads_like_safetensors(tiny_dir, tmp_path, monkeypatch):
    _, expected = hf_bert.load_hf_bert(tiny_dir)
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in _tensors(tiny_dir).items()}, tmp_path / "pytorch_model.bin")
    _, params = hf_bert.load_hf_bert(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, params, expected)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ImportError, match="needs torch"):
        hf_bert.load_hf_bert(tmp_path)


def test_missing_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf_bert.load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(vocab_size=8, hidden_size=4, num_hidden_layers=1,
                                                          num_attention_heads=1, intermediate_size=8)))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        hf_bert.load_hf_bert(tmp_path)


def test_real_tokenizer_knows_words(minilm_dir):
    tokenizer = artifacts.load_tokenizer(minilm_dir)
    ids = tokenizer("skull phenotype", add_special_tokens=False)["input_ids"]
    assert ids and tokenizer.unk_token_id not in ids
    assert len(tokenizer) == 30522


def test_five_token_vocab_is_rejected(minilm_dir, tmp_path):
    # The transformers 5 trap: vocab_file= is ignored and a 5-token vocabulary is built silently.
    trap = transformers.BertTokenizerFast(vocab_file=str(minilm_dir / "vocab.txt"))
    with pytest.raises(ValueError, match="UNK"):
        artifacts.check_tokenizer(trap)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(ValueError, match="UNK"):
        artifacts.load_tokenizer(tmp_path)
