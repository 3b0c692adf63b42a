"""MedPix 2.0 (github.com/CHILab1/MedPix-2.0, folder `MedPix-2-0/`) with its official split.

`Descriptions.json` is a list with one object per image: `image` (file stem; the file is `images/<image>.png`),
`Type` (CT / MR), `U_id` (the case, one patient) and `Description` whose `Caption` is the caption.
`splitted_dataset/data_{train,dev,test}.jsonl` hold one case per line (`U_id`): a record's split is its case's
(dev -> val). `Case_topic.json` (the case text: history, findings, diagnosis) is not read, nor are the
`train_1` / `train_2` halves of train. A record keeps `image_id` = the image stem and `source` = `medpix:<U_id>`
(Record has no patient field; the case id travels into the packed shards this way).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from phenolip_jax.data import paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import Record, ValidationReport

DESCRIPTIONS = "Descriptions.json"
SPLIT_FILES = {"train": "splitted_dataset/data_train.jsonl", "val": "splitted_dataset/data_dev.jsonl",
               "test": "splitted_dataset/data_test.jsonl"}
IMAGE_DIR, IMAGE_EXT = "images", ".png"


def find(path: str) -> list[str]:
    """[Descriptions.json] of a MedPix 2.0 --input (see find_descriptions)."""
    return [find_descriptions(path)]


def find_descriptions(path: str) -> str:
    """Descriptions.json given as the file, its `MedPix-2-0` folder, or the repository holding that folder."""
    for candidate in (path, paths.join(path, DESCRIPTIONS), paths.join(path, "MedPix-2-0", DESCRIPTIONS)):
        if candidate.endswith(DESCRIPTIONS) and paths.is_file(candidate):
            return candidate
    raise common.FormatError(f"--input={path!r}: no {DESCRIPTIONS} there, nor in {path}/MedPix-2-0 (want MedPix "
                             "2.0's MedPix-2-0 folder)")


def official_split(folder: str) -> dict[str, str]:
    """{U_id: split} from the split files; a missing file or a case in two splits is an error naming it."""
    split_of: dict[str, str] = {}
    for split, rel in SPLIT_FILES.items():
        path = paths.join(folder, rel)
        if not paths.is_file(path):
            raise common.FormatError(f"{path} not found: MedPix 2.0's official split is "
                                     f"{', '.join(SPLIT_FILES.values())}")
        with paths.open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    uid = str(json.loads(line)["U_id"])
                except (ValueError, KeyError, TypeError) as e:
                    raise common.FormatError(f"{path}:{lineno}: not a case with a U_id ({type(e).__name__}: {e})")
                if split_of.setdefault(uid, split) != split:
                    raise common.FormatError(f"{path}:{lineno}: case {uid} is in both {split_of[uid]} and {split}")
    return split_of


def json_items(text: str, path: str) -> Iterator[tuple[int, Any]]:
    """(line, item) for each item of a top-level JSON array, so messages name the item's line."""
    decoder, pos, line, counted = json.JSONDecoder(), 0, 1, 0
    try:
        pos = _skip(text, pos)
        if text[pos:pos + 1] != "[":
            raise ValueError("not a JSON list")
        pos = _skip(text, pos + 1)
        while text[pos:pos + 1] != "]":
            line, counted = line + text.count("\n", counted, pos), pos  # counted so far: linear, not quadratic
            item, pos = decoder.raw_decode(text, pos)
            yield line, item
            pos = _skip(text, pos)
            if text[pos:pos + 1] == ",":
                pos = _skip(text, pos + 1)
            elif text[pos:pos + 1] != "]":
                raise ValueError(f"',' or ']' expected at line {text.count(chr(10), 0, pos) + 1}")
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise common.FormatError(f"{path}: not MedPix's list of image descriptions ({e})") from e


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def read(descriptions: str, rel: str, options: common.ReadOptions, report: ValidationReport, strict: bool
         ) -> Iterator[Record]:
    """Records of Descriptions.json (`rel`: its path relative to the image root)."""
    folder = os.path.dirname(rel)
    split_of = official_split(paths.parent(descriptions))
    text = paths.read_bytes(descriptions).decode("utf-8-sig")
    for line, item in json_items(text, descriptions):
        where = f"{descriptions}:{line}"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not item["image"].strip():
            common.count_unreadable(report, strict, where, "malformed_line", "not an object with an 'image'")
            continue
        stem, uid = item["image"].strip(), str(item.get("U_id") or "")
        if "/" in stem or stem in (".", ".."):
            common.count_unreadable(report, strict, where, "malformed_line", f"bad image name {stem!r}")
            continue
        if uid not in split_of:
            common.count_unreadable(report, strict, where, "unknown_split",
                                    f"case {uid or '(no U_id)'} is in none of the official split files")
            continue
        desc = item.get("Description")
        caption = desc.get("Caption") if isinstance(desc, dict) else None
        yield Record(image=os.path.join(folder, IMAGE_DIR, stem + IMAGE_EXT),
                     caption=caption if isinstance(caption, str) else "", split=split_of[uid],
                     source=f"medpix:{uid}", image_id=stem, origin=descriptions, line=line)
