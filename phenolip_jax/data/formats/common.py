"""What every format reader shares: its options, finding the input files (globs, brace ranges, gs://), the
folder image paths are relative to, the split a file's path names, and counting a sample that yields no record."""
from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import re
from typing import Any, Iterable

from phenolip_jax import config_lib
from phenolip_jax.data import paths
from phenolip_jax.data.manifest import parse_hpo_matches
from phenolip_jax.data.records import BadRecordError, ValidationReport, normalise_split


class FormatError(config_lib.UserError):
    """Input that no reader can start on (no file matches, a named column is absent): names the file."""


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """The knobs of the readers (the packer's flags of the same names)."""

    image_root: str | None = None  # csv / jsonl: folder image paths are relative to (default: the file's)
    csv_img_key: str = "filepath"  # open_clip's defaults, so an open_clip CSV packs with no extra flags
    csv_caption_key: str = "title"
    csv_separator: str = "\t"
    parquet_image_column: str = "image"
    parquet_caption_column: str = "caption"


_RANGE = re.compile(r"\{([^{}]*)\}")
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}.tar` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept); `{x,y}` -> both, in order."""
    m = _RANGE.search(pattern)
    if not m:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    lo, dots, hi = body.partition("..")
    if dots and lo.isdigit() and hi.isdigit():
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    elif "," in body:
        items = body.split(",")
    else:  # a literal brace pair (no range, no list)
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [head + item + t for item in items for t in expand_braces(tail)]


def _glob(pattern: str) -> list[str]:
    if not paths.is_url(pattern):
        return sorted(glob.glob(pattern, recursive=True))
    parts = pattern.split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))  # the scheme never holds one
    base = "/".join(parts[:first])
    return sorted(os.fspath(p) for p in paths.as_path(base).glob("/".join(parts[first:])))


_URL_DEPTH = 4  # a bucket folder and 3 levels below it are searched (a recursive bucket listing is costly)


def _search(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files below `folder` whose names end in one of `suffixes`, sorted (URLs: up to _URL_DEPTH levels down)."""
    if not paths.is_url(folder):
        return sorted(p for s in suffixes for p in glob.glob(os.path.join(glob.escape(folder), "**", f"*{s}"),
                                                            recursive=True))
    root = paths.as_path(folder)
    return sorted(os.fspath(p) for s in suffixes for depth in range(_URL_DEPTH)
                  for p in root.glob("*/" * depth + f"*{s}"))


def find_inputs(pattern: str, suffixes: tuple[str, ...] = (), flag: str = "--input") -> list[str]:
    """Files named by a path, glob or brace range (local or URL); a folder gives its files ending in
    `suffixes` (searched recursively). Raises FormatError naming the pattern when nothing matches."""
    found: list[str] = []
    items = expand_braces(pattern)
    # A name given outright (a path, or one of a brace range) must exist: a shard missing from a range is data
    # lost without a count. A glob matches what is there.
    absent = [i for i in items if not _GLOB_CHARS.search(i) and not paths.exists(i)]
    if absent and len(absent) < len(items):
        raise FormatError(f"{flag}={pattern!r}: {len(absent)} of the {len(items)} files it names do not exist: "
                          f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    for item in items:
        matches = _glob(item) if _GLOB_CHARS.search(item) else ([item] if paths.exists(item) else [])
        for path in matches:
            if paths.as_path(path).is_dir():
                if not suffixes:
                    raise FormatError(f"{flag}={path!r} is a folder: name the file")
                found += _search(path, suffixes)
            else:
                found.append(path)
    found = list(dict.fromkeys(found))
    if not found:
        what = f" (no {' / '.join(suffixes)} file in it)" if suffixes and paths.exists(pattern) else ""
        raise FormatError(f"{flag}={pattern!r}: no files match{what}")
    return found


def common_folder(files: Iterable[str]) -> str:
    """The deepest folder holding every file (absolute for local paths; a URL prefix for URLs)."""
    folders = [paths.parent(f) for f in files]
    if not any(paths.is_url(f) for f in folders):
        return os.path.commonpath(folders)
    split = [f.rstrip("/").split("/") for f in folders]
    common = [p for p, *_ in itertools.takewhile(lambda parts: len(set(parts)) == 1, zip(*split))]
    return "/".join(common)


def relative_to(path: str, root: str) -> str:
    """`path` relative to `root` ('' when it is the root); `path` must lie under `root`."""
    if paths.is_url(root) or paths.is_url(path):
        root = root.rstrip("/")
        rel = path[len(root):].lstrip("/") if path == root or path.startswith(root + "/") else None
    else:
        rel = os.path.relpath(paths.absolute(path), root)
        rel = "" if rel == "." else rel
    if rel is None or rel == ".." or rel.startswith(".." + os.sep):
        raise FormatError(f"{path} is not inside {root}")
    return rel


def rebase(image: str, folder: str) -> str:
    """An image path written relative to `folder` (itself relative to the image root), made relative to the root;
    absolute paths and URLs stay as written (the input policy decides on them)."""
    if not image or paths.is_absolute(image) or not folder:
        return image
    return os.path.join(folder, image)  # not normalised: a '../' stays for the policy to refuse


_SPLIT_NAME = re.compile(r"^(train|training|validation|valid|val|dev|test|testing)(?:[-_]\d|\.)", re.IGNORECASE)


def split_from_path(path: str) -> str:
    """The split a file's location names, or '' (then the record counts as train, 'no_split').

    Checked in order: the file name in Hugging Face's layout (`train-00000-of-00004.parquet`, `test.tar`), then
    the names of its two nearest folders (`validation/radiology/captions.txt`). Only these: a folder higher up
    (a user's `~/test/`) says nothing about the data.
    """
    parts = path.rstrip("/").split("/")
    m = _SPLIT_NAME.match(parts[-1])
    if m:
        return normalise_split(m.group(1)) or ""
    for folder in reversed(parts[-3:-1]):
        if normalise_split(folder):
            return normalise_split(folder)
    return ""


def hpo_ids(value: Any) -> tuple[str, ...]:
    """HPO ids from a JSON / Parquet / CSV value: a list of ids, or text holding them (see parse_hpo_matches)."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    return parse_hpo_matches(value)


def count_unreadable(report: ValidationReport, strict: bool, where: str, reason: str, detail: str) -> None:
    """A sample or line that yields no record: one read, counted under `reason` (raised under strict)."""
    if strict:
        raise BadRecordError(where, reason, detail)
    report.total += 1
    report.add(reason, where, detail)
