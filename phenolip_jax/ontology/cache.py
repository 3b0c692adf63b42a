"""On-disk cache of a parsed `Ontology`: one pickle-free .npz per source sha256, written atomically."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from phenolip_jax.ontology.hpo import ARRAY_FIELDS, Ontology

log = logging.getLogger(__name__)

# Bump when the Ontology fields or their meaning change, so old caches are never misread.
CACHE_FORMAT = 1
_META_KEY = "meta_json"  # the text fields, as UTF-8 JSON bytes in a uint8 array (no object arrays)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """`$PHENOLIP_CACHE_DIR/ontology` if that variable is set, else `~/.cache/phenolip_jax/ontology`."""
    root = os.environ.get("PHENOLIP_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "ontology"
    return Path.home() / ".cache" / "phenolip_jax" / "ontology"


def cache_file(cache_dir: str | os.PathLike, source_sha256: str) -> Path:
    """Where the cache for a given source hash lives."""
    return Path(cache_dir) / f"hpo-v{CACHE_FORMAT}-{source_sha256}.npz"


def _meta(onto: Ontology) -> dict:
    return {
        "format": CACHE_FORMAT,
        "source_sha256": onto.source_sha256,
        "release": onto.release,
        "ids": onto.ids,
        "names": onto.names,
        "definitions": onto.definitions,
        "exact_synonyms": onto.exact_synonyms,
        "other_synonyms": onto.other_synonyms,
        "aliases": dict(onto.aliases),
        "obsolete_candidates": dict(onto.obsolete_candidates),
    }


def save_cache(onto: Ontology, path: str | os.PathLike) -> bool:
    """Write the cache atomically (temp file in the same folder + rename); False, with a warning, on error."""
    path = Path(path)
    payload = json.dumps(_meta(onto), ensure_ascii=False).encode("utf-8")
    arrays = {name: getattr(onto, name) for name in ARRAY_FIELDS}
    arrays[_META_KEY] = np.frombuffer(payload, dtype=np.uint8)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp",
                                         delete=False) as f:
            tmp_name = f.name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # os.replace is atomic within one filesystem: readers see the old file or the whole new one.
        os.replace(tmp_name, path)
        return True
    except OSError as err:
        log.warning("could not write ontology cache %s: %s", path, err)
        return False
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_cache(path: str | os.PathLike, source_sha256: str) -> Ontology | None:
    """The cached Ontology, or None if absent; a corrupt or mismatched cache is ignored with a warning."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data[_META_KEY]).decode("utf-8"))
            arrays = {name: data[name] for name in ARRAY_FIELDS}
        if meta.get("format") != CACHE_FORMAT or meta.get("source_sha256") != source_sha256:
            raise ValueError("format or source hash mismatch")
        return Ontology(
            ids=tuple(meta["ids"]),
            names=tuple(meta["names"]),
            definitions=tuple(meta["definitions"]),
            exact_synonyms=tuple(tuple(s) for s in meta["exact_synonyms"]),
            other_synonyms=tuple(tuple(s) for s in meta["other_synonyms"]),
            aliases=meta["aliases"],
            obsolete_candidates=meta["obsolete_candidates"],
            release=meta["release"],
            source_sha256=meta["source_sha256"],
            **arrays,
        )
    except Exception as err:  # noqa: BLE001 - any unreadable cache means: rebuild it
        log.warning("ignoring corrupt ontology cache %s (%s: %s); rebuilding", path, type(err).__name__, err)
        return None
