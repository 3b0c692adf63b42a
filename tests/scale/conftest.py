"""Fixtures for the scale tests: the tiny BERT dir and demo data of tests/tasks, reused."""
from tests.tasks.conftest import tiny_bert_dir, tiny_demo_dir  # noqa: F401 - pytest fixtures
