"""PhenoKG records, the validation report, and the bad-input policy (`validate_records`)."""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Any, Iterable, Sequence

from phenolip_jax.data import images, paths

log = logging.getLogger(__name__)

# Reasons that drop a record (skip by default, raise under strict=True).
DROP_REASONS = (
    "malformed_line",  # a manifest line that does not parse (bad JSON, missing field)
    "missing_image",
    "corrupt_image",
    "empty_caption",
    "unknown_hpo",
    "obsolete_hpo",  # obsolete id without a replacement term
    "duplicate",  # same image + caption as an earlier record
    "long_caption",  # only under strict=True; by default long captions are truncated
)
# Notes that keep the record (counted, logged, never raised on except 'truncated' under strict).
KEEP_REASONS = ("truncated", "remapped", "converted", "hpo_truncated")


@dataclasses.dataclass(frozen=True)
class Record:
    """One image-caption pair with its HPO ids and where it came from."""

    image: str  # path as written in the manifest, relative to image_root unless absolute
    caption: str
    hpo_ids: tuple[str, ...] = ()
    split: str = "train"
    source: str = ""
    image_id: str = ""  # stable string key of the image; defaults to `image`
    origin: str = ""  # manifest file the record was read from
    line: int = 0  # 1-based line (JSONL) or data row + 1 (CSV header is line 1)

    def __post_init__(self):
        if not self.image_id:
            object.__setattr__(self, "image_id", self.image)
        object.__setattr__(self, "hpo_ids", tuple(self.hpo_ids))

    @property
    def where(self) -> str:
        """`file:line` for messages."""
        return f"{self.origin or '<memory>'}:{self.line}"


class BadRecordError(ValueError):
    """A record that breaks the input policy; names file, line and reason."""

    def __init__(self, where: str, reason: str, detail: str = ""):
        self.where, self.reason, self.detail = where, reason, detail
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass
class ValidationReport:
    """Counts per reason plus the first few examples of each, printable."""

    max_examples: int = 5
    total: int = 0
    kept: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, where: str, detail: str = "") -> None:
        """Count one occurrence; log and keep it while under `max_examples` for this reason."""
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            msg = f"{where}: {reason}" + (f" ({detail})" if detail else "")
            shown.append(msg)
            log.warning("input policy: %s", msg)

    @property
    def dropped(self) -> int:
        """Records skipped for any drop reason."""
        return sum(self.counts[r] for r in DROP_REASONS)

    def merge(self, other: "ValidationReport") -> None:
        """Add another report's counts and examples into this one."""
        self.total += other.total
        self.kept += other.kept
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples.get(reason, [])[: self.max_examples - len(shown)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"total": self.total, "kept": self.kept, "dropped": self.dropped,
                "counts": dict(self.counts), "examples": self.examples}

    def __str__(self) -> str:
        lines = [f"records: {self.total} read, {self.kept} kept, {self.dropped} dropped"]
        for reason in DROP_REASONS + KEEP_REASONS:
            if self.counts[reason]:
                kind = "dropped" if reason in DROP_REASONS else "kept"
                lines.append(f"  {reason:<15} {self.counts[reason]:>7} ({kind})")
                lines.extend(f"      e.g. {e}" for e in self.examples.get(reason, []))
        return "\n".join(lines)


def resolve_image_path(image: str, image_root: str | os.PathLike | None) -> str:
    """Absolute paths stay; relative ones are joined to image_root."""
    if paths.is_absolute(image) or image_root is None:
        return image
    return paths.join(image_root, image)


def _fail(report: ValidationReport, strict: bool, rec: Record, reason: str, detail: str) -> None:
    if strict:
        raise BadRecordError(rec.where, reason, detail)
    report.add(reason, rec.where, detail)


def _resolve_hpo(rec: Record, ontology, max_hpo: int | None, report: ValidationReport,
                 strict: bool) -> tuple[str, ...] | None:
    """Current ids for the record (deduplicated, order kept), or None if one is unusable."""
    from phenolip_jax import ontology as onto_mod  # lazy: keeps `records` importable on its own

    # ObsoleteHPOIdError (obsolete without replacement) subclasses UnknownHPOIdError; count apart.
    obsolete_error = getattr(onto_mod, "ObsoleteHPOIdError", ())
    out: list[str] = []
    for hid in rec.hpo_ids:
        try:
            current = ontology.resolve(hid)
        except KeyError as e:
            reason = "obsolete_hpo" if obsolete_error and isinstance(e, obsolete_error) else "unknown_hpo"
            _fail(report, strict, rec, reason, str(e))
            return None
        if current != hid:
            report.add("remapped", rec.where, f"{hid} -> {current}")
        if current not in out:
            out.append(current)
    if max_hpo is not None and len(out) > max_hpo:
        report.add("hpo_truncated", rec.where, f"{len(out)} ids > max_hpo={max_hpo}")
        out = out[:max_hpo]
    return tuple(out)


def validate_records(
    records: Iterable[Record],
    ontology,
    image_root: str | os.PathLike | None,
    tokenizer=None,
    max_len: int | None = None,
    strict: bool = False,
    *,
    max_hpo: int | None = None,
    check_images: bool = True,
    report: ValidationReport | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Apply the bad-input policy; return kept records (HPO ids resolved) and the report.

    Default: skip bad records, count them per reason, log the first few with file and line.
    strict=True: raise `BadRecordError` on the first drop reason, or on a caption that would be
    truncated. Obsolete ids with a replacement and non-RGB images are fixed and kept either way.
    `check_images` decodes every image fully (the only way to catch truncated files).
    """
    report = report if report is not None else ValidationReport()
    seen: set[tuple[str, str]] = set()
    kept: list[Record] = []
    for rec in records:
        report.total += 1
        caption = rec.caption.strip() if isinstance(rec.caption, str) else ""
        if not caption:
            _fail(report, strict, rec, "empty_caption", "")
            continue
        key = (rec.image, caption)
        if key in seen:
            _fail(report, strict, rec, "duplicate", f"image={rec.image}")
            continue
        hpo = _resolve_hpo(rec, ontology, max_hpo, report, strict)
        if hpo is None:
            continue
        if check_images and not _check_image(rec, image_root, report, strict):
            continue
        if tokenizer is not None and max_len is not None:
            from phenolip_jax.data.tokenize import count_tokens

            n = count_tokens(tokenizer, caption)
            if n > max_len:
                if strict:
                    raise BadRecordError(rec.where, "long_caption", f"{n} tokens > max_len={max_len}")
                report.add("truncated", rec.where, f"{n} tokens > max_len={max_len}")
        seen.add(key)
        kept.append(dataclasses.replace(rec, caption=caption, hpo_ids=hpo))
    report.kept += len(kept)
    return kept, report


def _check_image(rec: Record, image_root, report: ValidationReport, strict: bool) -> bool:
    path = resolve_image_path(rec.image, image_root)
    if not paths.is_file(path):
        _fail(report, strict, rec, "missing_image", path)
        return False
    try:
        _, converted_from = images.decode_rgb(paths.read_bytes(path))
    except images.ImageDecodeError as e:
        _fail(report, strict, rec, "corrupt_image", f"{path}: {e}")
        return False
    if converted_from is not None:
        report.add("converted", rec.where, f"mode {converted_from} -> RGB")
    return True


def assign_ids(records: Sequence[Record]) -> tuple[list[int], list[int], list[str], list[str]]:
    """Stable int ids: images by `image_id`, captions by text, numbered in order of first appearance.

    Returns (image_ids, caption_ids, image_keys, caption_texts); two records share an image id
    exactly when they show the same image, so evaluation can build multi-positive ground truth.
    """
    image_index: dict[str, int] = {}
    caption_index: dict[str, int] = {}
    image_ids, caption_ids = [], []
    for rec in records:
        image_ids.append(image_index.setdefault(rec.image_id, len(image_index)))
        caption_ids.append(caption_index.setdefault(rec.caption, len(caption_index)))
    return image_ids, caption_ids, list(image_index), list(caption_index)
