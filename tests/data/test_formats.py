"""The field's formats (data/formats/): every sample kept or counted per reason, images read from inside their
containers, clear errors naming the file, and every format packed into ArrayRecord shards that stage 2 trains on."""
import collections
import json
import os
import subprocess
import sys

import pytest
from jax.experimental.compilation_cache import compilation_cache

from phenolip_jax.data import containers, formats
from phenolip_jax.data.formats import FormatError, ReadOptions, common, medpix
from phenolip_jax.data.packing import PackedSource, check_input_flags, pack_input
from phenolip_jax.data.formats.webdataset import sample_key
from phenolip_jax.data.records import BadRecordError, Record, UnsafePathError, resolve_image_path, validate_records
from phenolip_jax.tasks import stage2
from tests.data import format_miniatures as mini_lib
from tests.tasks.test_data_sources import fake_gcs, short_run, upload  # noqa: F401 (fake_gcs: a fixture)
from tests.tasks.test_stages import read_losses, tiny_stage2


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    """{format: Mini}: the six miniatures, written once for the module."""
    return mini_lib.build_all(tmp_path_factory.mktemp("formats"))


def read(mini, fmt, onto, **kwargs):
    return formats.read_and_validate_input(mini.input, fmt, onto, mini.options, **kwargs)


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_every_sample_is_kept_or_counted(minis, onto, fmt):
    mini = minis[fmt]
    kept, report, _ = read(mini, fmt, onto)
    assert report.total == mini.total == report.kept + report.dropped and report.kept == len(kept) == 12
    assert dict(report.counts) == mini.counts, str(report)
    assert collections.Counter(r.split for r in kept) == mini.splits
    assert all(r.origin and r.line > 0 for r in kept)  # the report's examples say file:line
    for reason, examples in report.examples.items():
        assert all(":" in e and os.path.basename(e.split(":")[0]) for e in examples), reason
    assert len({r.image_id for r in kept}) == 12  # same file names in two folders / shards stay apart


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_strict_stops_at_the_first_bad_sample(minis, onto, fmt):
    with pytest.raises(BadRecordError) as e:
        read(minis[fmt], fmt, onto, strict=True)
    assert e.value.reason in minis[fmt].counts and ":" in e.value.where


def test_webdataset_images_stay_in_their_shards(minis, onto):
    mini = minis["webdataset"]
    kept, _, root = read(mini, "webdataset", onto)
    first = kept[0]
    assert first.image.startswith("tar+shard-000.tar#offset=") and first.image_id == "shard-000.tar#s0000"
    assert first.hpo_ids == (mini_lib.HPO[0],) and first.source == "webdataset"
    resolved = resolve_image_path(first.image, root)
    assert containers.container_path(resolved) == os.path.join(root, "shard-000.tar")
    assert containers.read_image_bytes(resolved) == mini_lib.image_bytes(0)
    odd = next(r for r in kept if r.image_id.endswith("s0001"))  # caption from .txt, the json names the split only
    assert odd.caption == mini_lib.good(1)["caption"] and odd.hpo_ids == ()
    by_glob, _, _ = formats.read_and_validate_input(mini.input.replace("{000..001}", "*"), "webdataset", onto)
    assert by_glob == kept


def test_webdataset_and_parquet_from_a_bucket(minis, onto, fake_gcs):  # noqa: F811
    local = os.path.dirname(minis["webdataset"].input)
    upload(local, "gs://formats-test/wds")
    kept, report, root = formats.read_and_validate_input("gs://formats-test/wds/shard-{000..001}.tar", "webdataset",
                                                         onto)
    assert root == "gs://formats-test/wds" and dict(report.counts) == minis["webdataset"].counts
    path = resolve_image_path(kept[2].image, root)
    assert containers.container_path(path) == "gs://formats-test/wds/shard-000.tar"
    assert containers.read_image_bytes(path) == mini_lib.image_bytes(2)
    upload(os.path.dirname(minis["parquet"].input), "gs://formats-test/pq")  # a glob and Parquet cells on a bucket
    kept, report, root = formats.read_and_validate_input("gs://formats-test/pq/*.parquet", "parquet", onto)
    assert dict(report.counts) == minis["parquet"].counts
    assert containers.read_image_bytes(resolve_image_path(kept[4].image, root)) == mini_lib.image_bytes(4)
    containers.close_all()


def test_parquet_cells_by_row_and_column_named_by_flags(minis, onto, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept, _, root = read(minis["parquet"], "parquet", onto)
    by_row = {r.line - 1: r for r in kept if r.origin.endswith("part-0.parquet")}
    assert by_row[4].image == "parquet+part-0.parquet#row=4&column=image"  # 2nd row group (3 rows each)
    assert containers.read_image_bytes(resolve_image_path(by_row[4].image, root)) == mini_lib.image_bytes(4)
    assert by_row[4].hpo_ids == (mini_lib.HPO[0],)
    assert any(r.image == "imgs/6.png" for r in kept)  # a struct holding a path, no bytes
    table = pa.table({"img": [mini_lib.image_bytes(0)], "text": ["a caption"], "split": ["test"]})
    pq.write_table(table, tmp_path / "custom.parquet")
    with pytest.raises(FormatError, match=r"custom.parquet: no column 'caption' \(--parquet_caption_column\); "
                                          r"columns: img, text, split"):
        formats.read_and_validate_input(str(tmp_path / "custom.parquet"), "parquet", onto,
                                        ReadOptions(parquet_image_column="img"))
    options = ReadOptions(parquet_image_column="img", parquet_caption_column="text")
    kept, report, _ = formats.read_and_validate_input(str(tmp_path / "custom.parquet"), "parquet", onto, options)
    assert [(r.caption, r.split) for r in kept] == [("a caption", "test")] and report.counts["no_hpo"] == 1
    containers.close_all()


def test_csv_columns_and_separator_by_flags(onto, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(mini_lib.image_bytes(0))
    (tmp_path / "pairs.csv").write_text('path,text,hpo_ids\nimg/a.png,"a seizure, then more",HP:0001250\n')
    with pytest.raises(FormatError, match=r"no column 'filepath' \(--csv_img_key\); columns: \['path,text,hpo_ids'\]"):
        formats.read_and_validate_input(str(tmp_path / "pairs.csv"), "csv", onto)  # open_clip's default: tab
    options = ReadOptions(csv_img_key="path", csv_caption_key="text", csv_separator=",")
    kept, report, _ = formats.read_and_validate_input(str(tmp_path / "pairs.csv"), "csv", onto, options)
    assert [(r.image, r.caption, r.hpo_ids, r.split) for r in kept] == [
        ("img/a.png", "a seizure, then more", ("HP:0001250",), "train")] and report.counts["no_split"] == 1
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "p.tsv").write_text("filepath\ttitle\nimg/a.png\tx\n")
    kept, _, root = formats.read_and_validate_input(str(tmp_path / "elsewhere" / "p.tsv"), "csv", onto,
                                                    ReadOptions(image_root=str(tmp_path), csv_separator="\\t"))
    assert root == str(tmp_path) and [r.image for r in kept] == ["img/a.png"]


def test_medpix_keeps_case_ids_and_item_lines(minis, onto, tmp_path):
    kept, report, root = read(minis["medpix"], "medpix", onto)
    rec = kept[0]
    assert (rec.image, rec.image_id, rec.source, rec.split) == (
        "images/MPX1_synpic0.png", "MPX1_synpic0", "medpix:MPX1", "train")
    lines = open(rec.origin).read().splitlines()
    assert lines[rec.line - 1].strip() == "{" and '"MPX1_synpic0"' in "".join(lines[rec.line:rec.line + 4])
    assert {r.split for r in kept if r.source == "medpix:MPX5"} == {"val"}  # dev -> val
    assert "case MPX9 is in none of the official split files" in report.examples["unknown_split"][0]
    assert medpix.find_descriptions(os.path.join(root, "Descriptions.json")) == os.path.join(root, "Descriptions.json")
    (tmp_path / "MedPix-2-0").mkdir()
    (tmp_path / "MedPix-2-0" / "Descriptions.json").write_text("[]")
    with pytest.raises(FormatError, match="splitted_dataset/data_train.jsonl not found"):
        formats.read_and_validate_input(str(tmp_path), "medpix", onto)


def test_bad_input_names_the_file(minis, onto, tmp_path):
    with pytest.raises(FormatError, match=r"--input='.*/nothing-\*.tar': no files match"):
        formats.read_and_validate_input(str(tmp_path / "nothing-*.tar"), "webdataset", onto)
    with pytest.raises(FormatError, match=r"1 of the 3 files it names do not exist: .*shard-002.tar$"):
        formats.read_and_validate_input(minis["webdataset"].input.replace("001", "002"), "webdataset", onto)
    with pytest.raises(FormatError, match="no .tar file in it"):
        formats.read_and_validate_input(str(tmp_path), "webdataset", onto)
    with pytest.raises(FormatError, match="--image_root is for --format=jsonl / csv"):
        formats.read_and_validate_input(minis["webdataset"].input, "webdataset", onto, ReadOptions(image_root="/"))
    (tmp_path / "not.tar").write_bytes(b"plain text, no tar")
    (tmp_path / "cut.tar").write_bytes(open(minis["webdataset"].input.replace("{000..001}", "000"), "rb").read()[:5000])
    kept, report, _ = formats.read_and_validate_input(str(tmp_path / "*.tar"), "webdataset", onto)
    assert report.total == report.kept + report.dropped and report.counts["malformed_line"] >= 1
    assert any("not.tar:0" in e for e in report.examples["malformed_line"])
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(FormatError, match="x.parquet: not a Parquet file"):
        formats.read_and_validate_input(str(tmp_path / "x.parquet"), "parquet", onto)


def test_brace_ranges_and_lists_and_sample_keys():
    assert sample_key("a/b/x001.seg.png") == ("a/b/x001", "seg.png") and sample_key("k.JPG") == ("k", "jpg")
    assert common.expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert common.expand_braces("{a,b}/{8..10}") == ["a/8", "a/9", "a/10", "b/8", "b/9", "b/10"]
    assert common.expand_braces("x{y}.tar") == ["x{y}.tar"]
    assert common.split_from_path("/d/train-00000-of-00002.parquet") == "train"
    assert common.split_from_path("/test_runs/data/validation/radiology/captions.txt") == "val"
    assert common.split_from_path("/home/test/pmc/data/shard-000.tar") == ""  # a folder higher up says nothing


def test_references_obey_the_image_root(tmp_path):
    ref = containers.tar_reference("shards/a.tar", 512, 10)
    assert containers.split_reference(ref) == ("tar+", "shards/a.tar", {"offset": "512", "size": "10"})
    resolved = resolve_image_path(ref, str(tmp_path))
    assert resolved == containers.tar_reference(str(tmp_path / "shards" / "a.tar"), 512, 10)
    with pytest.raises(UnsafePathError):
        resolve_image_path(containers.tar_reference("../a.tar", 0, 1), str(tmp_path))
    with pytest.raises(UnsafePathError, match="absolute"):  # a manifest cannot point into /etc by reference
        resolve_image_path(containers.tar_reference("/etc/a.tar", 0, 1), str(tmp_path))
    assert resolve_image_path("/etc/a.tar", str(tmp_path), allow_absolute=True) == "/etc/a.tar"
    odd = containers.parquet_reference("p#1.parquet", 3, "a&b=c")
    assert containers.split_reference(odd) == ("parquet+", "p#1.parquet", {"row": "3", "column": "a&b=c"})


def test_records_without_hpo_ids_are_kept_and_counted(onto, tmp_path):
    (tmp_path / "a.png").write_bytes(mini_lib.image_bytes(0))
    recs = [Record("a.png", "no ids", ()), Record("a.png", "one id", ("HP:0001250",))]
    kept, report = validate_records(recs, onto, str(tmp_path))
    assert len(kept) == 2 and dict(report.counts) == {"no_hpo": 1} and "no HPO ids: kept" in str(report)


def test_manifest_and_input_flags():
    check_input_flags("m.jsonl", None, None)
    check_input_flags(None, "x.tar", "webdataset")
    for args, message in (((None, None, None), "give exactly one of --manifest"),
                          (("m.jsonl", "x.tar", "webdataset"), "both were given"),
                          ((None, "x.tar", None), "--input needs --format"),
                          (("m.jsonl", None, "parquet"), "--format=parquet goes with --input")):
        with pytest.raises(ValueError, match=message):
            check_input_flags(*args)


def test_command_line_packs_and_refuses_two_inputs(minis, tmp_path):
    out = tmp_path / "packed"
    proc = subprocess.run(
        [sys.executable, "-m", "phenolip_jax.data.packing", f"--input={minis['webdataset'].input}",
         "--format=webdataset", f"--output={out}", "--num_shards=2"],
        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "records: 16 read, 12 kept, 4 dropped" in proc.stderr and "packed 12/12 records" in proc.stderr
    info = json.loads((out / "packing.json").read_text())
    assert info["format"] == "webdataset" and info["splits"]["train"]["num_examples"] == 8
    assert len(PackedSource(out, "test")) == 4
    proc = subprocess.run(  # a mistake in the flags: one line naming them, exit 2, no traceback
        [sys.executable, "-m", "phenolip_jax.data.packing", "--manifest=m.jsonl", f"--input={tmp_path}/*.tar",
         "--format=webdataset", f"--output={out}"],
        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: give exactly one of --manifest")
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def compile_once(tmp_path_factory):
    """The stage-2 runs below share one shape, so they compile once: a persistent compilation cache, for this
    module only (restored after)."""
    import jax

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    for k, v in zip(keys, (str(tmp_path_factory.mktemp("xla_cache")), 0, 0)):
        jax.config.update(k, v)
    compilation_cache.reset_cache()
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


def pack_and_train(mini, fmt, onto, bert_dir, tmp_path, capsys) -> tuple[str, str]:
    """Packs a miniature with the packer's function, trains stage 2 for two steps from the shards; (the run dir,
    what the run printed)."""
    packed, run = str(tmp_path / fmt / "packed"), str(tmp_path / fmt / "run")
    info = pack_input(mini.input, fmt, packed, onto, options=mini.options, num_shards=2, progress=False)
    assert info["validation"]["counts"] == mini.counts and info["format"] == fmt
    assert {s: v["num_examples"] for s, v in info["splits"].items()} == mini.splits
    containers.close_all()
    cfg = short_run(tiny_stage2(bert_dir, "", ""))
    cfg.data.source, cfg.data.packed_dir = "arrayrecord", packed
    capsys.readouterr()
    try:
        stage2.run(cfg, run)
    finally:
        out = capsys.readouterr().out
        assert f"data: records: {mini.total} read, 12 kept" in out, fmt
        assert f"stage 2: 8 train / {mini.splits.get('test') or mini.splits['val']} test pairs" in out, fmt
        assert sorted(read_losses(run)) == [1, 2], fmt
    return run, out


def test_formats_with_hpo_ids_pack_and_train_two_steps(minis, onto, tiny_bert_dir, tmp_path, capsys, compile_once):
    for fmt in ("webdataset", "parquet", "csv", "jsonl"):
        run, _ = pack_and_train(minis[fmt], fmt, onto, tiny_bert_dir, tmp_path, capsys)
        assert os.path.exists(os.path.join(run, "eval.json")), fmt


def test_hpo_free_formats_pack_and_train_two_steps(minis, onto, tiny_bert_dir, tmp_path, capsys, compile_once):
    import json

    for fmt in ("roco", "medpix"):  # no HPO ids anywhere: stage 2 scores image-text retrieval only
        run, out = pack_and_train(minis[fmt], fmt, onto, tiny_bert_dir, tmp_path, capsys)
        scores = json.loads(open(os.path.join(run, "eval.json")).read())
        assert "i2t_r@10" in scores and "i2p_r@10" not in scores, fmt
        assert "evaluating image-text retrieval only" in out, fmt
