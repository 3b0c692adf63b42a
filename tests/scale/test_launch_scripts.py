"""launch/: scripts parse (bash -n), pass shellcheck when it is installed, and document their parameters."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = ["tpu_pod.sh", "slurm_gpu.sbatch", "single_gpu.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_is_executable(name):
    path = LAUNCH / name
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert os.access(path, os.X_OK), f"{name} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck_clean(name):
    out = subprocess.run(["shellcheck", "--severity=style", str(LAUNCH / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_parameter_is_documented(name):
    """Each `VAR="${VAR:-...}"` / `${VAR:?...}` parameter appears in the script's header comment."""
    text = (LAUNCH / name).read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    params = set(re.findall(r'^([A-Z][A-Z0-9_]+)="\$\{\1:[-?]', text, flags=re.M))
    assert params, name
    missing = sorted(p for p in params if p not in header and p != "REPO_ROOT")
    assert not missing, f"{name}: undocumented parameters {missing}"
    readme = (LAUNCH / "README.md").read_text()
    assert name in readme


def test_scripts_run_main():
    for name in SCRIPTS:
        assert "python -m phenolip_jax.main" in (LAUNCH / name).read_text(), name
    assert "PHENOLIP_DISTRIBUTED=1" in (LAUNCH / "tpu_pod.sh").read_text()
    assert "--worker=all" in (LAUNCH / "tpu_pod.sh").read_text()
    assert "jax[tpu]" in (LAUNCH / "tpu_pod.sh").read_text()
    assert "jax[cuda12]" in (LAUNCH / "single_gpu.sh").read_text()


def test_single_gpu_script_fails_fast_without_a_gpu(tmp_path):
    """With SKIP_INSTALL and a CPU-only venv the script stops at its GPU check, before any training."""
    venv = Path(__file__).resolve().parents[2] / ".venv"
    if not (venv / "bin" / "activate").exists():
        pytest.skip("no .venv")
    env = dict(os.environ, SKIP_INSTALL="1", VENV=str(venv), WORKDIR=str(tmp_path / "w"), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(["bash", str(LAUNCH / "single_gpu.sh")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode != 0
    assert "AssertionError" in out.stderr
    assert not (tmp_path / "w").exists()


def test_paper_runs_distil_from_a_pubmedbert_teacher():
    # The paper's knowledge encoder is a BERT of the student's family: a PubMedBERT stage 1 for stage2:biomedclip.
    pod = (LAUNCH / "tpu_pod.sh").read_text()
    assert 'STAGE1_CONFIG="${STAGE1_CONFIG:-configs/stage1.py:pubmedbert}"' in pod
    assert 'STAGE2_CONFIG="${STAGE2_CONFIG:-configs/stage2.py:biomedclip}"' in pod
    slurm = (LAUNCH / "slurm_gpu.sbatch").read_text()
    assert 'CONFIG="${CONFIG:-configs/stage1.py:pubmedbert}"' in slurm
    # single_gpu.sh: the stage-1 variant follows a biomedclip stage 2 unless given
    script = (LAUNCH / "single_gpu.sh").read_text()
    block = script[script.index('STAGE1_VARIANT="${STAGE1_VARIANT:-}"'):script.index('STAGE1_ARGS="${STAGE1_ARGS:-}"')]
    out = subprocess.run(["bash", "-c", f'set -eu; VARIANT=biomedclip; {block}\necho "$STAGE1_VARIANT"'],
                         capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    assert out.stdout.strip() == "pubmedbert"
    for text in (pod, slurm, (LAUNCH / "README.md").read_text()):
        assert "--config.init.checkpoint=" in text  # stage2.py:biomedclip starts from BiomedCLIP
