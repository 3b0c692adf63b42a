"""Helpers for end-to-end stage runs (the tiny BERT / demo fixtures live in tests/conftest.py)."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, arg: str | None = None):
    """configs/<name>.py:get_config(arg), loaded by path as absl's config_flags does."""
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)
