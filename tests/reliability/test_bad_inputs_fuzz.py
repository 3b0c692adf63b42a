"""Fuzzing the bad-input policy: malformed manifest lines, bad images and bad HPO ids go through `read_jsonl`
+ `validate_records` + the Grain eval pipeline. Nothing may crash, and every line is either kept or
counted as dropped with a reason (lines read == kept + sum of drop counts)."""
import io
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from phenolip_jax.data import images, pipeline
from phenolip_jax.data.manifest import read_jsonl, read_phenobench_csv
from phenolip_jax.data.records import DROP_REASONS, KEEP_REASONS, ValidationReport, validate_records

ROOT = "@ROOT@"  # replaced by the image folder when a manifest is written (absolute image paths)
GOOD_IMAGES = ("rgb.png", "grey.png", "grey_alpha.png", "rgba.png", "palette.png", "palette_trns.png",
               "grey16.png", "bilevel.png", "cmyk.jpg", "float.tif", "one_pixel.png", "thin_1x40.png")
BAD_IMAGES = ("random.bin", "truncated.png", "empty.png", "text.png", "signature_only.png", "broken_crc.png",
              "a_directory", "missing.png")
MAX_LEN, MAX_HPO = 16, 3


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_image_pool(root: str) -> None:
    """Good images in every mode the decoder converts, and bad files of every kind it must reject."""
    r = np.random.default_rng(0)
    rgb = Image.fromarray(r.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    palette_trns = rgb.convert("P")
    palette_trns.info["transparency"] = 0
    files = {
        "rgb.png": _png(rgb), "grey.png": _png(rgb.convert("L")), "grey_alpha.png": _png(rgb.convert("LA")),
        "rgba.png": _png(rgb.convert("RGBA")), "palette.png": _png(rgb.convert("P")),
        "palette_trns.png": _png(palette_trns),
        "grey16.png": _png(Image.fromarray(r.integers(0, 65536, (9, 7)).astype(np.uint16))),
        "bilevel.png": _png(rgb.convert("1")), "cmyk.jpg": _png(rgb.convert("CMYK"), "JPEG"),
        "float.tif": _png(Image.fromarray(r.random((8, 8)).astype(np.float32)), "TIFF"),
        "one_pixel.png": _png(Image.new("RGB", (1, 1), (9, 9, 9))), "thin_1x40.png": _png(Image.new("L", (1, 40))),
        "random.bin": r.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "truncated.png": _png(rgb)[: len(_png(rgb)) // 2], "empty.png": b"", "text.png": b"not an image\n",
        "signature_only.png": b"\x89PNG\r\n\x1a\n",
    }
    broken = bytearray(_png(rgb))
    broken[len(broken) // 2] ^= 0xFF  # inside IDAT: the chunk CRC no longer matches
    files["broken_crc.png"] = bytes(broken)
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(root, "a_directory"), exist_ok=True)


@pytest.fixture(scope="module")
def env(tiny_bert_dir, tmp_path_factory):
    """(ontology, tokenizer, image folder, id pools) shared by all examples."""
    from phenolip_jax import artifacts
    from phenolip_jax.ontology import load_ontology

    onto = load_ontology()
    root = str(tmp_path_factory.mktemp("images"))
    write_image_pool(root)
    return onto, artifacts.load_tokenizer(tiny_bert_dir), root


def _id_pools():
    """Current, alt/obsolete-with-replacement and obsolete-without-replacement ids of the shipped HPO."""
    from phenolip_jax.ontology import load_ontology

    onto = load_ontology()
    return (list(onto.ids[:40]) + ["HP:0001250", "HP:0000118"], sorted(onto.aliases)[:40],
            sorted(onto.obsolete_candidates)[:40])


CURRENT, ALIASES, OBSOLETE = _id_pools()

hpo_id = st.one_of(st.sampled_from(CURRENT), st.sampled_from(ALIASES or CURRENT),
                   st.sampled_from(OBSOLETE or CURRENT), st.from_regex(r"HP:\d{7}", fullmatch=True),
                   st.text(max_size=12), st.sampled_from([" hp:0001250 ", "HP_0001250", "HP:", ""]))
hpo_field = st.one_of(st.lists(hpo_id, max_size=6), hpo_id, st.none(), st.integers(), st.floats(),
                      st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), hpo_id, max_size=2),
                      st.just("HP:0001250; HP:0000118 | junk"))
caption = st.one_of(st.text(max_size=40), st.sampled_from(["", "   ", "\n\t", "a \ud800 lone surrogate"]),
                    st.integers(1, 400).map(lambda n: "seizure " * n), st.integers(), st.none(),
                    st.lists(st.text(max_size=4), max_size=3), st.booleans())
image = st.one_of(st.sampled_from(GOOD_IMAGES), st.sampled_from(GOOD_IMAGES).map(lambda n: f"{ROOT}/{n}"),
                  st.sampled_from(BAD_IMAGES), st.text(max_size=15), st.integers(), st.none(),
                  st.just("../" * 3 + "etc/passwd"), st.just("rgb.png\x00.txt"))
record = st.fixed_dictionaries({}, optional={
    "image": image, "caption": caption, "hpo_ids": hpo_field,
    "split": st.one_of(st.sampled_from(["train", "test", "val"]), st.text(max_size=4), st.integers()),
    "source": st.one_of(st.text(max_size=5), st.none()), "image_id": st.one_of(st.text(max_size=5), st.integers()),
    "extra": st.integers()})
plausible = st.fixed_dictionaries({  # mostly good records, so that the pipeline sees kept ones too
    "image": st.sampled_from(GOOD_IMAGES) | st.sampled_from(GOOD_IMAGES).map(lambda n: f"{ROOT}/{n}"),
    "caption": st.text(min_size=1, max_size=40) | st.integers(1, 60).map(lambda n: "short stature " * n),
    "hpo_ids": st.lists(st.sampled_from(CURRENT + ALIASES), max_size=5),
}, optional={"split": st.sampled_from(["train", "test"]), "image_id": st.text(max_size=3)})
json_value = st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=8)
line = st.one_of(
    plausible.map(lambda d: json.dumps(d).encode()),
    plausible.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),  # raw UTF-8 text in the line
    record.map(lambda d: json.dumps(d).encode()),  # ascii-escaped: surrogates arrive as \ud800 escapes
    json_value.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=30),
    st.sampled_from([b"", b"   ", b"\xef\xbb\xbf{}", b"[" * 5000 + b"]" * 5000, b'{"image": "rgb.png", "caption":']),
)


def manifest_lines(data: bytes) -> int:
    """Lines a reader must account for: every piece split on '\\n' (blank ones too), but the final newline's."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return len(pieces)


EVAL_CONFIG = dict(image_size=16, max_len=MAX_LEN, max_hpo=MAX_HPO, max_ancestors=4, max_hops=2, max_organs=4,
                   per_host_batch_size=4)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(lines=st.lists(line, min_size=1, max_size=10), trailing_newline=st.booleans())
def test_malformed_manifests_are_kept_or_counted_never_crash(env, lines, trailing_newline):
    onto, tokenizer, root = env
    data = b"\n".join(lines).replace(ROOT.encode(), root.encode()) + (b"\n" if trailing_newline else b"")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "manifest.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        report = ValidationReport()
        records = read_jsonl(path, report=report)
        kept, report = validate_records(records, onto, root, tokenizer=tokenizer, max_len=MAX_LEN,
                                        max_hpo=MAX_HPO, report=report, allow_absolute=True)

    assert report.total == manifest_lines(data)
    assert report.kept == len(kept)
    assert report.total == report.kept + report.dropped, report
    assert set(report.counts) <= set(DROP_REASONS + KEEP_REASONS), report.counts
    current = set(onto.ids)
    for r in kept:
        assert r.caption and r.caption == r.caption.strip()
        assert set(r.hpo_ids) <= current and len(r.hpo_ids) <= MAX_HPO
        with open(os.path.join(root, r.image), "rb") as f:  # os.path.join keeps absolute paths as they are
            assert images.decode_rgb(f.read())[0].shape[-1] == 3
    event("some record kept" if kept else "every record dropped")  # --hypothesis-show-statistics
    if not kept:
        return
    batches = list(pipeline.make_eval_batches(EVAL_CONFIG, kept, tokenizer, onto, image_root=root))
    valid = np.concatenate([np.asarray(b["valid"], bool) for b in batches])
    assert valid.sum() == len(kept)
    for b in batches:
        assert b["image"].shape[1:] == (16, 16, 3) and np.isfinite(b["image"]).all()
        assert b["input_ids"].shape[1] == MAX_LEN


def test_undecodable_bytes_cost_one_line_or_row_not_the_whole_manifest(env, tmp_path):
    onto, tokenizer, root = env
    good = json.dumps({"image": "rgb.png", "caption": "a seizure", "hpo_ids": ["HP:0001250"]}).encode()
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + good[:-2] + b'\xff"}\n'
                      + json.dumps({"image": "grey.png", "caption": "x \ud800"}).encode() + b"\n" + good + b"\n")
    report = ValidationReport()
    records = read_jsonl(jsonl, report=report)
    assert [r.line for r in records] == [1, 4]  # the BOM line parses; lines 2 and 3 are counted
    assert report.counts["malformed_line"] == 2 and report.total == 2  # records are counted by validate_records
    assert any("not UTF-8" in e for e in report.examples["malformed_line"])
    assert any("surrogate" in e for e in report.examples["malformed_line"])

    csv_path = tmp_path / "testdata.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfimage_path,caption,full_matches\nrgb.png,fine,HP:0001250\n"
                         b"grey.png,bad \xff byte,HP:0001250\n")
    report = ValidationReport()
    rows = read_phenobench_csv(csv_path, report=report)
    assert [r.image for r in rows] == ["rgb.png"]
    assert report.counts["malformed_line"] == 1
