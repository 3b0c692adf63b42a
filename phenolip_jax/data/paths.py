"""One path type for local files and bucket URLs (gs://, s3://): `etils.epath`, never `os.path` on a URL.

`os.path.abspath("gs://b/x")` gives "/cwd/gs:/b/x" and `open()` cannot read a bucket, so every data reader
(manifests, images, packed shards, packing.json) and every workdir writer goes through these helpers.
Local paths behave exactly as before; URLs are read through epath's backends (fsspec, or tf.io.gfile when
TensorFlow is installed) and are never made absolute or normalised.
"""
from __future__ import annotations

import io
import json
import os
from typing import IO, Any

from etils import epath

PathLike = str | os.PathLike


def is_url(path: PathLike) -> bool:
    """Whether `path` names a non-local location ('scheme://...')."""
    return "://" in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
    """`path` as an epath.Path (local, gs://, s3://, ...)."""
    return epath.Path(path)


def absolute(path: PathLike) -> str:
    """Local paths made absolute; URLs returned unchanged (they are absolute already)."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def parent(path: PathLike) -> str:
    """The folder holding `path` (absolute for local paths, the URL's parent for URLs)."""
    return os.fspath(as_path(absolute(path)).parent)


def join(root: PathLike, *parts: str) -> str:
    """`root/part/...` as a string, for local folders and URLs alike."""
    return os.fspath(as_path(root).joinpath(*parts))


def is_absolute(path: PathLike) -> bool:
    """Absolute local paths and URLs: not resolved against an image root."""
    return is_url(path) or os.path.isabs(os.fspath(path))


def exists(path: PathLike) -> bool:
    """Whether `path` exists (a file or a folder)."""
    return as_path(path).exists()


def is_file(path: PathLike) -> bool:
    """Whether `path` is an existing file."""
    return as_path(path).is_file()


def read_bytes(path: PathLike) -> bytes:
    """The whole file at `path`."""
    return as_path(path).read_bytes()


def open_binary(path: PathLike, mode: str = "rb") -> IO[bytes]:
    """`path` opened in binary mode ('rb' or 'wb')."""
    return as_path(path).open(mode)


def open_text(path: PathLike, *, encoding: str = "utf-8", errors: str = "strict", newline: str | None = None
              ) -> IO[str]:
    """`path` opened for reading text, with the same decoding options as the built-in `open`."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors=errors, newline=newline)


def read_json(path: PathLike) -> Any:
    """The JSON document at `path`."""
    return json.loads(read_bytes(path).decode("utf-8"))


def write_text(path: PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path`, creating its folder; local files are replaced atomically."""
    p = as_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):  # object stores replace an object in one put: no temp file needed
        p.write_bytes(text.encode("utf-8"))
        return
    tmp = as_path(os.fspath(p) + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, p)
