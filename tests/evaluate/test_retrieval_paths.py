"""One retrieval evaluator: training-time eval (eval.json) and the eval command agree on the same model.

A "perfect" stand-in for TwoTower embeds an image by its flat colour and a text by the phenotype words it
contains, so every image ranks its own caption and phenotype first. Two of the six images share one
caption: merged as CLIP_benchmark merges identical texts, every direction scores R@1 = 1.0 in both paths
(the old training-time path counted the twin caption row against each image: I2T R@1 = 4/6).
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from phenolip_jax import artifacts, config_lib, inference
from phenolip_jax.data.records import Record
from phenolip_jax.evaluate import run as evaluate_run
from phenolip_jax.evaluate.datasets import PairSet
from phenolip_jax.ontology import load_ontology
from phenolip_jax.tasks import stage2

TERMS = ("HP:0000316", "HP:0001250", "HP:0000252", "HP:0000486", "HP:0001263")
CLASS_OF_IMAGE = (0, 0, 1, 2, 3, 4)  # images 0 and 1 share their caption and phenotype
TEMPLATES = ("{}", "an image of {}")  # non-default, so each path must read its config field
KS = (1, 5)
DIM = 8


class PerfectModel:
    """Stands in for TwoTower (`apply(variables, *args, method=...)`): one-hot embeddings of the class."""

    def __init__(self, token_class: np.ndarray):
        self.token_class = jnp.asarray(token_class)  # [vocab] class index + 1 of a phenotype word, 0 otherwise

    def encode_image(self, images):
        """Class from the flat colour 40 * (class + 1) of images normalised with mean 0, std 1."""
        cls = jnp.round(images[:, 0, 0, 0] * 255 / 40).astype(jnp.int32) - 1
        return jax.nn.one_hot(cls, DIM)

    def encode_text(self, input_ids, attention_mask=None):
        """Sum of the one-hot classes of the text's phenotype words, unit norm."""
        hits = jax.nn.one_hot(self.token_class[input_ids] - 1, DIM) * attention_mask[..., None]
        emb = hits.sum(axis=1)
        return emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-6)

    def apply(self, variables, *args, method):
        del variables
        return method(*args)


@pytest.fixture(scope="module")
def setup(tiny_bert_dir, tmp_path_factory):
    onto = load_ontology()
    tokenizer = artifacts.load_tokenizer(tiny_bert_dir)
    names = [onto.names[onto.index(t)] for t in TERMS]
    token_class = np.zeros(len(tokenizer), np.int32)
    for c, name in enumerate(names):
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        assert not token_class[ids].any(), "the phenotype names must not share a word piece"
        token_class[ids] = c + 1
    root = tmp_path_factory.mktemp("perfect")
    records = []
    for i, c in enumerate(CLASS_OF_IMAGE):
        Image.fromarray(np.full((16, 16, 3), 40 * (c + 1), np.uint8)).save(root / f"img{i}.png")
        records.append(Record(f"img{i}.png", f"Clinical photograph showing {names[c].lower()}.", (TERMS[c],),
                              split="test", image_id=f"img{i}"))
    assert len({r.caption for r in records}) == len(records) - 1  # one caption is shared
    return onto, tokenizer, PerfectModel(token_class), records, str(root)


def training_path(onto, tokenizer, model, records, root) -> dict[str, float]:
    """eval.json's figures: stage 2's held-out evaluator, as the training loop calls it."""
    cfg = config_lib.load_config("stage2")
    cfg.data.image_size, cfg.data.mean, cfg.data.std, cfg.data.max_len = 16, (0.0,) * 3, (1.0,) * 3, 16
    cfg.eval.batch_size, cfg.eval.ks, cfg.eval.templates = 4, KS, TEMPLATES
    evaluate = stage2.make_evaluator(cfg, model, records, root, tokenizer, onto,
                                    train_hpo={h for r in records for h in r.hpo_ids})
    return evaluate(types.SimpleNamespace(params={"unused": np.zeros(1, np.float32)}))


def command_path(onto, tokenizer, model, records, root) -> dict:
    """The eval command's retrieval figures for the same model and pairs."""
    cfg = config_lib.load_config("eval")
    cfg.evaluators, cfg.ks, cfg.templates = ("retrieval",), KS, TEMPLATES
    encoder = inference.Model("stage2", model, {"unused": np.zeros(1, np.float32)}, tokenizer, 16, 16,
                              (0.0,) * 3, (1.0,) * 3, batch_size=4)
    encoder.ontology = onto
    pairs = PairSet([f"{root}/{r.image}" for r in records], [r.image_id for r in records],
                    [r.caption for r in records], [r.hpo_ids for r in records], [r.split for r in records])
    return evaluate_run.run_evaluators(cfg, encoder, onto, pairs, None)["retrieval"]


def test_perfect_model_scores_one_in_both_paths_with_shared_captions(setup):
    flat = training_path(*setup)
    nested = command_path(*setup)
    for name, short in (("image_to_text", "i2t"), ("text_to_image", "t2i"), ("image_to_phenotype", "i2p"),
                        ("phenotype_to_image", "p2i")):
        for k in KS:
            assert flat[f"{short}_r@{k}"] == 1.0, (short, k, flat)
            assert nested[name][f"r@{k}"] == 1.0, (name, k, nested[name])
            assert flat[f"{short}_chance_r@{k}"] == pytest.approx(nested[name][f"chance_r@{k}"])
    assert flat["num_images"] == nested["n_images"] == 6
    assert flat["num_texts"] == nested["n_captions"] == 5  # the shared caption is one text
    assert flat["num_phenotypes"] == nested["n_phenotypes"] == len(TERMS)
