"""Packing what the step eats (issue 24 item 3): resized JPEG images, stored caption ids checked against the run."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from phenolip_jax import config_lib
from phenolip_jax.data import images, sources
from phenolip_jax.data.packing import PackedSource, decode_entry, pack_input, pack_records
from phenolip_jax.data.pipeline import make_train_iterator
from phenolip_jax.data.records import Record
from phenolip_jax.data.step_format import StepFormat, check_stored_tokens
from phenolip_jax.data.tokenize import Tokenize, tokenize_captions
from tests.data import format_miniatures as mini_lib

CAPTIONS = ["Axial CT of the pelvis showing a diffuse infiltration of the bladder wall, catheter in situ.",
            "Hypertelorism.", "", "MRI brain: enlarged ventricles with periventricular oedema " * 4]


def _jpeg(rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_fast_decode_equals_pillow_and_falls_back_for_the_rest():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for data in (_jpeg(rgb, quality=90), _jpeg(rgb, quality=75, subsampling=0), _jpeg(rgb[..., 0]),
                 _jpeg(rgb.copy(), exif=_exif_rotated()), images.encode_png(rgb)):
        np.testing.assert_array_equal(images.decode_rgb_fast(data), images.decode_rgb(data)[0])
    assert images.decode_rgb_fast(_jpeg(rgb.copy(), exif=_exif_rotated())).shape == (53, 37, 3)  # rotated


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    return exif.tobytes()


def test_images_resized_on_the_shorter_side_and_stored_as_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    recs = [Record("wide.png", "a", split="train"), Record("small.png", "b", split="train")]
    pack_records(recs, str(tmp_path), tmp_path / "out", 1, progress=False,
                 step=StepFormat(image_size=24, image_format="jpeg", jpeg_quality=85))
    stored = [decode_entry(e)[1] for e in _entries(tmp_path / "out")]
    assert all(b[:2] == b"\xff\xd8" for b in stored)
    assert [Image.open(io.BytesIO(b)).size for b in stored] == [(36, 24), (12, 10)]  # never upscaled
    same = StepFormat()  # the default copies the bytes
    assert same.image((tmp_path / "wide.png").read_bytes()) == (tmp_path / "wide.png").read_bytes()
    with pytest.raises(config_lib.UserError, match="image_format"):
        StepFormat(image_format="webp")


def _entries(folder):
    import grain

    source = grain.sources.ArrayRecordDataSource(sorted(str(p) for p in folder.glob("*.array_record")))
    return [source[i] for i in range(len(source))]


def test_stored_ids_equal_the_pipelines_tokens(tok):
    step = StepFormat(tokenizer=tok, max_len=16)
    for caption in CAPTIONS:
        stored = step.tokens(caption)["input_ids"]
        via_store = Tokenize(tok, 16).map({"caption": caption, "stored_ids": stored})
        ids, mask = tokenize_captions(tok, [caption], 16)
        np.testing.assert_array_equal(via_store["input_ids"], ids[0])
        np.testing.assert_array_equal(via_store["attention_mask"], mask[0])


@pytest.fixture(scope="module")
def packed(tmp_path_factory, onto, tok):
    """The JSONL miniature packed with 24 px JPEGs and ids stored for MiniLM's tokenizer at max_len 16."""
    root = tmp_path_factory.mktemp("step")
    mini = mini_lib.jsonl(root / "src")
    info = pack_input(mini.input, "jsonl", str(root / "packed"), onto, options=mini.options, progress=False,
                      step=StepFormat(image_size=24, image_format="jpeg", tokenizer=tok, max_len=16))
    return str(root / "packed"), info


def test_packing_json_says_what_was_stored(packed, tok):
    _, info = packed
    spec = info["step_format"]
    assert spec["image_size"] == 24 and spec["image_format"] == "jpeg" and spec["tokens"]["max_len"] == 16
    assert check_stored_tokens(info, "p", tok, 16) == spec["tokens"]


def test_a_run_uses_stored_ids_only_when_they_fit(packed, onto, tok):
    directory, info = packed
    splits, _ = sources.read_lazy_splits("arrayrecord", packed_dir=directory, tokenizer=tok, max_len=16)
    assert "stored_ids" in splits["train"][0]
    plain, _ = sources.read_lazy_splits("arrayrecord", packed_dir=directory)  # no tokenizer: nothing handed on
    assert "stored_ids" not in plain["train"][0]
    cfg = dict(per_host_batch_size=4, image_size=16, max_len=16, workers=0)
    with_ids = next(make_train_iterator(cfg, splits["train"], tok, onto, seed=0, process_index=0, process_count=1))
    without = next(make_train_iterator(cfg, plain["train"], tok, onto, seed=0, process_index=0, process_count=1))
    for key in ("input_ids", "attention_mask", "image"):
        np.testing.assert_array_equal(with_ids[key], without[key])
    with pytest.raises(config_lib.UserError, match="max_len 16 \\(this run: 32\\).*--max_len=32"):
        sources.read_lazy_splits("arrayrecord", packed_dir=directory, tokenizer=tok, max_len=32)
    edited = json.loads(open(f"{directory}/packing.json").read())
    edited["step_format"]["tokens"]["vocab_sha256"] = "0" * 64  # ids made by a tokenizer with another vocabulary
    with pytest.raises(config_lib.UserError, match="vocab_sha256"):
        check_stored_tokens(edited, directory, tok, 16)


def test_packed_source_hands_ids_on_only_when_told(packed):
    directory, info = packed
    assert "stored_ids" not in PackedSource(directory, "train", info)[0]
    assert "stored_ids" in PackedSource(directory, "train", info, stored_ids=True)[0]


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    """A teacher tokenizer with a vocabulary of its own (letter pieces: ids unlike MiniLM's)."""
    from transformers import BertTokenizerFast

    from phenolip_jax import artifacts

    out = tmp_path_factory.mktemp("teacher_vocab")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]  # every word splits into letter pieces
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "phenotype"] + letters + ["##" + c for c in letters]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(out / "vocab.txt")).save_pretrained(str(out))
    return artifacts.load_tokenizer(str(out))


def test_teacher_ids_stored_when_its_vocabulary_differs(tmp_path, onto, tok, word_tok):
    from types import SimpleNamespace

    from phenolip_jax.data import packing
    from phenolip_jax.data.teacher_inputs import TeacherInputs

    flags = SimpleNamespace(tokenizer=tok.name_or_path, teacher_tokenizer=word_tok.name_or_path, teacher_max_len=12,
                            max_len=16, image_size=0, image_format="keep", jpeg_quality=90)
    _, step = packing.step_format(flags)
    assert step.stores_teacher_ids
    assert not StepFormat(tokenizer=tok, max_len=16, teacher_tokenizer=tok, teacher_max_len=16).stores_teacher_ids
    mini = mini_lib.jsonl(tmp_path / "src")
    info = pack_input(mini.input, "jsonl", str(tmp_path / "packed"), onto, options=mini.options, progress=False,
                      step=step)
    assert info["step_format"]["teacher_tokens"]["max_len"] == 12
    splits, _ = sources.read_lazy_splits("arrayrecord", packed_dir=str(tmp_path / "packed"), tokenizer=tok, max_len=16)
    train = splits["train"]
    assert "stored_teacher_ids" not in train[0]  # handed on only once the run's teacher accepted them
    with pytest.raises(config_lib.UserError, match="teacher's token ids.*max_len 12 \\(this run: 16\\)"):
        sources.use_stored_teacher_ids(train, word_tok, 16)
    assert sources.use_stored_teacher_ids(train, word_tok, 12)
    stored = train[0]["stored_teacher_ids"]
    assert stored == list(word_tok(train[0]["caption"], max_length=12, truncation=True)["input_ids"])
    cfg = dict(per_host_batch_size=2, image_size=16, max_len=16, workers=0)
    batch = next(make_train_iterator(cfg, train, tok, onto, seed=0, teacher=TeacherInputs(word_tok, 12),
                                     process_index=0, process_count=1))
    texts = [train[i]["caption"] for i in range(len(train))]
    by_id = {int(train[i]["caption_id"]): texts[i] for i in range(len(train))}
    want_ids, want_mask = tokenize_captions(word_tok, [by_id[int(c)] for c in batch["caption_id"]], 12)
    np.testing.assert_array_equal(batch["teacher_input_ids"], want_ids)
    np.testing.assert_array_equal(batch["teacher_attention_mask"], want_mask)
