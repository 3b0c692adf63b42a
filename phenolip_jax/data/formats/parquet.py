"""Parquet files (BIOMEDICA, Hugging Face image datasets): an image column and a caption column, chosen by name.

The image column holds encoded bytes (binary), a path (string, relative to the Parquet file's folder), or a
struct {bytes, path} as Hugging Face writes images (bytes when present, else the path). Optional columns:
`hpo_ids` (a list of ids or text holding them) and `split` (else the split the file's path names). Bytes stay in
the file: a record holds `parquet+<file>#row=..&column=..` (data/containers.py). The file is read in batches, so
memory holds one batch, never the file.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

from phenolip_jax.data import containers, paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import Record, ValidationReport

SUFFIXES = (".parquet",)
BATCH_ROWS = 256  # rows read at a time while listing (a struct image column brings its bytes along)


def _image_kind(path: str, field: Any, flag: str) -> str:
    """'bytes', 'path' or 'struct' for the image column's Arrow type; FormatError for anything else."""
    import pyarrow as pa  # optional: only Parquet inputs need pyarrow

    t = field.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "path"
    if pa.types.is_struct(t) and {"bytes", "path"} & {t.field(i).name for i in range(t.num_fields)}:
        return "struct"
    raise common.FormatError(f"{path}: column {field.name!r} ({flag}) is {t}: want image bytes, a path, "
                      "or a struct with 'bytes' / 'path'")


def _open(path: str):
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover (pyarrow is installed with the test requirements)
        raise common.FormatError("--format=parquet needs pyarrow (pip install pyarrow)") from e
    try:
        return pq.ParquetFile(path if not paths.is_url(path) else paths.open_binary(path))
    except Exception as e:  # noqa: BLE001 (pyarrow raises ArrowInvalid / OSError for a file that is not Parquet)
        raise common.FormatError(f"{path}: not a Parquet file ({type(e).__name__}: {e})") from e


def read(path: str, rel: str, options: common.ReadOptions, report: ValidationReport,
         strict: bool) -> Iterator[Record]:
    """Records of one Parquet file (`rel`: its path relative to the image root, written into the references)."""
    pf = _open(path)
    names = pf.schema_arrow.names
    image_col, caption_col = options.parquet_image_column, options.parquet_caption_column
    for col, flag in ((image_col, "--parquet_image_column"), (caption_col, "--parquet_caption_column")):
        if col not in names:
            raise common.FormatError(f"{path}: no column {col!r} ({flag}); columns: {', '.join(names)}")
    kind = _image_kind(path, pf.schema_arrow.field(image_col), "--parquet_image_column")
    extra = [c for c in ("hpo_ids", "split") if c in names]
    columns = [caption_col] + extra + ([image_col] if kind != "bytes" else [])  # bytes: read when packing
    try:
        yield from _rows(pf, path, rel, kind, columns, options, report, strict)
    finally:
        pf.close(force=True)  # force: also a bucket file handed to pyarrow open


def _rows(pf: Any, path: str, rel: str, kind: str, columns: list[str], options: common.ReadOptions,
          report: ValidationReport, strict: bool) -> Iterator[Record]:
    image_col, caption_col = options.parquet_image_column, options.parquet_caption_column
    folder, file_split = os.path.dirname(rel), common.split_from_path(path)
    start = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys(columns))):
        cols = batch.to_pydict()
        for i, row in enumerate(range(start, start + batch.num_rows)):
            image = containers.parquet_reference(rel, row, image_col)
            cell = cols[image_col][i] if kind != "bytes" else None
            if kind == "struct" and cell and cell.get("bytes") is None:
                cell = cell.get("path")  # no bytes stored: the struct names a file
            if kind == "path" or isinstance(cell, str) or (kind == "struct" and not cell):
                if not cell:
                    common.count_unreadable(report, strict, f"{path}:{row + 1}", "missing_image",
                                            f"row {row}: no image bytes or path in column {image_col!r}")
                    continue
                image = common.rebase(cell, folder)
            caption = cols[caption_col][i]
            yield Record(image=image, caption=caption if isinstance(caption, str) else "",
                         hpo_ids=common.hpo_ids(cols["hpo_ids"][i]) if "hpo_ids" in cols else (),
                         split=(str(cols["split"][i] or "") if "split" in cols else "") or file_split,
                         source="parquet", origin=path, line=row + 1)
        start += batch.num_rows
