"""Manifest readers, HPO-match parsing, image-mode conversion and every bad-input policy case."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from phenolip_jax.data import images
from phenolip_jax.data.manifest import parse_hpo_matches, read_jsonl, read_phenobench_csv, write_jsonl
from phenolip_jax.data.records import (BadRecordError, Record, ValidationReport, assign_ids,
                                       validate_records)
from phenolip_jax.data.tokenize import count_tokens, tokenize_captions

SEIZURE = "HP:0001250"
OBSOLETE = "HP:0000057"  # obsolete in the 2025-01-16 release, replaced_by HP:0008665
OBSOLETE_NO_REPLACEMENT = "HP:0004038"  # obsolete, no replaced_by, no single consider


def _save(path, arr, **kw):
    Image.fromarray(arr, **kw).save(path)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    _save(tmp_path / "imgs/rgb.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    _save(tmp_path / "imgs/rgb2.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    return tmp_path


def rec(image="imgs/rgb.png", caption="a seizure", hpo=(SEIZURE,), line=1, **kw):
    return Record(image=image, caption=caption, hpo_ids=hpo, origin="m.jsonl", line=line, **kw)


# --- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,expected", [
    ('["HP:0001250", "HP:0000478"]', ("HP:0001250", "HP:0000478")),
    ("['HP:0001250', 'HP:0000478']", ("HP:0001250", "HP:0000478")),
    ("[('HP:0001250', 'Seizure')]", ("HP:0001250",)),
    ('[{"id": "HP:0001250", "name": "Seizure"}]', ("HP:0001250",)),
    ("HP:0001250;HP:0000478", ("HP:0001250", "HP:0000478")),
    ("HP:0001250, HP:0000478", ("HP:0001250", "HP:0000478")),
    ("HP:0001250|HP:0000478|HP:0001250", ("HP:0001250", "HP:0000478")),
    ("Seizure (HP:0001250) and hp_0000478", ("HP:0001250", "HP:0000478")),
    ("", ()), ("nan", ()), ("[]", ()), (None, ()),
    ("[HP:0001250, broken", ("HP:0001250",)),  # not a valid literal: falls back to the token regex
])
def test_parse_hpo_matches(cell, expected):
    assert parse_hpo_matches(cell) == expected


def test_read_jsonl_roundtrip_and_malformed_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    good = {"image": "imgs/a.png", "caption": "c", "hpo_ids": [SEIZURE], "split": "test", "source": "s"}
    path.write_text(json.dumps(good) + "\n\n{not json\n" + json.dumps({"caption": "no image"}) + "\n")
    report = ValidationReport()
    recs = read_jsonl(path, report=report)
    assert [(r.image, r.caption, r.hpo_ids, r.split, r.source, r.line) for r in recs] == [
        ("imgs/a.png", "c", (SEIZURE,), "test", "s", 1)]
    assert report.counts["malformed_line"] == 2 and report.counts["blank_line"] == 1 and report.total == 3
    assert f"{path}:3" in report.examples["malformed_line"][0]
    with pytest.raises(BadRecordError, match=r"m\.jsonl:2: blank_line"):  # the first bad line
        read_jsonl(path, strict=True)
    out = tmp_path / "out.jsonl"
    write_jsonl(recs, out)
    assert [(r.image, r.caption, r.hpo_ids) for r in read_jsonl(out)] == [("imgs/a.png", "c", (SEIZURE,))]


def test_read_phenobench_csv(tmp_path):
    path = tmp_path / "testdata.csv"
    path.write_text('image_path,caption,full_matches\n'
                    'imgs/a.png,"A child, with seizures","[\'HP:0001250\']"\n'
                    'imgs/b.png,"Multi\nline caption",HP:0000478;HP:0001250\n')
    recs = read_phenobench_csv(path)
    assert [r.hpo_ids for r in recs] == [(SEIZURE,), ("HP:0000478", SEIZURE)]
    assert recs[0].caption == "A child, with seizures" and recs[1].caption == "Multi\nline caption"
    assert recs[1].line == 4 and recs[0].split == "test"
    (tmp_path / "bad.csv").write_text("path,caption\nx,y\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_phenobench_csv(tmp_path / "bad.csv")


# --- image modes ---------------------------------------------------------------------------------

def _encode(img: Image.Image, fmt="PNG") -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


def test_sixteen_bit_is_scaled_not_clipped():
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    rgb, mode = images.decode_rgb(_encode(Image.fromarray(a)))
    assert mode.startswith("I")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "CMYK"])
def test_other_modes_become_rgb(mode):
    base = Image.fromarray(np.full((4, 4, 3), (200, 40, 10), np.uint8))
    img = base.convert(mode)
    rgb, converted = images.decode_rgb(_encode(img, "JPEG" if mode == "CMYK" else "PNG"))
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8 and converted is not None


def test_transparent_pixels_become_white():
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (10, 20, 30, 255)  # opaque pixel keeps its colour, transparent ones turn white
    rgb, converted = images.decode_rgb(_encode(Image.fromarray(a, "RGBA")))
    assert converted == "RGBA"
    np.testing.assert_array_equal(rgb[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(rgb[1, 1], (255, 255, 255))


def test_views_and_normalize():
    rgb = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    a = images.train_view(rgb, 16, np.random.default_rng(1))
    b = images.train_view(rgb, 16, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16, 3)
    ev = images.eval_view(rgb, 10)  # 30x50 -> 10x17, centre 10x10
    assert ev.shape == (10, 10, 3)
    for seed in range(20):  # square input: every box (sampled or fallback) covers >= ~90% of it
        left, top, right, bottom = images.random_resized_crop_box(40, 40, np.random.default_rng(seed))
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 40
        assert 0.85 * 1600 <= (right - left) * (bottom - top) <= 1600
    # 30x50 is wider than 4/3: torchvision's fallback, the widest centre crop at ratio 4/3.
    assert images.random_resized_crop_box(30, 50, np.random.default_rng(0)) == (5, 0, 45, 30)
    x = images.normalize(np.full((1, 1, 3), 255, np.uint8), (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    np.testing.assert_allclose(x[0, 0], [2.0, 1.0, 0.5])


# --- tokenizer -----------------------------------------------------------------------------------

def test_tokenizer_knows_real_words_and_truncates(tok):
    ids = tok("seizure")["input_ids"]
    assert tok.unk_token_id not in ids
    long = "word " * 50
    assert count_tokens(tok, long) == 52  # 50 words + [CLS] + [SEP]
    ids, mask = tokenize_captions(tok, [long, "short"], 8)
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert ids[0, -1] == tok.sep_token_id and mask[0].all()
    assert mask[1].sum() == 3 and ids[1, 3] == tok.pad_token_id


# --- bad-input policy: each case fed -----------------------------------------------------------

def _validate(records, onto, folder, **kw):
    return validate_records(records, onto, folder, **kw)


def test_good_records_kept(folder, onto):
    kept, report = _validate([rec(), rec(image="imgs/rgb2.png", line=2)], onto, folder)
    assert len(kept) == 2 and report.kept == 2 and report.dropped == 0


def test_missing_image(folder, onto):
    kept, report = _validate([rec(image="imgs/nope.png"), rec(line=2)], onto, folder)
    assert [r.line for r in kept] == [2] and report.counts["missing_image"] == 1
    assert "m.jsonl:1: missing_image" in report.examples["missing_image"][0]


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_image(folder, onto, content):
    good = (folder / "imgs/rgb.png").read_bytes()
    data = b"not an image at all" if content == "garbage" else good[: len(good) // 2]
    (folder / "imgs/bad.png").write_bytes(data)
    kept, report = _validate([rec(image="imgs/bad.png"), rec(line=2)], onto, folder)
    assert len(kept) == 1 and report.counts["corrupt_image"] == 1


@pytest.mark.parametrize("caption", ["", "   \n"])
def test_empty_caption(folder, onto, caption):
    kept, report = _validate([rec(caption=caption)], onto, folder)
    assert kept == [] and report.counts["empty_caption"] == 1


def test_long_caption_truncated_by_default_and_raised_under_strict(folder, onto, tok):
    long = rec(caption="seizure " * 40)
    kept, report = _validate([long], onto, folder, tokenizer=tok, max_len=16)
    assert len(kept) == 1 and report.counts["truncated"] == 1 and report.dropped == 0
    with pytest.raises(BadRecordError, match="long_caption"):
        _validate([long], onto, folder, tokenizer=tok, max_len=16, strict=True)


def test_unknown_hpo(folder, onto):
    kept, report = _validate([rec(hpo=(SEIZURE, "HP:9999999"))], onto, folder)
    assert kept == [] and report.counts["unknown_hpo"] == 1
    assert "HP:9999999" in report.examples["unknown_hpo"][0]


def test_obsolete_hpo_remapped_and_kept(folder, onto):
    assert OBSOLETE not in onto.ids
    kept, report = _validate([rec(hpo=(OBSOLETE, SEIZURE))], onto, folder)
    assert kept[0].hpo_ids == (onto.resolve(OBSOLETE), SEIZURE) == ("HP:0008665", SEIZURE)
    assert report.counts["remapped"] == 1 and report.dropped == 0


def test_obsolete_without_replacement_dropped(folder, onto):
    assert OBSOLETE_NO_REPLACEMENT in onto.obsolete_candidates and OBSOLETE_NO_REPLACEMENT not in onto.aliases
    kept, report = _validate([rec(hpo=(OBSOLETE_NO_REPLACEMENT,))], onto, folder)
    assert kept == [] and report.counts["obsolete_hpo"] == 1


def test_duplicates_dropped_first_kept(folder, onto):
    records = [rec(line=1), rec(line=2, caption=" a seizure "), rec(line=3, caption="other")]
    kept, report = _validate(records, onto, folder)
    assert [r.line for r in kept] == [1, 3] and report.counts["duplicate"] == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_wrong_mode_converted_and_kept(folder, onto, mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((5, 5), 40000, np.uint16))
    else:
        img = Image.fromarray(np.full((5, 5, 3), 90, np.uint8)).convert(mode)
    img.save(folder / "imgs/odd.png")
    kept, report = _validate([rec(image="imgs/odd.png")], onto, folder)
    assert len(kept) == 1 and report.counts["converted"] == 1


def test_too_many_hpo_ids_truncated(folder, onto):
    kept, report = _validate([rec(hpo=(SEIZURE, "HP:0000478", "HP:0001250"))], onto, folder, max_hpo=1)
    assert kept[0].hpo_ids == (SEIZURE,) and report.counts["hpo_truncated"] == 1


def test_strict_raises_on_first_bad_record_naming_it(folder, onto):
    with pytest.raises(BadRecordError) as e:
        _validate([rec(line=1), rec(line=7, caption="other", hpo=("HP:9999999",)), rec(line=9, caption="")],
                  onto, folder, strict=True)
    assert (e.value.where, e.value.reason) == ("m.jsonl:7", "unknown_hpo")


def test_report_counts_logs_first_few_and_prints(folder, onto):
    records = [rec(image=f"imgs/missing{i}.png", line=i) for i in range(8)] + [rec(line=99)]
    kept, report = _validate(records, onto, folder)
    assert report.counts["missing_image"] == 8 and len(report.examples["missing_image"]) == 5
    text = str(report)
    assert "9 read, 1 kept, 8 dropped" in text and "missing_image" in text and "m.jsonl:0" in text
    assert report.as_dict()["counts"] == {"missing_image": 8}


def test_assign_ids_groups_images_and_captions():
    records = [rec(image="a", caption="x"), rec(image="b", caption="x"), rec(image="a", caption="y")]
    image_ids, caption_ids, keys, captions = assign_ids(records)
    assert image_ids == [0, 1, 0] and caption_ids == [0, 0, 1]
    assert keys == ["a", "b"] and captions == ["x", "y"]


def test_report_says_what_happened_to_each_kept_record():
    from phenolip_jax.data import records

    report = records.ValidationReport()
    for reason in records.KEEP_REASONS:
        report.add(reason, "m.jsonl:1")
    text = str(report)
    assert "truncated" in text and "(kept: caption longer than max_len tokens: its first max_len are used)" in text
    assert all(records.KEEP_MEANING[r] in text for r in records.KEEP_REASONS)
