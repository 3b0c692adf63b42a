"""open_clip-style CSV / TSV: a header row, an image path column and a caption column, chosen by name.

open_clip trains from `--train-data x.csv --csv-img-key filepath --csv-caption-key title --csv-separator "\\t"`;
the same defaults here, so such a file packs with no extra flags. Image paths are relative to the CSV's folder
(or to --image_root); optional columns `hpo_ids` and `split` (else the split the file's path names).
"""
from __future__ import annotations

import csv
import os
from typing import Iterator

from phenolip_jax.data import paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import Record, ValidationReport

SUFFIXES = (".csv", ".tsv")


def separator(value: str) -> str:
    """The one-character separator a flag names ('\\t' typed as backslash-t on a command line is a tab)."""
    sep = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)
    if len(sep) != 1:
        raise common.FormatError(f"--csv_separator={value!r}: want one character (e.g. ',' or '\\t')")
    return sep


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogateescape kept the bytes that were not UTF-8
        return False
    return True


def read(path: str, rel: str, options: common.ReadOptions, report: ValidationReport,
         strict: bool) -> Iterator[Record]:
    """Records of one CSV (`rel`: its path relative to the image root; '' under --image_root)."""
    folder = os.path.dirname(rel)  # image paths are written relative to the CSV's folder (or to --image_root)
    sep, img_key, cap_key = separator(options.csv_separator), options.csv_img_key, options.csv_caption_key
    # utf-8-sig: spreadsheets start files with a byte-order mark; surrogateescape: a non-UTF-8 row is one bad
    # row, not a crash. csv.reader, not DictReader, which skips blank rows without a trace.
    with paths.open_text(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None) or []
        for key, flag in ((img_key, "--csv_img_key"), (cap_key, "--csv_caption_key")):
            if key not in header:
                raise common.FormatError(f"{path}: no column {key!r} ({flag}); columns: {header} (separator "
                                         f"{sep!r}: --csv_separator)")
        file_split = common.split_from_path(path)
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not cells or not any(c.strip() for c in cells):
                common.count_unreadable(report, strict, where, "blank_line", "")
                continue
            if len(cells) != len(header):  # a cell too few or too many: which column is which is a guess
                common.count_unreadable(report, strict, where, "malformed_line",
                                        f"{len(cells)} cells, the header has {len(header)}")
                continue
            row = dict(zip(header, cells))
            if not all(_is_unicode(c) for c in cells):
                common.count_unreadable(report, strict, where, "malformed_line", "not UTF-8")
                continue
            if not row[img_key].strip():
                common.count_unreadable(report, strict, where, "malformed_line", f"empty {img_key!r}")
                continue
            yield Record(image=common.rebase(row[img_key].strip(), folder), caption=row[cap_key],
                         hpo_ids=common.hpo_ids(row.get("hpo_ids")), split=row.get("split", "").strip() or file_split,
                         source="csv", origin=path, line=reader.line_num)

