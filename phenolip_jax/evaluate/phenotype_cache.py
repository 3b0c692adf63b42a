"""Phenotype embeddings cached per model: every HPO term through the prompt templates takes minutes on a CPU
(18,386 terms x 5 prompts), so a second predict on the same run reads them back instead.

A cache file holds the phenotype texts (the terms' names) it has encoded and their embeddings: an embedding
depends on the name, not on the id or the release. The file's name is a fingerprint of everything else an
embedding depends on: the text tower's parameters, the module's configuration, the tokenizer, max_len and the
prompt templates. Another model or prompt set gets another file. A request encodes only the names not yet in
the file, so a new HPO release re-encodes its new and renamed terms and reuses the rest.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import artifacts

CACHE_DIRNAME = "phenotype_cache"
CHUNK = 256  # phenotypes per progress update (each is len(templates) prompts)
FORMAT = "names-v2"  # entries keyed by the phenotype's name (v1 files, keyed by id and release, are not read)


def fingerprint(model: Any, templates: Sequence[str]) -> str:
    """Hex sha256 of what the model's phenotype embeddings depend on besides the names (text params, module,
    tokenizer, prompts, max_len)."""
    h = artifacts.hash_params(hashlib.sha256(), model.params if model.kind == "stage1" else model.params["text"])
    tok = model.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # its truncation and padding state changes as it is used: not part of the key
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        spec = sorted(tok.get_vocab().items())
    h.update(json.dumps(spec, sort_keys=True).encode())
    h.update(json.dumps([FORMAT, repr(model.module), model.max_len, list(templates)]).encode())
    return h.hexdigest()


def _read(path: str) -> dict[str, np.ndarray]:
    """{phenotype name: embedding} of a cache file; {} when absent or unreadable (it is then rebuilt)."""
    if not os.path.exists(path):
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            ids, emb = [str(i) for i in f["names"]], np.asarray(f["emb"], np.float32)
    except (OSError, ValueError, KeyError) as err:
        print(f"predict: ignoring unreadable phenotype cache {path}: {err}", file=sys.stderr, flush=True)
        return {}
    return dict(zip(ids, emb)) if len(ids) == len(emb) else {}


def _write(path: str, table: dict[str, np.ndarray]) -> None:
    """Writes the table atomically: a reader sees the old file or the new one, never half of one."""
    ids = list(table)
    fd, tmp = tempfile.mkstemp(prefix=".phenotypes-", suffix=".npz", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, names=np.asarray(ids), emb=np.stack([table[i] for i in ids]).astype(np.float32))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _writable_dir(candidates: Sequence[str]) -> str | None:
    """The first of `candidates` that exists (or can be made) and takes a file."""
    for d in candidates:
        try:
            os.makedirs(d, exist_ok=True)
            with tempfile.TemporaryFile(dir=d):
                return d
        except OSError:
            continue
    return None


def progress_bar(done: int, total: int, start: float, what: str = "images") -> None:
    """One carriage-return progress line on stderr: bar, count, elapsed and ETA."""
    frac = done / max(total, 1)
    elapsed = time.time() - start
    eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
    bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
    print(f"\r[{bar}] {done}/{total} {what} elapsed {elapsed:.0f}s eta {eta:.0f}s", end="\n" if done >= total else "",
          file=sys.stderr, flush=True)


def encode_with_progress(model: Any, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """[P, D] phenotype embeddings of names, encoded CHUNK at a time with one progress line on stderr."""
    out, start = [], time.time()
    for lo in range(0, len(names), CHUNK):
        out.append(model.encode_prompts(list(names[lo:lo + CHUNK]), templates))
        progress_bar(min(lo + CHUNK, len(names)), len(names), start, "phenotypes")
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def phenotype_embeddings(model: Any, ids: Sequence[str], cache_dirs: Sequence[str],
                         templates: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """([P, D] embeddings of `ids` in order, {'cache': file or None, 'cached': n, 'encoded': n}): counts of
    distinct names, read from the cache or encoded now.

    The cache file is looked for in each of `cache_dirs` and written to the first writable one.
    """
    templates = tuple(templates or model.templates)
    names = model.phenotype_texts(list(ids))  # in the model's ontology: a new release's names
    name = f"phenotypes-{fingerprint(model, templates)[:24]}.npz"
    existing = next((os.path.join(d, name) for d in cache_dirs if os.path.exists(os.path.join(d, name))), None)
    table = _read(existing) if existing else {}
    missing = [t for t in dict.fromkeys(names) if t not in table]
    cached = len(set(names)) - len(missing)
    if missing:
        print(f"predict: encoding {len(missing)} phenotypes x {len(templates)} templates"
              + (f" ({cached} cached)" if cached else ""), file=sys.stderr, flush=True)
        table.update(zip(missing, encode_with_progress(model, missing, templates)))
        target = existing if existing and _writable_dir([os.path.dirname(existing)]) else None
        if target is None and (d := _writable_dir(cache_dirs)):
            target = os.path.join(d, name)
        if target:
            _write(target, table)
        else:
            print(f"predict: no writable cache folder among {list(cache_dirs)}: embeddings not cached",
                  file=sys.stderr, flush=True)
        existing = target
    return np.stack([table[t] for t in names]).astype(np.float32), dict(cache=existing, cached=cached,
                                                                        encoded=len(missing))
