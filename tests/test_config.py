"""Config validation: bad values are caught before compilation, naming the field."""
import json
import os
import subprocess
import sys

import pytest

from phenolip_jax import config_checks
from tests.tasks.conftest import REPO, load_config


@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_stage_configs_have_run_fields(name):
    cfg = load_config(name)
    for field in ("seed", "total_steps", "log_every", "eval_every", "checkpoint_every"):
        assert field in cfg
    config_checks.validate(cfg, 1)


def test_batch_not_divisible_by_devices():
    cfg = load_config("stage2")
    cfg.data.batch_size = 12
    with pytest.raises(ValueError, match="config.data.batch_size=12"):
        config_checks.validate(cfg, 8)


def test_patch_size_must_divide_image_size():
    cfg = load_config("stage2")
    cfg.model.image["patch_size"] = 7
    with pytest.raises(ValueError, match="config.model.image.patch_size=7"):
        config_checks.validate(cfg, 1)


def test_missing_teacher_path_named():
    cfg = load_config("stage2")
    cfg.teacher.workdir = "/nonexistent/teacher"
    with pytest.raises(ValueError, match="config.teacher.workdir"):
        config_checks.validate(cfg, 1)


def test_mesh_must_fit_devices():
    cfg = load_config("stage2")
    cfg.mesh.fsdp = 3
    with pytest.raises(ValueError, match="config.mesh"):
        config_checks.validate(cfg, 8)


def test_accumulation_must_split_batch():
    cfg = load_config("stage2")
    cfg.optim.grad_accum_steps = 3
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        config_checks.validate(cfg, 1)


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
        config_checks.validate(cfg, 8)


def test_teacher_dir_must_be_a_finished_stage1_run(tmp_path):
    cfg = load_config("stage2")
    cfg.teacher.workdir = str(tmp_path)
    with pytest.raises(ValueError, match="not a finished stage-1 workdir"):
        config_checks.validate(cfg, 1)


def test_unknown_loss_kind():
    cfg = load_config("stage2")
    cfg.loss.kind = "hinge"
    with pytest.raises(ValueError, match="config.loss.kind='hinge'"):
        config_checks.validate(cfg, 1)


# --- one clear line before any work (issue 16 item 4) ---------------------------------------------------------

def run_main(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "phenolip_jax.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("override,expected", [
    ("--config.foo=1", "error: config.foo: no such config field; config.* fields: checkpoint_every, data,"),
    ("--config.data.batchsize=8", "error: config.data.batchsize: no such config field; config.data.* fields: "),
    ("--config.data.batch_size=-8", "error: config.data.batch_size=-8 must be > 0"),
])
def test_config_mistakes_print_one_line_naming_the_field(override, expected, tmp_path):
    proc = run_main("--config=configs/stage2.py", override, f"--workdir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr[-3000:]
    if "no such config field" in expected:  # the line lists the fields that do exist
        assert (" batch_size," if "data." in override else " data,") in lines[0]
    assert "Traceback" not in proc.stderr and "\\n" not in proc.stderr
    assert os.listdir(tmp_path) == []  # nothing was loaded or written


@pytest.mark.parametrize("field,value,match", [
    ("data.source", "parquet", r"^config\.data\.source='parquet': use one of 'demo', 'jsonl', 'arrayrecord', 'tfds'$"),
    ("data.batch_size", -64, r"^config\.data\.batch_size=-64 must be > 0$"),
    ("model.remat", "sometimes", r"^config\.model\.remat='sometimes': use one of 'none', 'full', 'save_dots'$"),
    ("optim.schedule", "linear", r"^config\.optim\.schedule='linear': use one of 'cosine', 'constant'$"),
])
def test_enumerated_and_sized_fields_are_validated(field, value, match):
    cfg = load_config("stage2")
    cfg[field.split(".")[0]][field.split(".")[1]] = value
    with pytest.raises(ValueError, match=match):
        config_checks.validate(cfg, 1)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
@pytest.mark.parametrize("field,value,match", [
    ("hop_decay", 1.5, r"^config\.loss\.hierarchy\.hop_decay=1\.5 must lie in \[0, 1\]"),
    ("hop_decay", -0.5, r"^config\.loss\.hierarchy\.hop_decay=-0\.5 must lie in \[0, 1\]"),
    ("organ_weight", -0.1, r"^config\.loss\.hierarchy\.organ_weight=-0\.1 must lie in \[0, 1\]"),
    ("max_hops", -1, r"^config\.loss\.hierarchy\.max_hops=-1 must be an integer in \[0, 64\]$"),
])
def test_hierarchy_weights_are_checked_before_any_trace(stage, field, value, match):
    cfg = load_config(stage)
    cfg.loss.hierarchy[field] = value
    with pytest.raises(ValueError, match=match):
        config_checks.validate(cfg, 1)


def test_jsonl_source_needs_a_manifest():
    cfg = load_config("stage2")
    cfg.data.source = "jsonl"
    with pytest.raises(ValueError, match=r"config\.data\.manifest is empty: config\.data\.source='jsonl'"):
        config_checks.validate(cfg, 1)


def test_unknown_evaluator_fails_before_any_evaluator_runs(tmp_path):
    cfg = load_config("eval")
    cfg.checkpoint = str(tmp_path)
    cfg.evaluators = ("retrieval", "zero_shoot")
    with pytest.raises(ValueError, match=r"config\.evaluators has unknown 'zero_shoot': use any of retrieval, "):
        config_checks.validate(cfg, 1)


def test_list_config_prints_fields_with_comments_and_the_variants():
    proc = run_main("--config=configs/stage2.py", "--list_config")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "biomedclip  paper-sized" in out  # the variants, from the config file's docstring
    assert "  data.batch_size = 64  # global batch (pairs per step over all devices)" in out
    assert "  optim.warmup_steps = 30  # linear warmup from 0" in out  # a comment from config_lib.optim_section
    assert "  loss.hierarchy.max_hops = 2  # is-a hops" in out
    assert "  model.remat = 'none'  # both towers' blocks" in out
    variant = run_main("--config=configs/eval.py:medmnist", "--list_config")  # a variant lists its own fields
    assert variant.returncode == 0, variant.stderr[-3000:]
    assert "  data.kind = 'medmnist'" in variant.stdout


# --- a run remembers its config (issue 16 item 3) -------------------------------------------------------------

def _resumable(workdir, cfg):
    from phenolip_jax import config_tools

    config_tools.save_run_config(cfg, str(workdir))
    os.makedirs(workdir / "checkpoints" / "100")


def test_resume_with_a_changed_meaning_is_an_error_listing_each_field(tmp_path):
    from phenolip_jax import config_tools

    _resumable(tmp_path, load_config("stage2"))
    cfg = load_config("stage2")
    cfg.data.batch_size = 32
    cfg.optim.lr = 1e-2
    cfg.total_steps = 900  # safe: how long the run goes
    cfg.log_every = 5
    with pytest.raises(config_tools.ConfigMismatchError) as err:
        config_tools.check_resume_config(cfg, str(tmp_path))
    message = str(err.value)
    assert "(2 fields): config.data.batch_size: 64 -> 32; config.optim.lr: 0.0005 -> 0.01." in message
    assert "--allow_config_change" in message and "total_steps" not in message
    assert config_tools.check_resume_config(cfg, str(tmp_path), allow_changes=True) == [
        ("data.batch_size", 64, 32), ("optim.lr", 0.0005, 0.01)]


def test_safe_changes_and_fresh_workdirs_pass(tmp_path):
    from phenolip_jax import config_tools

    cfg = load_config("stage2")
    config_tools.save_run_config(cfg, str(tmp_path))
    changed = load_config("stage2")
    changed.optim.lr = 1.0
    assert config_tools.check_resume_config(changed, str(tmp_path)) == []  # no checkpoint: not a resume
    _resumable(tmp_path / "run", cfg)
    safe = load_config("stage2")
    safe.total_steps, safe.eval_every, safe.data.workers, safe.eval.batch_size = 10, 5, 4, 16
    assert config_tools.check_resume_config(safe, str(tmp_path / "run")) == []


def test_main_saves_the_config_and_refuses_a_changed_resume_before_loading_anything(tmp_path):
    from phenolip_jax import main

    cfg = load_config("stage2")
    main.prepare(cfg, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["data"]["batch_size"] == 64 and saved["model"]["remat"] == "none"
    os.makedirs(tmp_path / "checkpoints" / "50")
    cfg.model.embed_dim = 256
    with pytest.raises(ValueError, match=r"config\.model\.embed_dim: 512 -> 256"):
        main.prepare(cfg, str(tmp_path))
