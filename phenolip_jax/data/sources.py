"""Where stage 2's pairs come from: `config.data.source` = demo | jsonl | arrayrecord | tfds.

'demo' and 'jsonl' read a manifest into validated Records (tasks/stage2.load_records). 'arrayrecord'
(shards written by `python -m phenolip_jax.data.packing`) and 'tfds' (a dataset prepared by
`tfds_builder.PhenoKGFolder`) are the paths a 520K-pair dataset takes: nothing is loaded up front, every
split is a `LazySplit` read by random access through `grain.MapDataset.source`. Their records were
validated when they were written; the report stored then (packing.json / the tfds metadata) is printed,
the split's HPO ids are checked against the run's ontology and records over `data.max_hpo` are counted,
all without reading a shard.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import grain
import tensorflow_datasets as tfds

from phenolip_jax import config_lib
from phenolip_jax.data import paths
from phenolip_jax.data.packing import PackedSource, read_packing_info
from phenolip_jax.data.step_format import check_stored_tokens
from phenolip_jax.data.records import Record, ValidationReport
from phenolip_jax.data.tfds_builder import ExampleSource

SOURCES = config_lib.DATA_SOURCES
LAZY_SOURCES = ("arrayrecord", "tfds")
# The config.data fields each source needs (non-empty); paths among them must exist.
REQUIRED = {"demo": (), "jsonl": ("manifest",), "arrayrecord": ("packed_dir",), "tfds": ("tfds_dir", "tfds_name")}
PATH_FIELDS = ("manifest", "image_root", "test_csv", "packed_dir", "tfds_dir")


def validate_source(data_cfg: Any) -> None:
    """Checks `config.data.source` and the fields it needs; raises ValueError naming the field."""
    source = data_cfg.source
    hint = f". {data_cfg.howto}" if data_cfg.get("howto") else ""  # a variant's own setup steps
    if source not in SOURCES:
        raise ValueError(f"config.data.source={source!r}: use one of {', '.join(SOURCES)}")
    for field in REQUIRED[source]:
        if not data_cfg.get(field):
            raise ValueError(f"config.data.{field} is empty (config.data.source={source!r} needs it){hint}")
    if source in LAZY_SOURCES and data_cfg.get("test_csv"):
        raise ValueError(f"config.data.test_csv is read with config.data.source 'demo' or 'jsonl' only, not "
                         f"{source!r}: pack the held-out pairs as the 'test' split instead")
    for field in PATH_FIELDS:
        value = data_cfg.get(field)
        if not value:
            continue
        try:  # through epath: a gs:// URL is asked of its bucket, never mangled by os.path
            found = paths.exists(value)
        except Exception as e:  # a missing fsspec backend or credentials: say which field needed them
            raise ValueError(f"config.data.{field}={value!r} cannot be read: {type(e).__name__}: {e}") from None
        if not found:
            raise ValueError(f"config.data.{field}={value!r} does not exist{hint}")


@dataclasses.dataclass(frozen=True)
class Row:
    """The fields of a lazily read pair that code written for Records reads (HPO ids, caption, image id)."""

    hpo_ids: tuple[str, ...]
    caption: str
    image_id: int


class LazySplit(grain.sources.RandomAccessDataSource):
    """One split read by random access (packed shards or a tfds data source), with its HPO summary.

    Indexing yields pipeline examples (what `grain.MapDataset.source` reads). Iterating yields `Row`s, as a
    list of Records would, by reading every example once (meant for held-out splits; cached). `terms` and
    `hpo_counts` come from the metadata written with the data, so the train split is never scanned.
    """

    def __init__(self, source: grain.sources.RandomAccessDataSource, terms: Sequence[str],
                 hpo_counts: Mapping[str, int], where: str):
        self.source, self.terms, self.where = source, tuple(terms), where
        self.hpo_counts = {int(k): int(v) for k, v in hpo_counts.items()}
        self._rows: list[Row] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[index]

    def __iter__(self) -> Iterator[Row]:
        if self._rows is None:
            self._rows = [Row(tuple(ex["hpo_ids"]), ex["caption"], int(ex["image_id"]))
                          for ex in (self.source[i] for i in range(len(self.source)))]
        return iter(self._rows)

    def __repr__(self) -> str:
        return f"LazySplit({self.where}, {len(self)} pairs, {len(self.terms)} HPO ids)"


def split_terms(split: Sequence[Record] | LazySplit) -> list[str]:
    """The sorted HPO ids a split uses (from the metadata for a LazySplit, without reading it)."""
    if isinstance(split, LazySplit):
        return sorted(split.terms)
    return sorted({h for r in split for h in r.hpo_ids})


def _summary(source: grain.sources.RandomAccessDataSource) -> dict[str, Any]:
    """terms / hpo_counts by reading every example (for tfds datasets prepared without the metadata)."""
    rows = [tuple(source[i]["hpo_ids"]) for i in range(len(source))]
    return {"terms": sorted({h for r in rows for h in r}),
            "hpo_counts": dict(collections.Counter(str(len(r)) for r in rows))}


def _report(stored: Mapping[str, Any] | None) -> ValidationReport:
    """The validation report stored when the data were written, as a ValidationReport."""
    report = ValidationReport()
    if stored:
        report.total, report.kept = int(stored.get("total", 0)), int(stored.get("kept", 0))
        report.counts.update(stored.get("counts", {}))
        report.examples = {k: list(v) for k, v in stored.get("examples", {}).items()}
    return report


def _packed_splits(directory: str, tokenizer: Any = None,
                   max_len: int = 0) -> tuple[dict[str, LazySplit], ValidationReport]:
    info = read_packing_info(directory)
    # Stored caption ids are used only by a run whose tokenizer and max_len made them (else a UserError).
    stored = tokenizer is not None and check_stored_tokens(info, directory, tokenizer, max_len) is not None
    splits = {}
    for name, s in info["splits"].items():
        source = PackedSource(directory, name, info, stored_ids=stored)
        summary = s if "terms" in s else _summary(source)  # format 1 folders lack the summary
        splits[name] = LazySplit(source, summary["terms"], summary["hpo_counts"], f"{directory} [{name}]")
    return splits, _report(info.get("validation"))


def use_stored_teacher_ids(split: Any, tokenizer: Any, max_len: int) -> bool:
    """Makes a packed split hand over the teacher's stored ids when they fit `tokenizer` and `max_len` (a
    UserError naming the mismatch when they do not); False when the split stores none or is not packed."""
    source = getattr(split, "source", None)
    if not isinstance(source, PackedSource):
        return False
    if check_stored_tokens(source.info, source.directory, tokenizer, max_len, kind="teacher_tokens") is None:
        return False
    source.stored_teacher_ids = True
    return True


def _tfds_splits(data_dir: str, name: str) -> tuple[dict[str, LazySplit], ValidationReport]:
    builder = tfds.builder(name, data_dir=data_dir)
    meta = dict(builder.info.metadata or {})
    splits = {}
    for split in builder.info.splits:
        source = ExampleSource(tfds.data_source(name, data_dir=data_dir, split=split))
        summary = meta.get("splits", {}).get(split) or _summary(source)
        splits[split] = LazySplit(source, summary["terms"], summary["hpo_counts"], f"{data_dir} {name} [{split}]")
    return splits, _report(meta.get("validation"))


def read_lazy_splits(source: str, *, packed_dir: str = "", tfds_dir: str = "", tfds_name: str = "phenokg_folder",
                     tokenizer: Any = None, max_len: int = 0) -> tuple[dict[str, LazySplit], ValidationReport]:
    """Every split of packed shards (source 'arrayrecord') or of a tfds dataset ('tfds'), and the stored report.
    With `tokenizer`, packed caption ids stored for it and `max_len` are handed to the pipeline."""
    if source == "arrayrecord":
        return _packed_splits(packed_dir, tokenizer, max_len)
    if source == "tfds":
        return _tfds_splits(tfds_dir, tfds_name)
    raise ValueError(f"source {source!r} is not one of {LAZY_SOURCES}")


def check_lazy_splits(splits: Mapping[str, LazySplit], report: ValidationReport, ontology: Any,
                      max_hpo: int | None = None) -> None:
    """Checks every split's HPO ids against the ontology; counts records over `max_hpo` ids into `report`.

    An HPO id the run's ontology does not know (the data were written with another hp.obo) is an
    error naming it; records with more than `max_hpo` ids are counted as 'hpo_truncated' (kept, the
    pipeline keeps their first max_hpo ids), as validate_records counts them for a manifest.
    """
    for split in splits.values():
        unknown = []
        for h in split.terms:
            try:
                ontology.index(h)
            except KeyError:
                unknown.append(h)
        if unknown:
            raise ValueError(f"{split.where}: {len(unknown)} HPO ids unknown to the run's ontology "
                             f"(e.g. {', '.join(unknown[:5])}): write the data again with the hp.obo of "
                             "config.ontology.obo_path")
        over = sum(n for k, n in split.hpo_counts.items() if max_hpo is not None and k > max_hpo)
        if over:
            report.add("hpo_truncated", split.where, f"{over} records with > max_hpo={max_hpo} ids")
            report.counts["hpo_truncated"] += over - 1  # add() counted one


def load_lazy_splits(data_cfg: Any, ontology: Any,
                     tokenizer: Any = None) -> tuple[dict[str, LazySplit], ValidationReport]:
    """Stage 2's splits of an 'arrayrecord' or 'tfds' `config.data`, checked against the ontology (and packed
    token ids against `tokenizer` and data_cfg.max_len)."""
    splits, report = read_lazy_splits(data_cfg.source, packed_dir=data_cfg.packed_dir,
                                      tfds_dir=data_cfg.tfds_dir, tfds_name=data_cfg.tfds_name,
                                      tokenizer=tokenizer, max_len=int(data_cfg.max_len))
    check_lazy_splits(splits, report, ontology, data_cfg.max_hpo)
    if "train" not in splits:
        raise ValueError(f"config.data.source={data_cfg.source!r}: no 'train' split (have {sorted(splits)})")
    return splits, report
