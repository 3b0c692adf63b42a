"""Packed form for scale: sharded ArrayRecord files of (JSON metadata, encoded image bytes).

    python -m phenolip_jax.data.packing --manifest=data/manifest.jsonl --image_root=data \
        --output=packed/ --num_shards=8 [--tokenizer=DIR --max_len=256] [--strict] [--max_side=512]
    python -m phenolip_jax.data.packing --input='shards/pmc-{000..009}.tar' --format=webdataset \
        --output=packed/ --num_shards=8          (formats: jsonl webdataset parquet csv roco medpix; data/formats/)

Writes, per split, `{split}-{i:05d}-of-{N:05d}.array_record` (contiguous chunks of the validated
manifest, in manifest order) and `packing.json` (format version, per split: the count, shard names, the
sorted HPO ids used and how many records carry n ids; the validation report). The per-split HPO summary
lets a training run check the ids against its ontology and count `max_hpo` truncation without reading
a single shard. One entry = uint32 little-endian length of the metadata JSON, the JSON
(caption, hpo_ids, image_id, caption_id, image_key, split, source, origin, line), the image bytes.
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
from typing import Any, Sequence

import grain
from PIL import Image

from phenolip_jax import artifacts, config_lib
from phenolip_jax.data import containers, formats, paths
from phenolip_jax.data.manifest import read_and_validate
from phenolip_jax.data.records import Record, assign_ids, resolve_image_path
from phenolip_jax.data.step_format import StepFormat
from phenolip_jax.ontology import load_ontology

FORMAT_VERSION = 2  # 2: per-split `terms` and `hpo_counts`
_LEN = struct.Struct("<I")


def encode_entry(meta: dict[str, Any], image_bytes: bytes) -> bytes:
    """One ArrayRecord entry: length-prefixed JSON metadata followed by the encoded image."""
    blob = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    return _LEN.pack(len(blob)) + blob + image_bytes


def decode_entry(entry: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of encode_entry."""
    (n,) = _LEN.unpack_from(entry)
    return json.loads(entry[4:4 + n].decode("utf-8")), entry[4 + n:]


def shrink_image(data: bytes, max_side: int) -> bytes:
    """Re-encode only images whose longer side exceeds max_side (bicubic; JPEG stays JPEG, else PNG)."""
    img = Image.open(io.BytesIO(data))
    if max_side <= 0 or max(img.size) <= max_side:
        return data
    fmt = "JPEG" if img.format == "JPEG" else "PNG"
    s = max_side / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _progress(done: int, total: int, start: float, every: int) -> None:
    if done == total or done % every == 0:
        rate = done / max(time.perf_counter() - start, 1e-9)
        print(f"\rpacked {done}/{total} records ({rate:.0f}/s)", end="\n" if done == total else "",
              file=sys.stderr, flush=True)


def pack_records(records: Sequence[Record], image_root, output: str | os.PathLike, num_shards: int,
                 *, max_side: int = 0, progress: bool = True, step: StepFormat = StepFormat()) -> dict[str, Any]:
    """Write validated records as ArrayRecord shards per split; returns the per-split summary. `step`: the
    image size / format and the token ids stored (data/step_format.py)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    output = os.fspath(output)
    if paths.is_url(output):  # array_record's writer opens local files only
        raise ValueError(f"--output={output!r}: pack into a local folder, then copy it to the bucket "
                         "(e.g. gsutil -m cp -r)")
    os.makedirs(output, exist_ok=True)
    splits: dict[str, list[Record]] = {}
    for r in records:
        splits.setdefault(r.split, []).append(r)
    summary, done, start = {}, 0, time.perf_counter()
    every = max(1, len(records) // 100)
    for split, recs in sorted(splits.items()):
        image_ids, caption_ids, _, _ = assign_ids(recs)
        layout = shard_layout(split, len(recs), num_shards)
        for name, first, end in layout:
            # group_size:1 makes every entry its own chunk: cheap random access for grain.
            writer = ArrayRecordWriter(os.path.join(output, name), "group_size:1")
            for j in range(first, end):
                r = recs[j]
                writer.write(pack_entry(entry_meta(r, image_ids[j], caption_ids[j]),
                                        resolve_image_path(r.image, image_root, allow_absolute=True), max_side, step))
                done += 1
                if progress:
                    _progress(done, len(records), start, every)
            writer.close()
        summary[split] = {"num_examples": len(recs), "shards": [name for name, _, _ in layout], **hpo_summary(recs)}
    return summary


def shard_layout(split: str, n: int, num_shards: int) -> list[tuple[str, int, int]]:
    """(file name, first, end) of each shard of a split of n records: contiguous chunks in record order."""
    k = max(1, min(num_shards, n))
    return [(f"{split}-{i:05d}-of-{k:05d}.array_record", n * i // k, n * (i + 1) // k) for i in range(k)]


def entry_meta(r: Record, image_id: int, caption_id: int) -> dict[str, Any]:
    """An entry's metadata, before the token ids the step format adds."""
    return {"caption": r.caption, "hpo_ids": list(r.hpo_ids), "image_id": image_id, "caption_id": caption_id,
            "image_key": r.image_id, "split": r.split, "source": r.source, "origin": r.origin, "line": r.line}


def pack_entry(meta: dict[str, Any], image_path: str, max_side: int, step: StepFormat) -> bytes:
    """One entry from its metadata and its validated image (a file or a container reference, resolved)."""
    data = step.image(shrink_image(containers.read_image_bytes(image_path), max_side))
    return encode_entry({**meta, **step.tokens(meta["caption"])}, data)


def hpo_summary(records: Sequence[Record]) -> dict[str, Any]:
    """`terms`: the sorted HPO ids the records use; `hpo_counts`: {n ids: records carrying n}."""
    counts: dict[str, int] = {}
    for r in records:
        counts[str(len(r.hpo_ids))] = counts.get(str(len(r.hpo_ids)), 0) + 1
    return {"terms": sorted({h for r in records for h in r.hpo_ids}), "hpo_counts": counts}


def read_packing_info(directory: str | os.PathLike) -> dict[str, Any]:
    """`packing.json` of a packed folder (local or a bucket URL)."""
    path = paths.join(directory, "packing.json")
    if not paths.exists(path):
        raise FileNotFoundError(f"{path} not found: not a folder written by python -m phenolip_jax.data.packing")
    return paths.read_json(path)


def shard_paths(directory: str | os.PathLike, split: str, info: dict[str, Any] | None = None) -> list[str]:
    """The split's shard files listed in `packing.json`, in order."""
    info = read_packing_info(directory) if info is None else info
    if split not in info["splits"]:
        raise KeyError(f"split {split!r} not packed in {directory}; have {sorted(info['splits'])}")
    return [paths.join(directory, n) for n in info["splits"][split]["shards"]]


class PackedSource(grain.sources.RandomAccessDataSource):
    """Random access over packed shards, yielding pipeline examples (image = encoded bytes).

    `stored_ids`: hand over the caption ids stored at pack time (`stored_ids` key) for the pipeline's Tokenize to
    use; only for a run whose tokenizer and max_len `step_format.check_stored_tokens` accepted.
    `stored_teacher_ids`: the same for the teacher's own ids (`stored_teacher_ids`; `sources.use_stored_teacher_ids`).
    """

    def __init__(self, directory: str | os.PathLike, split: str, info: dict[str, Any] | None = None,
                 stored_ids: bool = False, stored_teacher_ids: bool = False):
        self.directory = os.fspath(directory)
        self.info = info if info is not None else read_packing_info(self.directory)
        self.paths = shard_paths(directory, split, self.info)
        self._source = grain.sources.ArrayRecordDataSource(self.paths)
        self.stored_ids, self.stored_teacher_ids = stored_ids, stored_teacher_ids

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        meta, data = decode_entry(self._source[index])
        ex = {"image": data, "caption": meta["caption"], "hpo_ids": tuple(meta["hpo_ids"]),
              "image_id": meta["image_id"], "caption_id": meta["caption_id"]}
        if self.stored_ids and "input_ids" in meta:
            ex["stored_ids"] = meta["input_ids"]
        if self.stored_teacher_ids and "teacher_input_ids" in meta:
            ex["stored_teacher_ids"] = meta["teacher_input_ids"]
        return ex


def pack_manifest(manifest: str, output: str, ontology, *, image_root: str | None = None, num_shards: int = 1,
                  tokenizer=None, max_len: int = 256, max_hpo: int | None = None, max_side: int = 0,
                  strict: bool = False, allow_absolute: bool = False, progress: bool = True,
                  step: StepFormat = StepFormat()) -> dict[str, Any]:
    """Read, validate and pack a manifest (local or a bucket URL) into `output`; writes and returns packing.json."""
    image_root = image_root or paths.parent(manifest)
    kept, report = read_and_validate([manifest], ontology, image_root, strict=strict, tokenizer=tokenizer,
                                     max_len=max_len, max_hpo=max_hpo, allow_absolute=allow_absolute)
    return _write(kept, report, image_root, output, num_shards, max_side, progress,
                  {"manifest": paths.absolute(manifest)}, step)


def pack_input(input: str, fmt: str, output: str, ontology, *, options: formats.ReadOptions = formats.ReadOptions(),
               num_shards: int = 1, tokenizer=None, max_len: int = 256, max_hpo: int | None = None,
               max_side: int = 0, strict: bool = False, allow_absolute: bool = False,
               progress: bool = True, step: StepFormat = StepFormat()) -> dict[str, Any]:
    """Read any format of data/formats (`--input`, `--format`), validate and pack it; writes, returns packing.json."""
    kept, report, root = formats.read_and_validate_input(
        input, fmt, ontology, options, strict=strict, progress=progress, tokenizer=tokenizer, max_len=max_len,
        max_hpo=max_hpo, allow_absolute=allow_absolute)
    return _write(kept, report, root, output, num_shards, max_side, progress, {"input": input, "format": fmt}, step)


def _write(kept: Sequence[Record], report, image_root, output: str, num_shards: int, max_side: int, progress: bool,
           what: dict[str, str], step: StepFormat) -> dict[str, Any]:
    print(report, file=sys.stderr)
    summary = pack_records(kept, image_root, output, num_shards, max_side=max_side, progress=progress, step=step)
    containers.close_all()
    return write_packing_info(output, what, summary, report, step)


def write_packing_info(output: str, what: dict[str, str], summary: dict[str, Any], report, step: StepFormat
                       ) -> dict[str, Any]:
    """Writes and returns `packing.json`: what was packed, the per-split summary, the report, the step format."""
    info = {"format_version": FORMAT_VERSION, **what, "splits": summary, "validation": report.as_dict(),
            "step_format": step.info()}
    paths.write_text(paths.join(output, "packing.json"), json.dumps(info, indent=1))
    print(f"wrote {sum(s['num_examples'] for s in summary.values())} records to {output}", file=sys.stderr)
    return info


def check_input_flags(manifest: str | None, input: str | None, fmt: str | None) -> None:
    """Exactly one of --manifest / --input; --input needs --format (a UserError naming the flags otherwise)."""
    if bool(manifest) == bool(input):
        raise config_lib.UserError("give exactly one of --manifest (a JSONL manifest, as before) and --input "
                                   f"(any --format: {', '.join(formats.FORMATS)})"
                                   + ("; both were given" if manifest else ""))
    if manifest and fmt not in (None, "jsonl"):
        raise config_lib.UserError(f"--format={fmt} goes with --input: --manifest reads JSONL (or PhenoBench CSV)")
    if input and not fmt:
        raise config_lib.UserError(f"--input needs --format (one of {', '.join(formats.FORMATS)})")


def main(argv: Sequence[str]) -> None:
    """absl entry point: read, validate, pack, write packing.json, print the report (bad flags: one line, exit 2)."""
    from absl import flags

    del argv
    f = flags.FLAGS
    try:
        check_input_flags(f.manifest, f.input, f.format)
        tokenizer, step = step_format(f)
        common = dict(num_shards=f.num_shards, tokenizer=tokenizer, max_len=f.max_len, max_hpo=f.max_hpo,
                      max_side=f.max_side, strict=f.strict, allow_absolute=f.allow_absolute_paths, step=step)
        if f.manifest:
            pack_manifest(f.manifest, f.output, load_ontology(), image_root=f.image_root, **common)
            return
        pack_input(f.input, f.format, f.output, load_ontology(), options=read_options(f), **common)
    except config_lib.UserError as e:  # a mistake in the flags or the input's layout: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def step_format(f) -> tuple[Any, StepFormat]:
    """(tokenizer or None, StepFormat) from the packer's flags (`f`: absl's FLAGS)."""
    tokenizer = artifacts.load_tokenizer(f.tokenizer) if f.tokenizer else None
    teacher = artifacts.load_tokenizer(f.teacher_tokenizer) if f.teacher_tokenizer else None
    return tokenizer, StepFormat(f.image_size, f.image_format, f.jpeg_quality, tokenizer, f.max_len, teacher,
                                 f.teacher_max_len or f.max_len)


def read_options(f) -> formats.ReadOptions:
    """The readers' options from the packer's flags (`f`: absl's FLAGS)."""
    return formats.ReadOptions(
        image_root=f.image_root, csv_img_key=f.csv_img_key, csv_caption_key=f.csv_caption_key,
        csv_separator=f.csv_separator, parquet_image_column=f.parquet_image_column,
        parquet_caption_column=f.parquet_caption_column)


def define_flags() -> None:
    """The packer's flags (also data/beam_packing.py's)."""
    from absl import flags

    defaults = formats.ReadOptions()
    flags.DEFINE_string("manifest", None, "JSONL manifest or PhenoBench testdata.csv (or use --input)")
    flags.DEFINE_string("input", None, "data in any --format: a path, glob or brace range (shard-{000..009}.tar), "
                        "local or gs://")
    flags.DEFINE_enum("format", None, list(formats.FORMATS), "the format of --input (data/formats/)")
    flags.DEFINE_string("image_root", None, "folder image paths are relative to (default: the manifest's / CSV's)")
    flags.DEFINE_string("output", None, "output folder", required=True)
    flags.DEFINE_integer("num_shards", 1, "ArrayRecord shards per split")
    flags.DEFINE_string("tokenizer", None, "tokenizer dir: stores each caption's token ids (a run with the same "
                        "tokenizer and max_len skips tokenising) and counts captions longer than max_len")
    flags.DEFINE_integer("image_size", 0, "resize each image's shorter side to this at pack time (0 = keep; about "
                         "1.15x the training crop, e.g. 256 for 224)")
    flags.DEFINE_enum("image_format", "keep", ["keep", "jpeg"], "store images as they are or as JPEG")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality with --image_format=jpeg")
    flags.DEFINE_integer("max_len", 256, "caption context length (with --tokenizer)")
    flags.DEFINE_string("teacher_tokenizer", None, "with --tokenizer: also store the teacher's own ids when its "
                        "vocabulary differs (stage 2 with teacher.embeddings='on_the_fly'; the stage-1 run's hf_dir)")
    flags.DEFINE_integer("teacher_max_len", 0, "the teacher's context length (0 = --max_len; a run uses the smaller "
                         "of data.max_len and the teacher's position table)")
    flags.DEFINE_integer("max_hpo", None, "HPO ids kept per record (default: all)")
    flags.DEFINE_integer("max_side", 0, "downscale images whose longer side exceeds this (0 = keep bytes)")
    flags.DEFINE_bool("strict", False, "raise on the first bad record instead of skipping it")
    flags.DEFINE_bool("allow_absolute_paths", False, "accept absolute image paths in the manifest "
                      "(relative ones must stay inside --image_root)")
    flags.DEFINE_string("csv_img_key", defaults.csv_img_key, "csv: the image path column (open_clip's default)")
    flags.DEFINE_string("csv_caption_key", defaults.csv_caption_key, "csv: the caption column (open_clip's default)")
    flags.DEFINE_string("csv_separator", defaults.csv_separator, "csv: the separator (open_clip's default: tab; "
                        "'\\t' also means tab)")
    flags.DEFINE_string("parquet_image_column", defaults.parquet_image_column,
                        "parquet: the image column (bytes, a path, or a struct {bytes, path})")
    flags.DEFINE_string("parquet_caption_column", defaults.parquet_caption_column, "parquet: the caption column")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
