"""Helpers for end-to-end stage runs (the tiny BERT / demo fixtures live in tests/conftest.py)."""
import os

from phenolip_jax.config_lib import load_config  # noqa: F401 (the tests' config loader)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
