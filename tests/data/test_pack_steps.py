"""data/pack_steps.py (the packer cut into steps for Beam and the like), run in this process: the same records, ids,
shards and packing.json as `packing.pack_input` for every format, duplicates across files and strict included.
Needs no Beam (tests/data/test_beam_packing.py runs the same steps on Beam's workers)."""
import collections
import json
import re

import grain
import pytest

from phenolip_jax.data import containers, formats, pack_steps
from phenolip_jax.data.formats import FormatError, ReadOptions
from phenolip_jax.data.manifest import write_jsonl
from phenolip_jax.data.packing import decode_entry, pack_input, shard_paths
from phenolip_jax.data.records import BadRecordError, Record
from phenolip_jax.data.step_format import StepFormat
from tests.data import format_miniatures as mini_lib


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    """{format: Mini}: the six miniatures, written once for the module."""
    return mini_lib.build_all(tmp_path_factory.mktemp("formats"))


def packed_entries(directory, info) -> dict[str, collections.Counter]:
    """{split: multiset of (metadata JSON, image bytes)} of a packed folder: what it holds, in any order."""
    out = {}
    for split in info["splits"]:
        source = grain.sources.ArrayRecordDataSource(shard_paths(directory, split, info))
        entries = (decode_entry(source[i]) for i in range(len(source)))
        out[split] = collections.Counter((json.dumps(meta, sort_keys=True), data) for meta, data in entries)
    return out


def _masked(info: dict) -> str:
    # A corrupt image's message names a BytesIO object by its address: the one thing two runs never share.
    return re.sub(r" at 0x[0-9a-f]+", "", json.dumps(info, sort_keys=True))


def assert_same_pack(want_dir, want: dict, got_dir, got: dict) -> None:
    """Same packing.json (splits, shard names, counts, HPO summaries, report with its examples, step format) and,
    per split, the same decoded entries."""
    assert _masked(got) == _masked(want)
    assert got["validation"]["counts"] == want["validation"]["counts"]
    assert packed_entries(got_dir, got) == packed_entries(want_dir, want)


def pack_both(mini, fmt, onto, tmp_path, engine, capsys, **kwargs) -> None:
    """Packs `mini` with the one-process packer and with pack_steps on `engine`, and compares them."""
    want = pack_input(mini.input, fmt, str(tmp_path / "one"), onto, options=mini.options, progress=False, **kwargs)
    containers.close_all()
    got = pack_steps.pack(engine, mini.input, fmt, str(tmp_path / "steps"), onto, options=mini.options, **kwargs)
    containers.close_all()
    assert_same_pack(tmp_path / "one", want, tmp_path / "steps", got)
    assert "probes missed" not in capsys.readouterr().err  # every decode ran in a step, none on the driver
    assert not (tmp_path / "steps" / pack_steps.WORK).exists()  # the hand-over files are gone


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_steps_pack_what_the_packer_packs(minis, onto, tmp_path, capsys, fmt):
    pack_both(minis[fmt], fmt, onto, tmp_path, pack_steps.InProcess(), capsys, num_shards=2)


def duplicates(root) -> mini_lib.Mini:
    """Two manifests in one folder: a pair repeated within a file and across them (the second is the duplicate,
    wherever it was read), an image shown with two captions, long captions (truncated at max_len)."""
    (root / "imgs").mkdir(parents=True)
    for i in range(4):
        (root / "imgs" / f"{i}.png").write_bytes(mini_lib.image_bytes(i))
    long = " ".join(["seizure"] * 20)
    write_jsonl([Record("imgs/0.png", "first", ("HP:0001250",)), Record("imgs/1.png", long, split="test"),
                 Record("imgs/0.png", "first", ("HP:0001250",)), Record("imgs/2.png", "a", split="test")],
                root / "a.jsonl")
    write_jsonl([Record("imgs/2.png", "a", split="test"), Record("imgs/0.png", "second"),
                 Record("imgs/3.png", long), Record("imgs/gone.png", "gone")], root / "b.jsonl")
    return mini_lib.Mini(str(root / "*.jsonl"), {}, {})


def test_duplicates_across_files_ids_and_token_counts(onto, tok, tmp_path, capsys):
    mini = duplicates(tmp_path / "dup")
    step = StepFormat(24, "jpeg", 90, tok, 8)
    pack_both(mini, "jsonl", onto, tmp_path, pack_steps.InProcess(), capsys, num_shards=2, tokenizer=tok, max_len=8,
              step=step)
    info = json.loads((tmp_path / "steps" / "packing.json").read_text())
    assert info["validation"]["counts"]["duplicate"] == 2 and info["validation"]["counts"]["truncated"] == 2


def test_strict_and_format_errors_stop_where_the_packer_stops(minis, onto, tmp_path):
    for fmt in ("webdataset", "jsonl", "csv"):
        mini = minis[fmt]
        with pytest.raises(BadRecordError) as want:
            pack_input(mini.input, fmt, str(tmp_path / "one"), onto, options=mini.options, strict=True, progress=False)
        with pytest.raises(BadRecordError) as got:
            pack_steps.pack(pack_steps.InProcess(), mini.input, fmt, str(tmp_path / fmt), onto, options=mini.options,
                            strict=True)
        assert (got.value.where, got.value.reason) == (want.value.where, want.value.reason), fmt
    options = ReadOptions(parquet_caption_column="nope")
    with pytest.raises(FormatError) as want:
        pack_input(minis["parquet"].input, "parquet", str(tmp_path / "one"), onto, options=options, progress=False)
    with pytest.raises(FormatError) as got:
        pack_steps.pack(pack_steps.InProcess(), minis["parquet"].input, "parquet", str(tmp_path / "pq"), onto,
                        options=options)
    assert str(got.value) == str(want.value) and "--parquet_caption_column" in str(got.value)
