"""Mistakes the user can fix end the command with one line and exit 2, through main (no traceback)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.tasks.conftest import REPO


def _main(args, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "phenolip_jax.main", *args, f"--workdir={tmp_path / 'w'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    return proc.returncode, lines, proc.stderr


@pytest.mark.parametrize("args,match", [
    (["--config=configs/predict.py", "--config.checkpoint=/no/such/run", "--config.images={images}"],
     "config.checkpoint='/no/such/run' does not exist"),
    (["--config=configs/stage2.py", "--config.data.demo.num_phenotypes=4"], "config.data.demo="),
    (["--config=configs/stage1.py:pubmedbert"], "config.text.hf_dir is empty.*BiomedBERT"),
    (["--config=configs/stage2.py:biomedclip", "--config.data.manifest={manifest}",
      "--config.text.hf_dir={images}"], "config.init.checkpoint is empty"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, match, tmp_path):
    import re

    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    (tmp_path / "m.jsonl").write_text("")
    args = [a.format(images=images, manifest=tmp_path / "m.jsonl") for a in args]
    code, lines, err = _main(args, tmp_path)
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and re.search(match, lines[0]), err[-2000:]
    assert "Traceback" not in err


def test_errors_raised_while_running_are_one_line_when_they_name_a_field(capsys):
    from phenolip_jax import main

    def raising(exc):
        with main.one_line_errors():
            raise exc

    with pytest.raises(SystemExit) as e:
        raising(ValueError("config.organ_system='eye' is not an organ system: use one of ..."))
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ValueError, match="a bug"):  # ours to fix: the traceback stays
        raising(ValueError("a bug"))


def test_candidates_in_the_demo_format_and_unknown_ids(tmp_path):
    from phenolip_jax.evaluate import predict, run
    from phenolip_jax.ontology import load_ontology

    onto = load_ontology()
    demo = tmp_path / "phenotypes.json"
    demo.write_text(json.dumps([{"hpo_id": "HP:0001250", "name": "Seizure"}, {"hpo_id": "HP:0000316"}]))
    assert run.read_candidates(str(demo)) == ["HP:0001250", "HP:0000316"]
    assert predict.select_candidates(onto, str(demo)) == ["HP:0001250", "HP:0000316"]
    bad = tmp_path / "ids.txt"
    bad.write_text("HP:0001250\nHP:9999999\n")
    with pytest.raises(ValueError, match=r"^config\.candidates=.*HP:9999999"):
        predict.select_candidates(onto, str(bad))
    with pytest.raises(ValueError, match=r"^config\.organ_system='eye'"):
        predict.select_candidates(onto, "", "eye")


def test_export_writes_into_the_workdir_by_default(tmp_path):
    # The README's export command passes --workdir only: config.output defaults to it, as predict and eval do.
    from phenolip_jax import main
    from phenolip_jax.config_lib import load_config

    cfg = load_config("export")
    cfg.checkpoint = str(tmp_path)
    main.prepare(cfg, str(tmp_path / "export"))
    assert cfg.output == str(tmp_path / "export")


def test_a_finished_run_says_so_and_exits(tmp_path, capsys):
    from phenolip_jax import main
    from phenolip_jax.config_lib import load_config

    cfg = load_config("stage2")
    work = tmp_path / "run"
    (work / "checkpoints" / str(cfg.total_steps)).mkdir(parents=True)
    (work / "eval.json").write_text("{}")
    main.dispatch(cfg, str(work))  # returns at once: nothing is loaded, compiled or evaluated
    assert "is a finished run (step 300 of 300" in capsys.readouterr().out
    cfg.total_steps = 400  # trains on: not finished
    from phenolip_jax import config_tools

    assert config_tools.finished_step(str(work), 400) is None
