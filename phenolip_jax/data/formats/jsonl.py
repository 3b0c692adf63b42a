"""PhenoKG JSONL manifests (and PhenoBench CSVs) through `manifest.read_manifest`, several at once: each
manifest's image paths, relative to its own folder, are moved under the common image root."""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

from phenolip_jax.data import containers
from phenolip_jax.data.formats import common
from phenolip_jax.data.manifest import read_manifest
from phenolip_jax.data.records import Record, ValidationReport

SUFFIXES = (".jsonl",)


def rebased(rec: Record, folder: str) -> Record:
    """The record with its image path (and the image id it defaulted to) written relative to the common root."""
    if not folder:
        return rec
    if containers.is_reference(rec.image):
        image = containers.with_container(rec.image, common.rebase(containers.container_path(rec.image), folder))
    else:
        image = common.rebase(rec.image, folder)
    return dataclasses.replace(rec, image=image, image_id=image if rec.image_id == rec.image else rec.image_id)


def read(path: str, rel: str, options: common.ReadOptions, report: ValidationReport, strict: bool
         ) -> Iterator[Record]:
    """Records of one manifest (`rel`: its path relative to the image root; '' under --image_root)."""
    folder = os.path.dirname(rel)
    for rec in read_manifest(path, strict=strict, report=report):
        yield rebased(rec, folder)
