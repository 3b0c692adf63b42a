"""Tiny stage-1 and stage-2 workdirs (trained once per session) for the inference, eval-run and notebook tests."""
import pytest

from tests.tasks.conftest import load_config
from tests.tasks.test_stages import tiny_stage1, tiny_stage2

# The demo sizes of tests/tasks/conftest.py::tiny_demo_dir, so the eval run reuses that dataset.
TINY_DEMO = dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16)


@pytest.fixture(scope="session")
def stage1_workdir(tiny_bert_dir, tmp_path_factory):
    """A finished 3-step stage-1 run (text-only knowledge encoder)."""
    from phenolip_jax.tasks import stage1

    workdir = str(tmp_path_factory.mktemp("eval_stage1"))
    stage1.run(tiny_stage1(tiny_bert_dir), workdir)
    return workdir


@pytest.fixture(scope="session")
def stage2_workdir(tiny_bert_dir, tiny_demo_dir, stage1_workdir, tmp_path_factory):
    """A finished 4-step stage-2 run on the tiny demo data (16 px images, 16-d embeddings)."""
    from phenolip_jax.tasks import stage2

    workdir = str(tmp_path_factory.mktemp("eval_stage2"))
    stage2.run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, stage1_workdir), workdir)
    return workdir


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
