"""PhenoKG records, the validation report, and the bad-input policy (`validate_records`)."""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Any, Callable, Collection, Iterable, Sequence

from phenolip_jax import config_lib
from phenolip_jax import ontology as onto_mod
from phenolip_jax.data import containers, images, paths
from phenolip_jax.data.tokenize import count_tokens

log = logging.getLogger(__name__)

# Reasons that drop a record (skip by default, raise under strict=True).
DROP_REASONS = (
    "malformed_line",  # a manifest line that does not parse (bad JSON, missing field)
    "blank_line",  # an empty (or whitespace-only) manifest line: it holds no record, but is counted
    "unsafe_path",  # an image path leaving image_root (../, symlink), or absolute without allow_absolute
    "missing_image",
    "corrupt_image",
    "empty_caption",
    "unknown_hpo",
    "obsolete_hpo",  # obsolete id without a replacement term
    "duplicate",  # same image + caption as an earlier record
    "long_caption",  # only under strict=True; by default long captions are truncated
    "unknown_split",  # a split name that is none of SPLITS (nor an alias): training and evaluation read neither
)
# Notes that keep the record (counted, logged, never raised on except 'truncated' under strict).
KEEP_REASONS = ("truncated", "remapped", "converted", "hpo_truncated", "no_split", "no_hpo")
# What happened to a kept record, printed beside its count (a bare "truncated 254 (kept)" read as a fault).
KEEP_MEANING = {"truncated": "caption longer than max_len tokens: its first max_len are used",
                "remapped": "obsolete or alternative HPO id replaced by the current term",
                "converted": "image not RGB: converted", "hpo_truncated": "more than max_hpo ids: the first kept",
                "no_split": "no split given: counted as train",
                "no_hpo": "no HPO ids: kept (a linker can fill them in)"}
SPLITS = ("train", "val", "test")
# Other spellings of the splits, matched ignoring case: 'Train', 'VALIDATION' and 'dev' are what they say.
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "testing": "test", "training": "train"}
ImageProbe = tuple[str | None, str, str | None]  # probe_image: (drop reason or None, detail, converted from)


def normalise_split(name: str) -> str | None:
    """The split a manifest's name means ('Train' -> 'train', 'validation' -> 'val'), or None when unknown."""
    key = name.strip().casefold()
    return key if key in SPLITS else SPLIT_ALIASES.get(key)


@dataclasses.dataclass(frozen=True)
class Record:
    """One image-caption pair with its HPO ids and where it came from."""

    image: str  # path as written in the manifest (relative to image_root unless absolute), or a container
    # reference 'tar+<path>#...' / 'parquet+<path>#...' (data/containers.py) whose <path> follows the same rules
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


class BadRecordError(config_lib.UserError):
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
                kind = "dropped" if reason in DROP_REASONS else f"kept: {KEEP_MEANING[reason]}"
                lines.append(f"  {reason:<15} {self.counts[reason]:>7} ({kind})")
                lines.extend(f"      e.g. {e}" for e in self.examples.get(reason, []))
        return "\n".join(lines)


class UnsafePathError(ValueError):
    """An image path that would be read from outside the image root."""


def resolve_image_path(image: str, image_root: str | os.PathLike | None, allow_absolute: bool = False) -> str:
    """The file a manifest's image path names: inside image_root, or absolute only when allowed.

    A relative path is joined to image_root and must stay inside it after normalisation with symlinks
    followed (`../x.png`, or a link pointing out, raise UnsafePathError); under a bucket URL root (no
    symlinks there) the normalised path must stay under the root. An absolute path or URL raises unless
    `allow_absolute` (`config.data.allow_absolute_paths`). Without an image_root the path is used as is.
    A container reference (data/containers.py) keeps its place in the container; its file obeys these rules.
    """
    if containers.is_reference(image):
        inner = resolve_image_path(containers.container_path(image), image_root, allow_absolute)
        return containers.with_container(image, inner)
    if image_root is None:
        return image
    if paths.is_absolute(image):
        if not allow_absolute:
            raise UnsafePathError(f"absolute image path {image!r} (allowed only with config.data.allow_absolute_paths)")
        return image
    if paths.is_url(image_root):
        if ".." in os.path.normpath(image).split(os.sep):
            raise UnsafePathError(f"image path {image!r} leaves image_root {image_root}")
        return paths.join(image_root, os.path.normpath(image))
    root = os.path.realpath(os.fspath(image_root))
    path = os.path.realpath(os.path.join(root, image))
    if os.path.commonpath([root, path]) != root:
        raise UnsafePathError(f"image path {image!r} resolves to {path}, outside image_root {root}")
    return path


def _fail(report: ValidationReport, strict: bool, rec: Record, reason: str, detail: str) -> None:
    if strict:
        raise BadRecordError(rec.where, reason, detail)
    report.add(reason, rec.where, detail)


def _resolve_hpo(rec: Record, ontology, max_hpo: int | None, report: ValidationReport,
                 strict: bool) -> tuple[str, ...] | None:
    """Current ids for the record (deduplicated, order kept), or None if one is unusable."""
    # ObsoleteHPOIdError (obsolete without replacement) subclasses UnknownHPOIdError; count apart.
    out: list[str] = []
    for hid in rec.hpo_ids:
        try:
            current = ontology.resolve(hid)
        except KeyError as e:
            reason = "obsolete_hpo" if isinstance(e, onto_mod.ObsoleteHPOIdError) else "unknown_hpo"
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
    max_hpo_splits: Collection[str] | None = None,
    check_images: bool = True,
    report: ValidationReport | None = None,
    allow_absolute: bool = False,
    image_probe: Callable[[str], ImageProbe] | None = None,
    token_count: Callable[[str], int] | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Apply the bad-input policy; return kept records (HPO ids resolved) and the report.

    Default: skip bad records, count them per reason, log the first few with file and line.
    strict=True: raise `BadRecordError` on the first drop reason, or on a caption that would be
    truncated. Obsolete ids with a replacement and non-RGB images are fixed and kept either way; records
    without HPO ids are kept and counted as 'no_hpo'.
    `check_images` decodes every image fully (the only way to catch truncated files). An image path
    leaving image_root, or absolute without `allow_absolute`, is dropped as 'unsafe_path'. `max_hpo` cuts the
    ids of records in `max_hpo_splits` only (None = every split): held-out records keep all their phenotypes.
    `image_probe` / `token_count` stand in for `probe_image` / `count_tokens` (data/pack_steps.py passes what its
    workers found), so the policy, its order and its report stay this function's wherever the decoding ran.
    """
    image_probe = image_probe or probe_image
    report = report if report is not None else ValidationReport()
    seen: set[tuple[str, str]] = set()
    kept: list[Record] = []
    for rec in records:
        report.total += 1
        if not rec.split:  # a record that names no split trains, and says so
            report.add("no_split", rec.where, "no 'split': counted as train")
            rec = dataclasses.replace(rec, split="train")
        split = normalise_split(rec.split)
        if split is None:
            _fail(report, strict, rec, "unknown_split", f"{rec.split!r} is none of {', '.join(SPLITS)}")
            continue
        if split != rec.split:
            rec = dataclasses.replace(rec, split=split)
        caption = rec.caption.strip() if isinstance(rec.caption, str) else ""
        if not caption:
            _fail(report, strict, rec, "empty_caption", "")
            continue
        key = (rec.image, caption)
        if key in seen:
            _fail(report, strict, rec, "duplicate", f"image={rec.image}")
            continue
        try:
            path = resolve_image_path(rec.image, image_root, allow_absolute)
        except UnsafePathError as e:
            _fail(report, strict, rec, "unsafe_path", str(e))
            continue
        cut = max_hpo if max_hpo_splits is None or rec.split in max_hpo_splits else None
        hpo = _resolve_hpo(rec, ontology, cut, report, strict)
        if hpo is None:
            continue
        if check_images and not _check_image(rec, path, report, strict, image_probe(path)):
            continue
        if tokenizer is not None and max_len is not None:
            n = token_count(caption) if token_count else count_tokens(tokenizer, caption)
            if n > max_len:
                if strict:
                    raise BadRecordError(rec.where, "long_caption", f"{n} tokens > max_len={max_len}")
                report.add("truncated", rec.where, f"{n} tokens > max_len={max_len}")
        if not hpo:  # kept: a caption without ids still trains the contrastive loss
            report.add("no_hpo", rec.where)
        seen.add(key)
        kept.append(dataclasses.replace(rec, caption=caption, hpo_ids=hpo))
    report.kept += len(kept)
    return kept, report


def probe_image(path: str) -> ImageProbe:
    """What checking the image at `path` finds: (drop reason or None, detail, the mode it was converted from)."""
    if not containers.exists(path):  # the file, or the container a reference points into
        return "missing_image", path, None
    try:
        return None, "", images.decode_rgb(containers.read_image_bytes(path))[1]
    except containers.MissingImageError as e:  # a null Parquet cell
        return "missing_image", str(e), None
    except (images.ImageDecodeError, containers.ContainerReadError) as e:
        return "corrupt_image", f"{path}: {e}", None


def _check_image(rec: Record, path: str, report: ValidationReport, strict: bool, probe: ImageProbe) -> bool:
    reason, detail, converted_from = probe
    if reason is not None:
        _fail(report, strict, rec, reason, detail)
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
