"""Config errors not covered by tests/test_config.py: every one is a ValueError naming the field, raised by
`config_checks.validate`, which the stages call before loading data or compiling anything."""
import os
import subprocess
import sys

import pytest

from phenolip_jax import config_checks
from tests.tasks.conftest import REPO, load_config


@pytest.mark.parametrize("field", ["init.checkpoint", "data.manifest", "data.test_csv", "text.hf_dir"])
def test_missing_paths_are_named(field, tmp_path):
    cfg = load_config("stage2")
    section, key = field.split(".")
    cfg[section][key] = str(tmp_path / "does_not_exist")
    with pytest.raises(ValueError, match=rf"config\.{field}=.*does not exist"):
        config_checks.validate(cfg, 1)


def test_missing_teacher_workdir_is_named_for_stage2_variants(tmp_path):
    cfg = load_config("stage2", "biomedclip")
    cfg.text.hf_dir = cfg.init.checkpoint = str(tmp_path)  # the variant requires both (checked apart)
    (tmp_path / "manifest.jsonl").write_text("")
    cfg.data.manifest = str(tmp_path / "manifest.jsonl")  # source='jsonl' needs one
    cfg.teacher.workdir = str(tmp_path / "no_teacher")
    with pytest.raises(ValueError, match=r"config\.teacher\.workdir="):
        config_checks.validate(cfg, 8)


@pytest.mark.parametrize("field,value,match", [
    ("total_steps", 0, r"config\.total_steps=0"),
    ("checkpoint_every", -1, r"config\.checkpoint_every=-1"),
    ("log_every", 0, r"config\.log_every=0"),
])
def test_non_positive_run_lengths_are_named(field, value, match):
    cfg = load_config("stage2")
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        config_checks.validate(cfg, 1)


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_learning_rate_is_named(lr):
    cfg = load_config("stage2")
    cfg.optim.lr = lr
    with pytest.raises(ValueError, match=r"config\.optim"):
        config_checks.validate(cfg, 1)


def test_stage1_batch_must_split_over_devices():
    cfg = load_config("stage1")
    cfg.data.terms_per_batch = 3  # 3 terms x 2 views = 6 rows on 8 devices
    with pytest.raises(ValueError, match="not divisible by the device count 8"):
        config_checks.validate(cfg, 8)


def test_bad_shape_on_the_command_line_fails_before_any_compilation(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-m", "phenolip_jax.main", "--config=configs/stage2.py", "--config.data.batch_size=12",
         f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "config.data.batch_size=12 is not divisible by the device count 8" in proc.stderr
    out = proc.stdout + proc.stderr
    assert "compiled train step" not in out and "stage 2:" not in out  # nothing was loaded or compiled
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


@pytest.mark.parametrize("field,value,match", [
    ("kind_weights.synonym", -1.0, r"config\.data\.kind_weights="),
    ("kind_weights.definition", float("nan"), r"config\.data\.kind_weights="),
    ("hard_negative_group", 3, r"config\.data\.hard_negative_group=3"),
    ("hard_negative_group", 0, r"config\.data\.hard_negative_group=0"),
])
def test_stage1_sampling_fields_are_named_before_anything_loads(field, value, match, tmp_path):
    from phenolip_jax.tasks import stage1

    cfg = load_config("stage1")
    section = cfg.data
    *parents, key = field.split(".")
    for p in parents:
        section = section[p]
    section[key] = value
    with pytest.raises(ValueError, match=match):
        stage1.run(cfg, str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing written
