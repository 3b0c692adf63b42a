"""The eval-run helpers of the inference, eval-run and notebook tests (their tiny runs: tests/conftest.py)."""

from tests.tasks.conftest import load_config

# The demo sizes of tests/tasks/conftest.py::tiny_demo_dir, so the eval run reuses that dataset.
TINY_DEMO = dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16)


def tiny_eval_config(checkpoint, demo_dir, out_dir):
    """configs/eval.py (demo) pointed at the tiny demo dataset, with a small probe sweep."""
    cfg = load_config("eval", "demo")
    cfg.checkpoint = checkpoint
    cfg.output_dir = out_dir
    cfg.data.demo_dir = demo_dir
    cfg.data.demo = dict(TINY_DEMO)
    cfg.data.demo_image_size = 16
    cfg.probe.seeds = (0, 1)
    cfg.probe.cs = (0.1, 1.0, 10.0)
    return cfg
