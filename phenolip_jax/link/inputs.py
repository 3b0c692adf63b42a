"""What the link command reads: a JSONL manifest, `ID<TAB>caption` lines (ROCO's captions.txt), or plain captions.

JSONL goes through the project's manifest reader (`data.manifest.read_jsonl`). A text file is read here: one
record per non-blank line; with a tab, the text before it is the record's id (ROCO: the image is then
`images/<ID>.jpg` beside the file, as data/formats/roco.py names it), else the line is the caption and the
record has no image. Blank and unreadable lines are counted in the report, never silently dropped.
"""
from __future__ import annotations

import os

from phenolip_jax.data import manifest, paths
from phenolip_jax.data.records import Record, ValidationReport

INPUT_FORMATS = ("auto", "jsonl", "tsv", "text")  # config.input_format
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
ROCO_IMAGE = os.path.join("images", "{}.jpg")


def detect_format(path: str) -> str:
    """'jsonl' by extension (or a first non-blank line starting '{'), 'tsv' when that line holds a tab, else 'text'."""
    if path.lower().endswith(_JSONL_SUFFIXES):
        return "jsonl"
    with paths.open_text(path, encoding="utf-8-sig", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if "\t" in first else "text"


def read_input(path: str, fmt: str = "auto") -> tuple[list[Record], ValidationReport, str]:
    """(records, report of lines that gave none, the format read)."""
    if not os.path.exists(path) and "://" not in path:
        raise ValueError(f"config.input={path!r} does not exist")
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"config.input_format={fmt!r}: use one of {', '.join(INPUT_FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    report = ValidationReport()
    if fmt == "jsonl":
        records = manifest.read_jsonl(path, report=report)
    else:
        records = list(_read_lines(path, fmt == "tsv", report))
    report.kept = len(records)
    report.total += len(records)
    return records, report, fmt


def _read_lines(path: str, tabbed: bool, report: ValidationReport):
    with paths.open_text(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            line = line.rstrip("\r\n")
            if not line.strip():
                report.total += 1
                report.add("blank_line", where)
                continue
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                report.total += 1
                report.add("malformed_line", where, "not UTF-8")
                continue
            if tabbed:
                image_id, tab, caption = line.partition("\t")
                if not tab or not image_id.strip() or not caption.strip():
                    report.total += 1
                    report.add("malformed_line", where, "want 'ID<TAB>caption'")
                    continue
                image_id = image_id.strip()
                yield Record(image=ROCO_IMAGE.format(image_id), caption=caption.strip(), split="", image_id=image_id,
                             origin=path, line=lineno)
            else:
                yield Record(image="", caption=line.strip(), split="", image_id=f"line-{lineno}", origin=path,
                             line=lineno)
