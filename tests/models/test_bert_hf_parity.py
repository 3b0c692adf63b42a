"""Flax BERT with the real all-MiniLM-L6-v2 weights against transformers.BertModel (PyTorch)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phenolip_jax import artifacts
from phenolip_jax.convert import hf_bert
from phenolip_jax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Real sentences of different lengths, so the batch has padding.
SENTENCES = [
    "Abnormality of the skull.",
    "Short stature with disproportionately short limbs and a prominent forehead.",
    "Cleft palate",
    "Bilateral sensorineural hearing impairment, progressive, with onset in early childhood and tinnitus.",
]
TOL = 1e-4


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """Tokenised batch, the torch outputs and the converted Flax weights."""
    tokenizer = artifacts.load_tokenizer(minilm_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    model = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(batch["input_ids"]),
                    attention_mask=torch.from_numpy(batch["attention_mask"]))
    kwargs, params = hf_bert.load_hf_bert(minilm_dir, pooling="pooler")
    return dict(ids=batch["input_ids"], mask=batch["attention_mask"], hidden=out.last_hidden_state.numpy(),
                pooler=out.pooler_output.numpy(), kwargs=kwargs, params=params)


def _apply(ref, **overrides):
    """Run the Flax BERT on the reference batch with some fields overridden."""
    model = bert.BERT(**{**ref["kwargs"], **overrides})
    fn = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m))
    hidden, pooled = fn(ref["params"], jnp.asarray(ref["ids"]), jnp.asarray(ref["mask"]))
    return np.asarray(hidden), np.asarray(pooled)


def test_batch_really_has_padding(reference):
    lengths = reference["mask"].sum(1)
    assert lengths.min() < lengths.max() == reference["mask"].shape[1]
    assert reference["kwargs"]["depth"] == 6 and reference["kwargs"]["width"] == 384


def test_hidden_states_and_pooler_match_torch(reference):
    hidden, pooled = _apply(reference)
    keep = reference["mask"].astype(bool)
    assert np.abs(hidden[keep] - reference["hidden"][keep]).max() <= TOL
    assert np.abs(pooled - reference["pooler"]).max() <= TOL


def test_cls_pooling_matches_torch(reference):
    _, pooled = _apply(reference, pooling="cls")
    assert np.abs(pooled - reference["hidden"][:, 0]).max() <= TOL


def test_mean_pooling_matches_torch_masked_mean(reference):
    _, pooled = _apply(reference, pooling="mean")
    mask = torch.from_numpy(reference["mask"]).float()[..., None]
    expected = ((torch.from_numpy(reference["hidden"]) * mask).sum(1) / mask.sum(1)).numpy()
    assert np.abs(pooled - expected).max() <= TOL
    # Padding must not leak into the mean: an unmasked mean differs.
    assert np.abs(pooled - reference["hidden"].mean(1)).max() > 1e-2
