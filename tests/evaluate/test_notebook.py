"""notebooks/colab_eval.ipynb runs top to bottom on a tiny stage-2 workdir (no jupyter: its code cells are exec'd)."""
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

import pytest

from tests.tasks.conftest import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "colab_eval.ipynb")


def notebook_code(path):
    """The code cells' source, in order, with shell (!) and magic (%) lines turned into `pass`."""
    with open(path) as f:
        nb = json.load(f)
    assert nb["nbformat"] == 4
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        # Keep the indentation so that a magic inside a block leaves a valid block behind.
        cells.append(re.sub(r"^(\s*)[!%].*$", r"\1pass", src, flags=re.MULTILINE))
    return cells


def test_shell_and_magic_lines_become_pass():
    with open(NOTEBOOK) as f:
        sources = ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    index = next(i for i, s in enumerate(sources) if "jax[cuda12]" in s)
    assert re.search(r"^\s+!pip install", sources[index], re.MULTILINE)  # the GPU cell really shells out ...
    code = notebook_code(NOTEBOOK)[index]
    assert not re.search(r"^\s*[!%]", code, re.MULTILINE)  # ... and the test turns that into `pass`
    compile(code, "cell", "exec")


def test_notebook_runs_on_a_tiny_checkpoint(stage2_workdir, tiny_demo_dir, tmp_path, monkeypatch):
    out = tmp_path / "nb_out"
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_CHECKPOINT", stage2_workdir)
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_DATA", os.path.join(tiny_demo_dir, "manifest.jsonl"))
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_IMAGES", os.path.join(tiny_demo_dir, "images"))
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_ORGAN_SYSTEM", "HP:0000598")  # fewer candidates: a faster test
    monkeypatch.setenv("PHENOLIP_NOTEBOOK_SKIP_GPU_INSTALL", "1")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for i, code in enumerate(notebook_code(NOTEBOOK)):
        exec(compile(code, f"{NOTEBOOK}:cell{i}", "exec"), namespace)
    assert namespace["CHECKPOINT"] == stage2_workdir  # the given checkpoint: no demo training
    assert namespace["model"].kind == "stage2"
    with open(out / "eval_results.json") as f:
        saved = json.load(f)
    assert {"retrieval", "zero_shot", "matching", "hierarchy", "linear_probe"} <= set(saved)
    for name in saved["figures"].values():
        assert (out / name).stat().st_size > 1000
    assert (out / "report.md").exists()
    assert (out / "predict" / "predictions.csv").stat().st_size > 100  # the predict cell ran on the demo images


def test_notebook_has_open_instructions_repo_url_gpu_install_and_upload_cells():
    with open(NOTEBOOK) as f:
        cells = json.load(f)["cells"]
    sources = ["".join(c["source"]) for c in cells]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert "File > Upload notebook" in sources[0]  # how to open it in Colab, with no made-up repository link
    assigned = [s for s in sources if re.search(r"^REPO_URL = ", s, re.MULTILINE)]
    assert len(assigned) == 1 and sum(s.count("REPO_URL =") for s in sources) == 1  # one visible place
    gpu = next(s for s in sources if "jax[cuda12]" in s)
    # A command that runs on a GPU runtime, not a comment telling the user to type it.
    assert re.search(r'^if shutil\.which\("nvidia-smi"\).*:\n\s+!pip install -q "jax\[cuda12\]', gpu, re.MULTILINE)
    upload = next(s for s in code if "google.colab" in s)
    assert "drive.mount(" in upload and "files.upload()" in upload
    assert any("configs/predict.py" in s for s in sources) and any('load_config("predict")' in s for s in sources)


# ------------------------------------------------------------------ issue 23: installing without a URL
def install_cell() -> str:
    """The first code cell's source (the install cell): plain Python, no shell lines."""
    return notebook_code(NOTEBOOK)[0]


def install_functions() -> dict:
    """The install cell's namespace, run where phenolip_jax already imports (so it installs nothing)."""
    namespace = {"__name__": "__main__"}
    exec(compile(install_cell(), f"{NOTEBOOK}:cell0", "exec"), namespace)
    return namespace


def run_install_cell_without_phenolip_jax(monkeypatch, folder):
    """Runs the install cell in `folder` as on a fresh runtime; returns the shell commands it ran (none really)."""
    ran = []

    def fake_run(command, *args, **kwargs):
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setitem(sys.modules, "phenolip_jax", None)  # `import phenolip_jax` raises ImportError
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delenv("PHENOLIP_REPO_URL", raising=False)
    monkeypatch.chdir(folder)
    exec(compile(install_cell(), f"{NOTEBOOK}:cell0", "exec"), {"__name__": "__main__"})
    return ran


def test_install_cell_without_a_package_file_or_url_says_both_ways(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError) as err:
        run_install_cell_without_phenolip_jax(monkeypatch, tmp_path)
    message = str(err.value)
    assert "pip wheel --no-deps -w dist ." in message and "git archive" in message  # way 1: upload a file ...
    assert "REPO_URL" in message  # ... way 2: name the repository


def test_install_cell_installs_an_uploaded_wheel(monkeypatch, tmp_path):
    wheel = tmp_path / "phenolip_jax-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")  # never opened: the cell only hands its path to pip
    ran = run_install_cell_without_phenolip_jax(monkeypatch, tmp_path)
    assert ran == [f"{shlex.quote(sys.executable)} -m pip install -q {shlex.quote(str(wheel))}"]


def test_install_commands_choose_wheel_then_archive_then_url(tmp_path):
    ns = install_functions()
    install_commands, pip = ns["install_commands"], f"{shlex.quote(sys.executable)} -m pip install -q"
    empty, repo = tmp_path / "empty", tmp_path / "repo"
    empty.mkdir()
    repo.mkdir()
    for name in ("requirements.txt", "requirements-nodeps.txt", "configs/eval.py"):
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text("")
    # The repository as `git archive` writes it (no leading folder): unpacked and installed like a clone.
    archive = tmp_path / "src" / "phenolip_jax-src.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("requirements.txt", "requirements-nodeps.txt", "configs"):
            tar.add(repo / name, arcname=name)
    commands = install_commands([str(empty), str(archive.parent)], "")
    assert commands[0] == f"mkdir -p phenolip_jax_src && tar xzf {archive} -C phenolip_jax_src --strip-components=0"
    assert commands[1] == (f"cd phenolip_jax_src && {pip} -r requirements.txt && {pip} --no-deps -r "
                           "requirements-nodeps.txt")
    # An sdist (one leading folder, no requirements.txt): pip installs it as it would a wheel.
    sdist = tmp_path / "sdist" / "phenolip_jax-0.1.0.tar.gz"
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(repo / "configs", arcname="phenolip_jax-0.1.0/configs")
    assert install_commands([str(sdist.parent)], "https://example.org/x.git") == [f"{pip} {sdist}"]
    # A wheel wins over an archive in the same folder; the URL is used only when no file is found.
    wheel = sdist.parent / "phenolip_jax-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert install_commands([str(sdist.parent)], "") == [f"{pip} {wheel}"]
    url = "https://example.org/me/phenolip_jax.git"
    assert install_commands([str(empty), str(tmp_path / "missing")], url) == [
        f"test -d phenolip_jax_src || git clone -q {url} phenolip_jax_src", commands[1]]


def test_no_owner_placeholder_left():
    docs = [NOTEBOOK, os.path.join(REPO, "README.md")] + glob.glob(os.path.join(REPO, "docs", "*.md"))
    for path in docs:
        with open(path) as f:
            assert "OWNER" not in f.read(), path


def test_notebook_advises_restart_and_drive_workdir():
    with open(NOTEBOOK) as f:
        cells = json.load(f)["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert any("Runtime > Restart session" in m for m in markdown)
    drive = next(m for m in markdown if "drive.mount('/content/drive')" in m)
    assert "/content/drive/MyDrive/" in drive and "PHENOLIP_NOTEBOOK_WORKDIR" in drive
