"""A command answers a config mistake or --list_config before the heavy stack loads, without libtpu's noise."""
import os
import subprocess
import sys

import pytest

import phenolip_jax
from phenolip_jax import config_lib, main
from tests.tasks.conftest import REPO

# What a stage needs and a config check does not: each costs seconds of import on a small CPU.
HEAVY = ("flax", "optax", "orbax", "transformers", "torch", "sklearn", "tensorflow", "grain", "pronto")


def _python(code_or_args, env=None):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env or dict(os.environ), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("config", ["stage1", "stage2", "eval", "export", "predict", "ablation", "serve"])
def test_main_and_every_config_load_without_the_heavy_stack(config):
    code = ("import sys; from phenolip_jax import config_lib, main; "
            f"config_lib.load_config({config!r}); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"importing main and configs/{config}.py loads {proc.stdout.strip()}"


def test_every_stage_module_is_a_module_with_run():
    import importlib

    for stage, name in {**main.STAGE_MODULES, "aot": main.AOT_MODULE}.items():
        assert callable(importlib.import_module(name).run), stage


def test_ablation_arms_named_in_config_lib_are_the_defined_arms():
    from phenolip_jax.tasks import ablation

    assert tuple(ablation.ARMS) == config_lib.ABLATION_ARMS


def test_user_errors_are_config_lib_user_errors():
    from phenolip_jax.data.records import BadRecordError
    from phenolip_jax.ontology import OntologyReleaseError
    from phenolip_jax.tasks.ablation import StaleRunError

    for cls in (BadRecordError, OntologyReleaseError, StaleRunError):
        assert issubclass(cls, config_lib.UserError)


@pytest.mark.skipif(phenolip_jax._accelerator_present(),
                    reason="a TPU or GPU is present: JAX chooses its platforms there")
def test_config_error_on_a_cpu_host_is_one_line_without_libtpu_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TPU_ACCELERATOR_TYPE")}
    proc = _python(["-m", "phenolip_jax.main", "--config=configs/stage2.py", "--config.model.remat=bogus",
                    f"--workdir={tmp_path}"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: config.model.remat='bogus': use one of 'none', 'full', "
                                                "'save_dots'"], proc.stderr[-3000:]


def test_user_choice_of_platforms_is_kept(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["PHENOLIP_KEEP_PLATFORMS"] = "1"
    proc = _python("import os, phenolip_jax; print(os.environ.get('JAX_PLATFORMS', '<unset>'))", env=env)
    assert proc.stdout.strip() == "<unset>"
    env = dict(env, JAX_PLATFORMS="cpu,tpu")
    env.pop("PHENOLIP_KEEP_PLATFORMS")
    proc = _python("import os, phenolip_jax; print(os.environ['JAX_PLATFORMS'])", env=env)
    assert proc.stdout.strip() == "cpu,tpu"
