"""No input line is lost without a count (every reader path), and image paths cannot escape the image root."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from phenolip_jax import config_lib
from phenolip_jax.data.manifest import read_and_validate
from phenolip_jax.data.records import BadRecordError, UnsafePathError, resolve_image_path
from phenolip_jax.evaluate import datasets
from phenolip_jax.tasks import stage2

GOOD = {"caption": "a seizure", "hpo_ids": ["HP:0001250"], "split": "train"}
# Every kind of bad line, once (twice for blank), between two good ones; reason per line (None = kept).
EXPECTED = {"malformed_line": 4, "blank_line": 2, "unsafe_path": 3, "missing_image": 1, "corrupt_image": 1,
            "empty_caption": 1, "unknown_hpo": 1, "duplicate": 1}


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    """(manifest path, image root, absolute path of a good image): 16 lines, 2 of them good."""
    base = tmp_path_factory.mktemp("accounting")
    root = base / "root"
    root.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / "good.png")
    Image.fromarray(img).save(base / "outside.png")  # a real image outside the root
    (root / "corrupt.png").write_bytes(b"\x89PNG not really")
    os.symlink(base / "outside.png", root / "link.png")  # inside by name, outside by target
    line = lambda **kw: json.dumps({**GOOD, **kw}).encode()  # noqa: E731
    lines = [
        line(image="good.png"),
        b'{"image": "good.png", "caption": "bad \xff byte"}',  # not UTF-8
        b"not json at all",
        b"",  # blank
        b"[1, 2]",  # JSON, not an object
        json.dumps({"caption": "no image field"}).encode(),
        line(image="missing.png", caption="gone"),
        line(image="corrupt.png", caption="broken"),
        line(image="good.png", caption="   "),
        line(image="good.png", caption="unknown id", hpo_ids=["HP:9999999"]),
        line(image="good.png"),  # duplicate of line 1
        line(image="../outside.png", caption="escape"),
        line(image="link.png", caption="symlink escape"),
        line(image=str(root / "good.png"), caption="absolute"),
        line(image="good.png", caption="short stature", hpo_ids=["HP:0004322"], split="test"),
        b"   ",  # whitespace only
    ]
    path = base / "manifest.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path), str(root)


def check_counts(text_or_report, allow_absolute=False):
    want = dict(EXPECTED, unsafe_path=EXPECTED["unsafe_path"] - allow_absolute)
    kept = 16 - sum(want.values())
    if isinstance(text_or_report, str):
        assert f"records: 16 read, {kept} kept, {16 - kept} dropped" in text_or_report, text_or_report
        for reason, n in want.items():
            assert f"  {reason:<15} {n:>7} (dropped)" in text_or_report, (reason, text_or_report)
        return
    report = text_or_report
    assert report.total == 16 == report.kept + report.dropped
    assert report.kept == kept
    assert {r: report.counts[r] for r in want} == want


@pytest.mark.parametrize("allow_absolute", [False, True])
def test_every_line_is_kept_or_counted_by_reason(bad_manifest, onto, tok, allow_absolute):
    path, root = bad_manifest
    kept, report = read_and_validate([path], onto, root, tokenizer=tok, max_len=16, allow_absolute=allow_absolute)
    check_counts(report, allow_absolute)
    assert [r.line for r in kept] == ([1, 14, 15] if allow_absolute else [1, 15])


def test_strict_fails_on_the_first_bad_line(bad_manifest, onto):
    path, root = bad_manifest
    with pytest.raises(BadRecordError, match=r"manifest\.jsonl:2: malformed_line"):
        read_and_validate([path], onto, root, strict=True)


def stage2_cfg(path, root, strict=False):
    cfg = config_lib.load_config("stage2")
    cfg.data.source, cfg.data.manifest, cfg.data.image_root, cfg.data.strict = "jsonl", path, root, strict
    cfg.data.max_len = 16
    return cfg


def test_stage2_and_eval_readers_count_every_line(bad_manifest, onto, tok, capsys):
    path, root = bad_manifest
    splits, _ = stage2.load_records(stage2_cfg(path, root), onto, tok)
    assert sum(map(len, splits.values())) == 2
    check_counts(capsys.readouterr().out)
    with pytest.raises(BadRecordError, match=r":2: malformed_line"):
        stage2.load_records(stage2_cfg(path, root, strict=True), onto, tok)

    pairs = datasets.load_pairs(path, root, onto)
    assert len(pairs.captions) == 2
    check_counts(capsys.readouterr().out)
    with pytest.raises(BadRecordError, match=r":2: malformed_line"):
        datasets.load_pairs(path, root, onto, strict=True)


def test_packing_cli_counts_every_line(bad_manifest, tmp_path):
    path, root = bad_manifest
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "phenolip_jax.data.packing", f"--manifest={path}", f"--image_root={root}",
           f"--output={tmp_path / 'packed'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    check_counts(proc.stderr)
    strict = subprocess.run(cmd + ["--strict"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert strict.returncode != 0 and ":2: malformed_line" in strict.stderr


def test_image_paths_cannot_escape_the_root(bad_manifest):
    _, root = bad_manifest
    assert resolve_image_path("good.png", root) == os.path.join(os.path.realpath(root), "good.png")
    assert resolve_image_path("sub/../good.png", root) == os.path.join(os.path.realpath(root), "good.png")
    for bad in ("../outside.png", "../../../../etc/passwd", "link.png", "/etc/passwd"):
        with pytest.raises(UnsafePathError):
            resolve_image_path(bad, root)
    assert resolve_image_path("/etc/passwd", root, allow_absolute=True) == "/etc/passwd"
    with pytest.raises(UnsafePathError):  # the flag is about absolute paths only: escapes stay refused
        resolve_image_path("../outside.png", root, allow_absolute=True)
