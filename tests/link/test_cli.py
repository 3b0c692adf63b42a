"""The link command through main.py (one subprocess), and its one-line config errors."""
import json
import os
import subprocess
import sys

import pytest

from phenolip_jax import config_checks, config_lib
from tests.link.conftest import IDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_link_command_writes_manifest_evidence_and_summary(mini_obo, tmp_path):
    manifest = tmp_path / "m.jsonl"
    lines = [dict(image="a.png", caption="Bilateral pleural effusions. No hydrocephalus.", split="train"),
             dict(image="b.png", caption="Possible pneumothorax.", split="val", hpo_ids=["HP:0002650"]),
             dict(image="c.png", caption="Normal chest.", split="test")]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    env = dict(os.environ, PHENOLIP_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-m", "phenolip_jax.main", "--config=configs/link.py",
                          f"--config.input={manifest}", f"--config.ontology.obo_path={mini_obo}",
                          "--config.progress_every=1", f"--workdir={tmp_path / 'out'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out"
    linked = [json.loads(x) for x in (out / "linked.jsonl").read_text().splitlines()]
    assert [x["hpo_ids"] for x in linked] == [[IDS["effusion"]], ["HP:0002650"], []]
    assert [x["split"] for x in linked] == ["train", "val", "test"]
    evidence = [json.loads(x) for x in (out / "evidence.jsonl").read_text().splitlines()]
    first = evidence[0]["evidence"]
    assert [(e["span"], e["start"], e["end"], e["excluded"]) for e in first] == [
        ("pleural effusions", 10, 27, False), ("hydrocephalus", 32, 45, True)]
    summary = json.loads((out / "link_summary.json").read_text())
    assert (summary["captions"], summary["linked"], summary["negated"], summary["uncertain"]) == (3, 1, 1, 1)
    assert summary["method"] == "lexical" and "link: 3/3 captions" in run.stderr
    assert "top terms" in run.stdout


@pytest.mark.parametrize("field, value, message", [
    ("input", "", "config.input is empty"),
    ("method", "fuzzy", "config.method='fuzzy'"),
    ("method", "hybrid", "config.encoder is empty"),
    ("threshold", 2.0, "config.threshold=2.0"),
    ("span_filter", "all", "config.span_filter='all'"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
    cfg = config_lib.load_config("link")
    (tmp_path / "c.txt").write_text("Scoliosis.\n")
    cfg.input = str(tmp_path / "c.txt")
    cfg[field] = value
    with pytest.raises(ValueError, match=f"^{message}"):
        config_checks.validate(cfg, 1)
