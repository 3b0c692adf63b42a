"""Readers of the field's dataset formats, all feeding the one accounting path (`records.validate_records`).

| format       | --input                                          | reader module     |
| jsonl        | JSONL manifest(s) (or PhenoBench CSV)            | jsonl.py          |
| webdataset   | tar shards: path, glob, brace range, gs://       | webdataset.py     |
| parquet      | Parquet file(s): image + caption columns         | parquet.py        |
| csv          | open_clip CSV / TSV                              | open_clip_csv.py  |
| roco         | ROCO folder, or its captions.txt files           | roco.py           |
| medpix       | MedPix 2.0's MedPix-2-0 folder                   | medpix.py         |

Every reader yields `records.Record`s with `origin` (file) and `line` (line, sample or row) filled, and counts
each sample that yields no record in the same report, so `read = kept + dropped` for every format.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

from phenolip_jax.data.formats import common, jsonl, medpix, open_clip_csv, parquet, roco, webdataset
from phenolip_jax.data.formats.common import FormatError, ReadOptions
from phenolip_jax.data.records import Record, ValidationReport, validate_records

__all__ = ["FORMATS", "FormatError", "ReadOptions", "list_inputs", "iter_records", "read_and_validate_input"]

# One module per format, each with SUFFIXES (the files a folder given as --input holds), an optional
# find(input) -> files, and read(path, rel, options, report, strict) -> Records.
READERS = {"jsonl": jsonl, "webdataset": webdataset, "parquet": parquet, "csv": open_clip_csv, "roco": roco,
           "medpix": medpix}
FORMATS = tuple(READERS)
_IMAGE_ROOT_FORMATS = ("jsonl", "csv")  # the formats whose data hold image paths relative to a folder of choice


def list_inputs(input: str, fmt: str, options: ReadOptions = ReadOptions()) -> tuple[list[str], str]:
    """(the files `input` names for `fmt`, the image root that record image paths are relative to)."""
    if fmt not in READERS:
        raise FormatError(f"--format={fmt!r}: use one of {', '.join(FORMATS)}")
    if options.image_root and fmt not in _IMAGE_ROOT_FORMATS:
        raise FormatError(f"--image_root is for --format={' / '.join(_IMAGE_ROOT_FORMATS)}; {fmt} finds its "
                          "images itself (inside the input, or next to it)")
    module = READERS[fmt]
    files = module.find(input) if hasattr(module, "find") else common.find_inputs(input, module.SUFFIXES)
    return files, options.image_root or common.common_folder(files)


def iter_records(fmt: str, files: list[str], root: str, options: ReadOptions, report: ValidationReport,
                 strict: bool = False) -> Iterator[Record]:
    """Records of `files` in order, image paths relative to `root`; samples that give none are counted."""
    for path in files:
        # Under --image_root the data's paths are relative to it, not to the file's folder.
        rel = "" if fmt in _IMAGE_ROOT_FORMATS and options.image_root else common.relative_to(path, root)
        yield from READERS[fmt].read(path, rel, options, report, strict)


def _with_progress(records: Iterable[Record], n_files: int, report: ValidationReport, every: int = 1000
                   ) -> Iterator[Record]:
    """Passes records through, printing `read N samples (k/n files)` to stderr now and then; N is the report's
    count (validation counts each record as it takes it, the readers each sample that gives none)."""
    start, files, last = time.perf_counter(), 0, None
    for n, rec in enumerate(records, start=1):
        if rec.origin != last:
            files, last = files + 1, rec.origin
        yield rec  # validation counts it before it asks for the next one
        if n % every == 0:
            print(f"\rread {report.total} samples ({files}/{n_files} files, "
                  f"{report.total / (time.perf_counter() - start):.0f}/s)", end="", file=sys.stderr, flush=True)
    print(f"\rread {report.total} samples from {n_files} file{'s' if n_files != 1 else ''}", file=sys.stderr,
          flush=True)


def read_and_validate_input(input: str, fmt: str, ontology, options: ReadOptions = ReadOptions(), *,
                            strict: bool = False, progress: bool = False, **validate_kwargs
                            ) -> tuple[list[Record], ValidationReport, str]:
    """(kept records, report, image root) of any format, through the bad-input policy of `validate_records`.

    As `manifest.read_and_validate`: every sample read is kept or counted per reason; `validate_kwargs` go to
    `validate_records` (tokenizer, max_len, max_hpo, check_images, allow_absolute). Records stream from the
    readers into validation, so only kept records (with references, not image bytes) are held.
    """
    files, root = list_inputs(input, fmt, options)
    report = ValidationReport()
    records = iter_records(fmt, files, root, options, report, strict)
    if progress:
        records = _with_progress(records, len(files), report)
    kept, report = validate_records(records, ontology, root, strict=strict, report=report, **validate_kwargs)
    return kept, report, root
