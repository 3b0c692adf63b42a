"""webdataset tar shards (PMC-15M, BIOMEDICA): samples `key.{jpg,jpeg,png,webp}` + `key.{txt,json}`.

The caption is the `.txt` member, else the `.json` member's `caption`; HPO ids come from the json's `hpo_ids`, the
split from its `split` (else from the shard's path, e.g. `train-000.tar` or `test/shard-0.tar`). Images stay in
the shard: a record holds `tar+<shard>#offset=..&size=..` (data/containers.py), read by one seek.
"""
from __future__ import annotations

import json
import tarfile
from typing import Iterator

from phenolip_jax.data import containers, paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import Record, ValidationReport

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # in order of preference when a sample holds several
TEXT_EXTS = ("txt", "json")
SUFFIXES = (".tar",)


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name as webdataset splits it: at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _group(path: str, tar: tarfile.TarFile, report: ValidationReport, strict: bool
           ) -> dict[str, dict[str, tarfile.TarInfo]]:
    """{key: {extension: member}} in shard order; a shard that breaks off keeps the samples before the break."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    count = 0
    try:
        for info in tar:
            count += 1
            if info.isfile():
                key, ext = sample_key(info.name)
                samples.setdefault(key, {}).setdefault(ext, info)
    except (tarfile.TarError, OSError) as e:
        common.count_unreadable(report, strict, f"{path}:{count + 1}", "malformed_line",
                                f"tar unreadable after {count} members: {type(e).__name__}: {e}")
    return samples


def _text(tar: tarfile.TarFile, info: tarfile.TarInfo | None) -> str | None:
    return None if info is None else tar.extractfile(info).read().decode("utf-8")


def read(path: str, rel: str, options: common.ReadOptions, report: ValidationReport, strict: bool
         ) -> Iterator[Record]:
    """Records of one shard (`rel`: its path relative to the image root, written into the references)."""
    try:
        f = paths.open_binary(path)
    except OSError as e:
        common.count_unreadable(report, strict, f"{path}:0", "malformed_line", f"cannot open: {e}")
        return
    with f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:")  # plain tar only: compressed members cannot be sought
        except tarfile.TarError as e:
            common.count_unreadable(report, strict, f"{path}:0", "malformed_line",
                                    f"not an uncompressed tar shard: {type(e).__name__}: {e}")
            return
        samples = _group(path, tar, report, strict)
        for n, (key, members) in enumerate(samples.items(), start=1):
            where = f"{path}:{n}"
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            if image is None:
                common.count_unreadable(report, strict, where, "missing_image",
                                        f"sample {key!r} has no {'/'.join(IMAGE_EXTS)} member (has: "
                                        f"{', '.join(sorted(members)) or 'nothing'})")
                continue
            try:
                caption, meta = _text(tar, members.get("txt")), json.loads(_text(tar, members.get("json")) or "{}")
                if not isinstance(meta, dict):
                    raise ValueError("the .json member is not a JSON object")
            except (ValueError, tarfile.TarError, OSError) as e:  # bad UTF-8 / JSON, a member cut short
                common.count_unreadable(report, strict, where, "malformed_line", f"sample {key!r}: {e}")
                continue
            if caption is None:
                caption = meta.get("caption")
            yield Record(
                image=containers.tar_reference(rel, image.offset_data, image.size),
                caption=caption if isinstance(caption, str) else "", hpo_ids=common.hpo_ids(meta.get("hpo_ids")),
                split=str(meta.get("split") or common.split_from_path(path)),
                source=str(meta.get("source") or "webdataset"), image_id=f"{rel}#{key}", origin=path, line=n)
