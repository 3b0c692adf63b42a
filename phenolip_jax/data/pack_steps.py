"""The packer cut into steps that an engine spreads over workers (data/beam_packing.py runs them on Apache Beam;
`InProcess` runs them in this process), writing the same records as `packing.pack_input`.

1. `read_step`, per input file: the reader's events in reader order: every record it yields, every sample it
   counts as unreadable. Cheap: metadata only, images stay where they are.
2. `probe_step`, per record: what validation would decode: the image (missing / corrupt / converted) and the
   caption's token count. This is the costly part of validation, and it depends on the record alone.
3. `validate` and the shard plan, on the driver: the events replayed file by file in input order through
   `records.validate_records`, the workers' probes standing in for its decodes. Duplicates, the report (its
   examples included), `strict`, the ids by first appearance per split (`records.assign_ids`) and the shard
   layout are then exactly the one-process packer's, because they are computed by its code, in its order.
4. `write_step`, per output shard: images read, shrunk, turned into the step format and written with
   ArrayRecordWriter (`packing.pack_entry`, the one-process packer's own function).

Steps hand over through small files in a work folder (`{output}/_pack_work`, removed at the end): events, probes
and shard plans are metadata (about a kilobyte a record); image bytes are read only by steps 2 and 4.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator, Protocol, Sequence

from array_record.python.array_record_module import ArrayRecordWriter

from phenolip_jax.data import formats, packing, paths
from phenolip_jax.data.formats import common
from phenolip_jax.data.records import (ImageProbe, Record, UnsafePathError, ValidationReport, assign_ids, probe_image,
                                       resolve_image_path, validate_records)
from phenolip_jax.data.step_format import StepFormat
from phenolip_jax.data.tokenize import count_tokens

WORK = "_pack_work"


@dataclasses.dataclass(frozen=True)
class ReadJob:
    """What steps 1-2 need on a worker (pickled into the engine's transforms)."""

    fmt: str
    files: tuple[str, ...]
    root: str
    options: formats.ReadOptions
    allow_absolute: bool
    tokenizer: Any  # counts caption tokens when set (validation's `truncated`)
    work: str


@dataclasses.dataclass(frozen=True)
class WriteJob:
    """What step 4 needs on a worker."""

    names: tuple[str, ...]
    work: str
    output: str
    root: str  # what the plan's image paths are relative to (validated: inside it, or absolute where allowed)
    max_side: int
    step: StepFormat


class Engine(Protocol):
    """Runs steps 1-2 for every input file and step 4 for every shard, anywhere, in any order."""

    def read(self, job: ReadJob) -> None:
        """Writes `events_path(work, i)` and `probes_path(work, i)` for every file i of the job."""

    def write(self, job: WriteJob) -> None:
        """Writes every shard the job names."""


def events_path(work: str, i: int) -> str:
    """Where step 1 leaves input file i's events."""
    return paths.join(work, "events", f"{i:06d}.jsonl")


def probes_path(work: str, i: int) -> str:
    """Where step 2 leaves the probes of input file i's records."""
    return paths.join(work, "probes", f"{i:06d}.jsonl")


def plan_path(work: str, name: str) -> str:
    """Where the driver leaves a shard's plan: one [metadata, record image path] row per entry, in shard order."""
    return paths.join(work, "plan", f"{name}.jsonl")


def write_rows(path: str, rows: Iterable[Any]) -> None:
    """JSON rows, one a line (ASCII: a stray surrogate in a caption survives the trip)."""
    paths.as_path(path).parent.mkdir(parents=True, exist_ok=True)
    with paths.open_binary(path, "wb") as f:
        for row in rows:
            f.write(json.dumps(row).encode("ascii") + b"\n")


def read_rows(path: str) -> Iterator[Any]:
    """The rows `write_rows` wrote; none when the file is absent (a file that gave no record has no probes)."""
    if not paths.exists(path):
        return
    with paths.open_binary(path) as f:
        for line in f:
            yield json.loads(line)


@dataclasses.dataclass
class _Recorder(ValidationReport):
    """A report that keeps each count a reader makes as an event ("skip", where, reason, detail), in order."""

    events: list = dataclasses.field(default_factory=list)

    def add(self, reason: str, where: str, detail: str = "") -> None:
        self.events.append(["skip", where, reason, detail])


def read_step(i: int, job: ReadJob) -> list[tuple[int, int, str | None, str | None]]:
    """Step 1 for input file i: writes its events; returns (i, event index, image path to probe or None, caption to
    count or None) per record. Events: ["record", fields], ["skip", where, reason, detail], ["error", message]."""
    recorder, events = _Recorder(), []
    try:
        for rec in formats.iter_records(job.fmt, [job.files[i]], job.root, job.options, recorder):
            events += recorder.events + [["record", dataclasses.asdict(rec)]]
            recorder.events = []
    except common.FormatError as e:  # the one-process packer stops here with this error: so will the driver
        events += recorder.events + [["error", str(e)]]
    else:
        events += recorder.events
    # Readers count a sample as `total += 1; add(reason)`: the replay does the same, so the totals must agree.
    assert recorder.total == sum(e[0] == "skip" for e in events), f"{job.files[i]}: a reader counted off the events"
    write_rows(events_path(job.work, i), events)
    return [(i, j, *_targets(Record(**e[1]), job)) for j, e in enumerate(events) if e[0] == "record"]


def _targets(rec: Record, job: ReadJob) -> tuple[str | None, str | None]:
    """(the image path validation would check, the caption it would count) of a record; None where it would not."""
    try:
        path = resolve_image_path(rec.image, job.root, job.allow_absolute)
    except UnsafePathError:  # dropped as unsafe_path before any decode
        path = None
    caption = rec.caption.strip() if job.tokenizer is not None else ""
    return path, caption or None


def probe_step(target: tuple[int, int, str | None, str | None], job: ReadJob) -> tuple[int, list]:
    """Step 2 for one record: (file index, [event index, path, drop reason, detail, converted from, tokens])."""
    i, j, path, caption = target
    found = list(probe_image(path)) if path is not None else [None, "", None]
    return i, [j, path, *found, count_tokens(job.tokenizer, caption) if caption is not None else None]


def write_probes(group: tuple[int, Iterable[list]], job: ReadJob) -> None:
    """Step 2's results for one file (its index, its probes), in event order."""
    i, rows = group
    write_rows(probes_path(job.work, i), sorted(rows, key=lambda r: r[0]))


class _Found:
    """The workers' probes of the file being replayed; a miss (a path that resolved otherwise there) is checked
    here, with the same result."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.images, self.tokens, self.misses = tokenizer, {}, {}, 0

    def load(self, events: list, rows: Iterable[list]) -> None:
        self.images, self.tokens = {}, {}
        for j, path, reason, detail, converted, n in rows:
            if path is not None:
                self.images[path] = (reason, detail, converted)
            if n is not None:
                self.tokens[events[j][1]["caption"].strip()] = n

    def image(self, path: str) -> ImageProbe:
        found = self.images.get(path)
        self.misses += found is None
        return found if found is not None else probe_image(path)

    def count(self, caption: str) -> int:
        n = self.tokens.get(caption)
        self.misses += n is None
        return n if n is not None else count_tokens(self.tokenizer, caption)


def _replay(job: ReadJob, found: _Found, report: ValidationReport, strict: bool) -> Iterator[Record]:
    """The records of every file in input order, with the readers' counts put into `report` where they fell."""
    for i in range(len(job.files)):
        events = list(read_rows(events_path(job.work, i)))
        found.load(events, read_rows(probes_path(job.work, i)))
        for kind, *rest in events:
            if kind == "record":
                # One copy of the strings every record of a file repeats: the driver holds every kept record.
                yield Record(**{**rest[0], **{k: sys.intern(rest[0][k]) for k in ("origin", "split", "source")}})
            elif kind == "skip":
                common.count_unreadable(report, strict, *rest)
            else:
                raise common.FormatError(rest[0])


def validate(job: ReadJob, ontology, *, strict: bool = False, max_len: int = 256, max_hpo: int | None = None
             ) -> tuple[list[Record], ValidationReport]:
    """Step 3 (driver): the kept records and the report, as `formats.read_and_validate_input` gives them."""
    report, found = ValidationReport(), _Found(job.tokenizer)
    kept, report = validate_records(
        _replay(job, found, report, strict), ontology, job.root, strict=strict, report=report, tokenizer=job.tokenizer,
        max_len=max_len, max_hpo=max_hpo, allow_absolute=job.allow_absolute, image_probe=found.image,
        token_count=found.count)
    if found.misses:  # same results, but the work the workers were for was done here
        _say(f"{found.misses} image checks / token counts done on the driver: the workers' probes missed them")
    return kept, report


def plan_shards(kept: Sequence[Record], num_shards: int, work: str) -> dict[str, Any]:
    """Step 3 (driver): writes each shard's plan (ids and layout of `packing.pack_records`); the per-split summary."""
    splits: dict[str, list[Record]] = {}
    for r in kept:
        splits.setdefault(r.split, []).append(r)
    summary = {}
    for split, recs in sorted(splits.items()):
        image_ids, caption_ids, _, _ = assign_ids(recs)
        layout = packing.shard_layout(split, len(recs), num_shards)
        for name, first, end in layout:
            rows = ([packing.entry_meta(recs[j], image_ids[j], caption_ids[j]), recs[j].image]
                    for j in range(first, end))
            write_rows(plan_path(work, name), rows)
        summary[split] = {"num_examples": len(recs), "shards": [n for n, _, _ in layout], **packing.hpo_summary(recs)}
    return summary


def write_step(name: str, job: WriteJob) -> int:
    """Step 4 for one shard: its entries written (into a temporary file first: a retried worker never leaves half a
    shard; ArrayRecordWriter writes local files only, so a bucket gets a copy); returns the entry count."""
    dest = paths.join(job.output, name)
    local = tempfile.mkdtemp(prefix="pack-") if paths.is_url(dest) else job.output
    tmp = os.path.join(local, f".{name}.{os.getpid()}.tmp")
    writer, n = ArrayRecordWriter(tmp, "group_size:1"), 0  # group_size:1: cheap random access for grain
    for meta, image in read_rows(plan_path(job.work, name)):
        path = resolve_image_path(image, job.root, allow_absolute=True)  # validated: as packing.pack_records does
        writer.write(packing.pack_entry(meta, path, job.max_side, job.step))
        n += 1
    writer.close()
    if paths.is_url(dest):
        paths.as_path(tmp).copy(dest, overwrite=True)
        os.remove(tmp)
        os.rmdir(local)
    else:
        os.replace(tmp, dest)
    return n


class InProcess:
    """The steps run one after another in this process (tests; the reference the engines are held to)."""

    def read(self, job: ReadJob) -> None:
        for i in range(len(job.files)):
            write_probes((i, [probe_step(t, job)[1] for t in read_step(i, job)]), job)

    def write(self, job: WriteJob) -> None:
        for name in job.names:
            write_step(name, job)


def pack(engine: Engine, input: str, fmt: str, output: str, ontology, *,
         options: formats.ReadOptions = formats.ReadOptions(), num_shards: int = 1, tokenizer=None,
         max_len: int = 256, max_hpo: int | None = None, max_side: int = 0, strict: bool = False,
         allow_absolute: bool = False, step: StepFormat = StepFormat(), what: dict[str, str] | None = None
         ) -> dict[str, Any]:
    """`packing.pack_input` with steps 1-2 and 4 run by `engine`; writes and returns packing.json."""
    files, root = formats.list_inputs(input, fmt, options)
    work = paths.join(output, WORK)
    job = ReadJob(fmt, tuple(files), root, options, allow_absolute, tokenizer, work)
    start = time.perf_counter()
    engine.read(job)
    _say(f"read and probed {len(files)} file{'s' if len(files) != 1 else ''} ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    kept, report = validate(job, ontology, strict=strict, max_len=max_len, max_hpo=max_hpo)
    print(report, file=sys.stderr)
    summary = plan_shards(kept, num_shards, work)
    _say(f"validated and planned {len(kept)} records ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    names = tuple(n for s in summary.values() for n in s["shards"])
    engine.write(WriteJob(names, work, output, root, max_side, step))
    _say(f"wrote {len(names)} shards ({time.perf_counter() - start:.0f} s)")
    paths.as_path(work).rmtree()
    return packing.write_packing_info(output, what or {"input": input, "format": fmt}, summary, report, step)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
