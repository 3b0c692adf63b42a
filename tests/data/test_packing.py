"""Packed ArrayRecord shards (library + CLI) and the tfds builder, each feeding the Grain pipeline."""
import json
import os
import subprocess
import sys

import grain
import numpy as np
import pytest
from PIL import Image

from phenolip_jax.data.manifest import write_jsonl
from phenolip_jax.data.packing import PackedSource, decode_entry, encode_entry, pack_records, shrink_image
from phenolip_jax.data.pipeline import RecordSource, make_eval_batches
from phenolip_jax.data.records import Record

CFG = dict(image_size=8, max_len=10, per_host_batch_size=2, max_hpo=2, max_ancestors=4,
           max_organs=3, read_threads=1, prefetch=1)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    records = []
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(tmp_path / f"imgs/{i}.png")
        records.append(Record(f"imgs/{i}.png", f"caption {i}", ("HP:0001250",) if i % 2 else (),
                              split="train" if i < 5 else "test", origin="m.jsonl", line=i + 1))
    # A grey 16-bit image: stored as is, converted to RGB when read.
    Image.fromarray(np.full((9, 11), 30000, np.uint16)).save(tmp_path / "imgs/7.png")
    records.append(Record("imgs/7.png", "grey", (), split="test", line=8))
    return tmp_path, records


def test_entry_roundtrip():
    meta = {"caption": "é", "hpo_ids": ["HP:0001250"], "image_id": 3}
    assert decode_entry(encode_entry(meta, b"\x89PNG...")) == (meta, b"\x89PNG...")


def test_shrink_image_only_when_larger():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(buf, format="PNG")
    assert shrink_image(buf.getvalue(), 0) == buf.getvalue()
    assert shrink_image(buf.getvalue(), 40) == buf.getvalue()
    assert Image.open(io.BytesIO(shrink_image(buf.getvalue(), 10))).size == (5, 10)


def test_pack_and_read_back_matches_folder(folder, tok, onto):
    root, records = folder
    out = root / "packed"
    summary = pack_records(records, root, out, num_shards=2, progress=False)
    assert summary["train"]["num_examples"] == 5 and len(summary["train"]["shards"]) == 2
    (out / "packing.json").write_text(json.dumps({"splits": summary}))
    train = [r for r in records if r.split == "train"]
    packed, direct = PackedSource(out, "train"), RecordSource(train, root)
    assert len(packed) == 5
    for i in range(5):  # same examples, same order, same ids
        a, b = packed[i], direct[i]
        assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    test = [r for r in records if r.split == "test"]
    from_packed = list(make_eval_batches(CFG, PackedSource(out, "test"), tok, onto))
    from_folder = list(make_eval_batches(CFG, test, tok, onto, image_root=root))
    assert len(from_packed) == 2
    for x, y in zip(from_packed, from_folder):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    with pytest.raises(KeyError, match="not packed"):
        PackedSource(out, "validation")


def test_packing_cli_validates_and_reports(folder):
    root, records = folder
    write_jsonl(records + [Record("imgs/missing.png", "gone", ())], root / "m.jsonl")
    out = root / "cli"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "phenolip_jax.data.packing", f"--manifest={root / 'm.jsonl'}",
         f"--output={out}", "--num_shards=3"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "packed 8/8 records" in proc.stderr and "missing_image" in proc.stderr
    info = json.loads((out / "packing.json").read_text())
    assert info["validation"]["counts"] == {"missing_image": 1, "converted": 1, "no_hpo": 5}
    assert info["splits"]["train"]["num_examples"] == 5 and len(info["splits"]["train"]["shards"]) == 3
    assert len(PackedSource(out, "test")) == 3


def test_tfds_builder_end_to_end(folder, tok, onto):
    import tensorflow_datasets as tfds

    from phenolip_jax.data.tfds_builder import ExampleSource, PhenoKGFolder

    root, records = folder
    write_jsonl(records, root / "m.jsonl")
    data_dir = root / "tfds"
    PhenoKGFolder(data_dir=os.fspath(data_dir), manifest=os.fspath(root / "m.jsonl"),
                  ontology=onto).download_and_prepare()
    source = tfds.data_source("phenokg_folder", data_dir=os.fspath(data_dir), split="test")
    assert len(source) == 3
    examples = [ExampleSource(source)[i] for i in range(3)]
    by_caption = {e["caption"]: e for e in examples}
    assert set(by_caption) == {"caption 5", "caption 6", "grey"}
    assert by_caption["grey"]["image"].shape == (9, 11, 3)
    assert (by_caption["grey"]["image"] == round(30000 * 255 / 65535)).all()
    assert by_caption["caption 5"]["hpo_ids"] == ("HP:0001250",)
    np.testing.assert_array_equal(by_caption["caption 6"]["image"],
                                  np.asarray(Image.open(root / "imgs/6.png")))
    ds = grain.MapDataset.source(ExampleSource(source))
    assert len(ds) == 3 and ds[0]["caption"] in by_caption
    batches = list(make_eval_batches(CFG, ExampleSource(source), tok, onto))
    assert [int(b["valid"].sum()) for b in batches] == [2, 1]
