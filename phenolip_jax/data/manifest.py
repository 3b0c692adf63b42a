"""Manifest readers/writers: PhenoKG JSONL and PhenoBench's testdata.csv."""
from __future__ import annotations

import ast
import csv
import json
import os
import re
from typing import Iterable, Sequence

from phenolip_jax.data import paths
from phenolip_jax.data.records import BadRecordError, Record, ValidationReport, validate_records

_HPO_RE = re.compile(r"HP[:_]\s*(\d{7})", re.IGNORECASE)


def parse_hpo_matches(text) -> tuple[str, ...]:
    """HPO ids from a PhenoBench `full_matches` cell, normalised to 'HP:NNNNNNN', order kept, no repeats.

    Accepts, in this order: a JSON or Python-literal list (of ids, or of dicts/tuples holding ids),
    ids separated by ';' ',' or '|', and otherwise any 'HP:NNNNNNN' / 'HP_NNNNNNN' tokens found in
    free text. Empty / NaN cells give ().
    """
    if text is None:
        return ()
    if isinstance(text, (list, tuple)):
        return _unique(i for item in text for i in parse_hpo_matches(item))
    if isinstance(text, dict):
        return _unique(i for v in text.values() for i in parse_hpo_matches(v))
    s = str(text).strip()
    if not s or s.lower() in ("nan", "none", "[]"):
        return ()
    if s[0] in "[({":
        for loads in (json.loads, ast.literal_eval):
            try:
                return parse_hpo_matches(loads(s))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    # Ids separated by ';' ',' '|' or spaces, or embedded in free text ("HP:0001250 (Seizure)"):
    # the token regex finds them in all these layouts and never invents one.
    return _unique(f"HP:{m}" for m in _HPO_RE.findall(s))


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for i in ids:
        out.setdefault(i, None)
    return tuple(out)


def _malformed(report: ValidationReport | None, strict: bool, where: str, detail: str,
               reason: str = "malformed_line") -> None:
    # A line that yields no record is still one line read: counted in `total` and under its reason.
    if strict:
        raise BadRecordError(where, reason, detail)
    if report is not None:
        report.total += 1
        report.add(reason, where, detail)


def read_jsonl(path: str | os.PathLike, *, strict: bool = False,
               report: ValidationReport | None = None) -> list[Record]:
    """Records from a JSONL manifest: one object per line with image, caption, hpo_ids, split, source.

    A blank line is a 'blank_line'; a line that is not UTF-8 JSON object text, holds unpaired surrogates
    (which no tokenizer or file system can take) or lacks `image`/`caption` is a 'malformed_line' (both
    counted in `report`, or raised under strict), so every line is a record or a count. A UTF-8 byte-order
    mark on the first line is ignored.
    """
    path = os.fspath(path)
    out = []
    # Bytes, decoded line by line: one undecodable line is one bad record, not a crash of the whole read.
    with paths.open_binary(path) as f:  # local file or bucket URL
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                _malformed(report, strict, where, f"not UTF-8: {e}")
                continue
            if not line.strip():
                _malformed(report, strict, where, "", reason="blank_line")
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                _check_unicode(line, obj)
                hpo = obj.get("hpo_ids") or ()
                out.append(Record(
                    image=str(obj["image"]), caption=str(obj.get("caption") or ""),
                    hpo_ids=parse_hpo_matches(hpo) if isinstance(hpo, str) else tuple(map(str, hpo)),
                    split=str(obj.get("split") or ""), source=str(obj.get("source") or ""),
                    image_id=str(obj.get("image_id") or ""), origin=path, line=lineno))
            except (ValueError, KeyError, TypeError, RecursionError) as e:  # RecursionError: absurdly nested JSON
                _malformed(report, strict, where, f"{type(e).__name__}: {str(e)[:200]}")
    return out


def _check_unicode(line: str, obj) -> None:
    """Raises UnicodeEncodeError when JSON escapes made a lone surrogate (e.g. "\\ud800") in any value."""
    if "\\u" in line:  # only escapes can smuggle surrogates in: decoded UTF-8 never holds them
        json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _is_unicode(text: str) -> bool:
    """False for text holding surrogates (escaped undecodable bytes or unpaired JSON escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_phenobench_csv(path: str | os.PathLike, *, split: str = "test", source: str = "phenobench",
                        strict: bool = False, report: ValidationReport | None = None) -> list[Record]:
    """Records from PhenoBench's testdata.csv (columns image_path, caption, full_matches)."""
    path = os.fspath(path)
    out = []
    # surrogateescape: a row with bytes that are not UTF-8 becomes one malformed row below, not a crash;
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column.
    # csv.reader, not DictReader: DictReader skips blank rows without a trace, and every row must count.
    with paths.open_text(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        fieldnames = next(reader, None) or []
        missing = {"image_path", "caption", "full_matches"} - set(fieldnames)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; have {fieldnames}")
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not cells:
                _malformed(report, strict, where, "", reason="blank_line")
                continue
            row = dict(zip(fieldnames, cells))
            if not row.get("image_path"):
                _malformed(report, strict, where, "empty image_path")
                continue
            if not all(_is_unicode(v) for v in row.values() if isinstance(v, str)):
                _malformed(report, strict, where, "not UTF-8")
                continue
            out.append(Record(
                image=row["image_path"].strip(), caption=row.get("caption") or "",
                hpo_ids=parse_hpo_matches(row.get("full_matches")), split=split, source=source,
                origin=path, line=reader.line_num))
    return out


def read_manifest(path: str | os.PathLike, **kwargs) -> list[Record]:
    """Dispatch on the extension: .csv -> PhenoBench layout, anything else -> JSONL."""
    if os.fspath(path).lower().endswith(".csv"):
        return read_phenobench_csv(path, **kwargs)
    return read_jsonl(path, **kwargs)


def read_and_validate(paths: Sequence[str | os.PathLike], ontology, image_root: str | os.PathLike | None, *,
                      strict: bool = False, **validate_kwargs) -> tuple[list[Record], ValidationReport]:
    """Records of every manifest through the bad-input policy, with one report for all of them.

    Every input line is accounted for: report.total == report.kept + report.dropped, dropped split by
    reason; under `strict` the first bad line raises BadRecordError. `validate_kwargs` go to
    `validate_records` (tokenizer, max_len, max_hpo, check_images, allow_absolute).
    """
    report = ValidationReport()
    records: list[Record] = []
    for path in paths:
        records += read_manifest(path, strict=strict, report=report)
    return validate_records(records, ontology, image_root, strict=strict, report=report, **validate_kwargs)


def write_jsonl(records: Iterable[Record], path: str | os.PathLike) -> None:
    """Write records in the JSONL manifest format (image paths as stored in the records)."""
    lines = []
    for r in records:
        obj = {"image": r.image, "caption": r.caption, "hpo_ids": list(r.hpo_ids),
               "split": r.split, "source": r.source}
        if r.image_id != r.image:
            obj["image_id"] = r.image_id
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    paths.write_text(path, "".join(lines))
