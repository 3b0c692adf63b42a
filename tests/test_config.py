"""Config validation: bad values are caught before compilation, naming the field."""
import subprocess
import sys

import pytest

from phenolip_jax import config_lib
from tests.tasks.conftest import REPO, load_config


@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_stage_configs_have_run_fields(name):
    cfg = load_config(name)
    for field in ("seed", "total_steps", "log_every", "eval_every", "checkpoint_every"):
        assert field in cfg
    config_lib.validate(cfg, 1)


def test_batch_not_divisible_by_devices():
    cfg = load_config("stage2")
    cfg.data.batch_size = 12
    with pytest.raises(ValueError, match="config.data.batch_size=12"):
        config_lib.validate(cfg, 8)


def test_patch_size_must_divide_image_size():
    cfg = load_config("stage2")
    cfg.model.image["patch_size"] = 7
    with pytest.raises(ValueError, match="config.model.image.patch_size=7"):
        config_lib.validate(cfg, 1)


def test_missing_teacher_path_named():
    cfg = load_config("stage2")
    cfg.teacher.workdir = "/nonexistent/teacher"
    with pytest.raises(ValueError, match="config.teacher.workdir"):
        config_lib.validate(cfg, 1)


def test_mesh_must_fit_devices():
    cfg = load_config("stage2")
    cfg.mesh.fsdp = 3
    with pytest.raises(ValueError, match="config.mesh"):
        config_lib.validate(cfg, 8)


def test_accumulation_must_split_batch():
    cfg = load_config("stage2")
    cfg.optim.grad_accum_steps = 3
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        config_lib.validate(cfg, 1)


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown stage2 variant"):
        load_config("stage2", "nope")


def test_unknown_config_key_fails_on_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "phenolip_jax.main", "--config=configs/stage2.py", "--config.data.no_such_field=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no_such_field" in proc.stderr


def test_stage1_batch_error_names_its_fields():
    cfg = load_config("stage1")
    cfg.data.terms_per_batch = 3
    cfg.data.views_per_term = 1
    with pytest.raises(ValueError, match="terms_per_batch x config.data.views_per_term=3"):
        config_lib.validate(cfg, 8)


def test_teacher_dir_must_be_a_finished_stage1_run(tmp_path):
    cfg = load_config("stage2")
    cfg.teacher.workdir = str(tmp_path)
    with pytest.raises(ValueError, match="not a finished stage-1 workdir"):
        config_lib.validate(cfg, 1)


def test_unknown_loss_kind():
    cfg = load_config("stage2")
    cfg.loss.kind = "hinge"
    with pytest.raises(ValueError, match="config.loss.kind='hinge'"):
        config_lib.validate(cfg, 1)
