"""The packer with a link step (issue 25 item 4): captions without ids packed with linked ones and their evidence."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from phenolip_jax import config_lib
from phenolip_jax.data.packing import PackedSource
from phenolip_jax.link.pack import link_config, pack_linked
from tests.tasks.conftest import REPO

CAPTIONS = ["Axial CT showing hydrocephalus.", "No evidence of hydrocephalus.", "Normal chest radiograph.",
            "Coronal MRI: hydrocephalus and seizures."]


def flags_for(tmp_path, **kw):
    """The packer's flags as pack_linked reads them (absl's FLAGS stand-in)."""
    root = tmp_path / "src"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "m.jsonl", "w") as f:
        for i, caption in enumerate(CAPTIONS):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
            f.write(json.dumps({"image": f"{i}.png", "caption": caption, "split": "train" if i < 3 else "test"}) + "\n")
    base = dict(manifest=None, input=str(root / "m.jsonl"), format="jsonl", image_root=None,
                output=str(tmp_path / "packed"), num_shards=1, tokenizer=None, image_size=0, image_format="keep",
                jpeg_quality=90, max_len=256, teacher_tokenizer=None, teacher_max_len=0, max_hpo=None, max_side=0,
                strict=False, allow_absolute_paths=False,
                csv_img_key="filepath", csv_caption_key="title", csv_separator="\t", parquet_image_column="image",
                parquet_caption_column="caption", link="lexical", link_encoder="", link_threshold=None)
    return types.SimpleNamespace(**{**base, **kw})


def test_linked_ids_are_packed_with_their_evidence(tmp_path):
    f = flags_for(tmp_path)
    info = pack_linked(f)
    assert info["link"]["method"] == "lexical" and info["link"]["captions"] == 4
    assert info["validation"]["counts"]["no_hpo"] == 4  # as read: the ids came from the link step
    packed = [PackedSource(f.output, split)[i] for split, n in (("train", 3), ("test", 1)) for i in range(n)]
    ids = sorted(tuple(ex["hpo_ids"]) for ex in packed)
    assert ids == [(), (), ("HP:0000238",), ("HP:0000238", "HP:0001250")]  # negated and normal: none
    rows = [json.loads(line) for line in open(os.path.join(f.output, "link_evidence.jsonl"))]
    assert [r["caption"] for r in rows] == CAPTIONS
    negated = rows[1]["evidence"]
    assert rows[1]["hpo_ids"] == [] and negated and all(e["excluded"] for e in negated)
    assert {e["method"] for r in rows for e in r["evidence"]} == {"lexical"}
    assert json.loads(open(os.path.join(f.output, "link_summary.json")).read())["linked"] == 2


def test_link_flags_are_checked():
    with pytest.raises(config_lib.UserError, match="--link=hybrid needs --link_encoder"):
        link_config("hybrid", "", None)
    assert link_config("encoder", "/some/run", 0.95).threshold == 0.95


def test_command_line(tmp_path):
    f = flags_for(tmp_path)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "phenolip_jax.link.pack", f"--input={f.input}", "--format=jsonl",
           f"--output={f.output}"]
    proc = subprocess.run(cmd + ["--link=hybrid"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --link=hybrid needs")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 4 records" in proc.stderr and os.path.exists(os.path.join(f.output, "link_evidence.jsonl"))
