"""Images inside container files (webdataset tar members, Parquet cells), named by a self-describing reference.

A record's `image` is either a path or a reference that says where the encoded bytes sit inside a container:

    tar+<path>#offset=<data offset>&size=<n>          (tarfile's TarInfo.offset_data and size)
    parquet+<path>#row=<i>&column=<name>              (row i of the file, counted from 0)

so a dataset of millions of images is a list of short strings, and one image is read by a seek (tar) or by
reading one row group's column (Parquet), never by holding a container in memory. `<path>` follows the same
rules as an image path (relative to the image root, checked by `records.resolve_image_path`); local files and
bucket URLs both work, through `data/paths.py`.
"""
from __future__ import annotations

import bisect
import collections
import threading
import urllib.parse
from typing import IO, Any

from phenolip_jax.data import paths

TAR, PARQUET = "tar+", "parquet+"
_SCHEMES = (TAR, PARQUET)
_OPEN_FILES = 8  # tar shards / Parquet files kept open: a pass reads them in order, so a few suffice


class MissingImageError(FileNotFoundError):
    """The container exists but holds no image where the reference points (a null Parquet cell)."""


class ContainerReadError(OSError):
    """The container cannot give the referenced bytes (truncated shard, bad row or column)."""


def is_reference(image: str) -> bool:
    """Whether `image` is a container reference rather than a path."""
    return isinstance(image, str) and image.startswith(_SCHEMES)


def tar_reference(path: str, offset: int, size: int) -> str:
    """The reference of a tar member's data: `tar+<path>#offset=..&size=..`."""
    return f"{TAR}{path}#" + urllib.parse.urlencode({"offset": int(offset), "size": int(size)})


def parquet_reference(path: str, row: int, column: str) -> str:
    """The reference of a Parquet cell: `parquet+<path>#row=..&column=..` (column names are URL-quoted)."""
    return f"{PARQUET}{path}#" + urllib.parse.urlencode({"row": int(row), "column": column})


def split_reference(ref: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, container path, parameters) of a reference; ValueError when it is not one."""
    scheme = next((s for s in _SCHEMES if ref.startswith(s)), None)
    path, sep, query = ref[len(scheme or ""):].rpartition("#")  # params are quoted: the last '#' is ours
    if scheme is None or not sep or not path:
        raise ValueError(f"not a container reference: {ref!r}")
    return scheme, path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


def container_path(ref: str) -> str:
    """The container file a reference points into."""
    return split_reference(ref)[1]


def with_container(ref: str, path: str) -> str:
    """The same reference pointing into `path` (the container path resolved against an image root)."""
    scheme, _, params = split_reference(ref)
    return f"{scheme}{path}#" + urllib.parse.urlencode(params)


def exists(image: str) -> bool:
    """Whether the image file, or the container a reference points into, exists."""
    return paths.is_file(container_path(image) if is_reference(image) else image)


def read_image_bytes(image: str) -> bytes:
    """The encoded image bytes of a path (read whole) or of a reference (read from inside its container)."""
    if not is_reference(image):
        return paths.read_bytes(image)
    scheme, path, params = split_reference(image)
    try:
        where = ((int(params["offset"]), int(params["size"])) if scheme == TAR
                 else (int(params["row"]), params["column"]))
    except (KeyError, ValueError) as e:  # a reference missing a parameter, or one that is not a number
        raise ContainerReadError(f"bad reference {image!r}: {type(e).__name__}: {e}") from e
    try:
        return _read_tar(path, *where) if scheme == TAR else _read_parquet(path, *where)
    except (MissingImageError, ContainerReadError):
        raise
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        raise ContainerReadError(f"{path}: {type(e).__name__}: {e}") from e


class _LRU:
    """A few open objects keyed by path; the oldest is closed when a new one is opened (thread-safe)."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, collections.OrderedDict(), threading.RLock()

    def get(self, key: Any, make) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            value = self.items[key] = make()
            while len(self.items) > self.size:
                _, old = self.items.popitem(last=False)
                getattr(old, "close", lambda: None)()
            return value

    def clear(self) -> None:
        with self.lock:
            for value in self.items.values():
                getattr(value, "close", lambda: None)()
            self.items.clear()


_tar_files = _LRU(_OPEN_FILES)
_parquet_files = _LRU(_OPEN_FILES)
_row_groups = _LRU(2)  # the row group column being read: memory is one row group's images, not the file's


def close_all() -> None:
    """Closes the cached open containers (tests; long-lived processes that moved on to other data)."""
    for cache in (_tar_files, _parquet_files, _row_groups):
        cache.clear()


def _read_tar(path: str, offset: int, size: int) -> bytes:
    with _tar_files.lock:  # seek + read on a shared handle (and no other thread closes it meanwhile)
        f: IO[bytes] = _tar_files.get(path, lambda: paths.open_binary(path))
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ContainerReadError(f"{path}: {size} bytes at offset {offset} wanted, {len(data)} there "
                                 "(truncated shard?)")
    return data


class _ParquetFile:
    """An open Parquet file and the first row of each row group (to find a row's group)."""

    def __init__(self, path: str):
        import pyarrow.parquet as pq  # optional: only Parquet inputs need pyarrow

        self.handle = None if paths.is_url(path) else path  # local: pyarrow opens (and maps) it itself
        if self.handle is None:
            self.handle = paths.open_binary(path)
        self.file = pq.ParquetFile(self.handle)
        meta = self.file.metadata
        self.starts = [0]
        for i in range(meta.num_row_groups):
            self.starts.append(self.starts[-1] + meta.row_group(i).num_rows)

    def close(self) -> None:
        self.file.close()
        getattr(self.handle, "close", lambda: None)()


def _read_parquet(path: str, row: int, column: str) -> bytes:
    with _parquet_files.lock:  # pyarrow file handles are not shared across threads safely
        pf: _ParquetFile = _parquet_files.get(path, lambda: _ParquetFile(path))
        if not 0 <= row < pf.starts[-1]:
            raise ContainerReadError(f"{path}: row {row} out of range (the file has {pf.starts[-1]} rows)")
        if column not in pf.file.schema_arrow.names:
            raise ContainerReadError(f"{path}: no column {column!r}; columns: {pf.file.schema_arrow.names}")
        group = bisect.bisect_right(pf.starts, row) - 1
        cells = _row_groups.get((path, group, column),
                                lambda: pf.file.read_row_group(group, columns=[column]).column(0))
        value = cells[row - pf.starts[group]].as_py()
    if isinstance(value, dict):  # BIOMEDICA / Hugging Face image struct {bytes, path}
        value = value.get("bytes")
    if value is None:
        raise MissingImageError(f"{path}: row {row} has no image bytes in column {column!r}")
    if not isinstance(value, (bytes, bytearray)):
        raise ContainerReadError(f"{path}: row {row}, column {column!r} holds {type(value).__name__}, not bytes")
    return bytes(value)
