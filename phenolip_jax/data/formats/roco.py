"""ROCO: `<split>/radiology/captions.txt` of `ID<TAB>caption` lines, images at `<split>/radiology/images/<ID>.jpg`.

The split is the folder's name (train / validation / test), else the record counts as train ('no_split');
`source` is `roco:radiology` or `roco:non-radiology`.
`cuis.txt` (UMLS concepts, not HPO ids) and the other side files are not read. A folder given as --input packs
every captions.txt below it (radiology and non-radiology); `--input='data/*/radiology'` packs radiology only.
"""
from __future__ import annotations

import os
from typing import Iterator

from phenolip_jax.data import paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import Record, ValidationReport

SUFFIXES = ("captions.txt",)
IMAGE_DIR, IMAGE_EXT = "images", ".jpg"  # scripts/fetch.py names images by ROCO ID since Jan 2022 (commit 0db07be)
CATEGORIES = ("radiology", "non-radiology")


def read(path: str, rel: str, options: common.ReadOptions, report: ValidationReport, strict: bool
         ) -> Iterator[Record]:
    """Records of one captions.txt (`rel`: its path relative to the image root)."""
    folder = os.path.dirname(rel)
    split = common.split_from_path(path)
    category = os.path.basename(os.path.dirname(path))  # radiology / non-radiology: kept in `source`
    source = f"roco:{category}" if category in CATEGORIES else "roco"
    with paths.open_text(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                common.count_unreadable(report, strict, where, "blank_line", "")
                continue
            image_id, tab, caption = line.rstrip("\r\n").partition("\t")
            image_id = image_id.strip()
            if not tab or not image_id or "/" in image_id or image_id in (".", ".."):
                common.count_unreadable(report, strict, where, "malformed_line",
                                        "want 'ID<TAB>caption'" if not tab else f"bad ID {image_id!r}")
                continue
            try:
                caption.encode("utf-8")
            except UnicodeEncodeError:
                common.count_unreadable(report, strict, where, "malformed_line", "not UTF-8")
                continue
            yield Record(image=os.path.join(folder, IMAGE_DIR, image_id + IMAGE_EXT), caption=caption,
                         split=split, source=source, image_id=image_id, origin=path, line=lineno)
