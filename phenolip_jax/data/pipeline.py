"""Grain input pipelines: records -> shuffled, process-sharded, augmented, tokenised numpy batches.

Elements flowing between stages are "examples": dicts with `image` (encoded bytes or uint8
[H,W,3]), `caption` (str), `hpo_ids` (current HPO ids), `image_id` / `caption_id` (int). Any
random-access source yielding examples can feed the pipeline: `RecordSource` (manifest records),
`packing.PackedSource` (ArrayRecord shards), `tfds_builder.ExampleSource` (a tfds data_source).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import grain
import jax
import numpy as np

from phenolip_jax.data import images
from phenolip_jax.data.examples import ExampleBatch, HpoEncoder, IndexBatches, RecordSource, TrainCrop
from phenolip_jax.data.length_groups import LengthGroupedMapDataset
from phenolip_jax.data.records import Record
from phenolip_jax.data.tokenize import Tokenize

# Every field the pipelines read, with its default. A config may set any subset; unknown keys fail.
DATA_DEFAULTS: dict[str, Any] = dict(
    image_size=224,  # square side of the model input, pixels
    mean=images.CLIP_MEAN,  # per-channel normalisation mean (of x/255), applied on the device (model_input)
    std=images.CLIP_STD,  # per-channel normalisation std, applied on the device
    crop_scale=(0.9, 1.0),  # RandomResizedCrop area fraction range (train only)
    hflip=False,  # random horizontal flip (train only); off: laterality matters in medical images
    max_len=256,  # caption context length L in tokens (longer captions are truncated)
    length_buckets=(),  # static caption lengths below max_len (ascending); each train batch is padded to the
    # smallest of these (or max_len) holding its global batch's longest caption; () = every batch at max_len
    length_group_window=0,  # W > 0: sort each window of W global batches by caption length so a batch holds
    # captions of similar length (length-correlated negatives; needs length_buckets); 0 = off
    max_hpo=8,  # M: HPO ids per record, -1 padded
    max_ancestors=0,  # A: ancestors-or-self per HPO id, -1 padded; 0 = sized from the ontology and max_hops
    max_hops=3,  # ancestors farther than this many is-a hops are left out of hpo_anc
    max_organs=23,  # O: organ systems per record (HPO has 23, so nothing is cut by default)
    per_host_batch_size=32,  # B: examples per host per step
    workers=0,  # grain worker processes (0 = decode in the main process)
    prefetch=2,  # batches buffered per worker (workers > 0) / per read thread (workers = 0)
    read_threads=2,  # threads decoding in-process when workers = 0
    shuffle_seed=None,  # global shuffle seed; None = the `seed` argument
    strict=False,  # True: an ancestor table cut by max_ancestors is an error (else a warning with the count)
)


def resolve_config(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    """DATA_DEFAULTS overridden by cfg (dict or ConfigDict); rejects unknown keys and bad values."""
    given = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    unknown = set(given) - set(DATA_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown data config fields {sorted(unknown)}; known: {sorted(DATA_DEFAULTS)}")
    out = {**DATA_DEFAULTS, **given}
    for key in ("image_size", "max_len", "max_hpo", "max_organs", "per_host_batch_size"):
        if int(out[key]) <= 0:
            raise ValueError(f"data config {key} must be positive, got {out[key]}")
    if int(out["max_ancestors"]) < 0:
        raise ValueError(f"data config max_ancestors must be >= 0 (0 = sized from the ontology), got {out['max_ancestors']}")
    out["length_buckets"] = check_buckets(out["length_buckets"], int(out["max_len"]))
    out["length_group_window"] = int(out["length_group_window"])
    if out["length_group_window"] < 0 or (out["length_group_window"] and not out["length_buckets"]):
        raise ValueError(f"data.length_group_window={out['length_group_window']} must be >= 0, and > 0 only with "
                         f"data.length_buckets set (grouping by length only pays through the buckets)")
    lo, hi = out["crop_scale"]
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {out['crop_scale']}")
    if len(out["mean"]) != 3 or len(out["std"]) != 3 or min(out["std"]) <= 0:
        raise ValueError("mean and std need 3 entries, std positive")
    return out


def check_buckets(buckets: Sequence[int], max_len: int) -> tuple[int, ...]:
    """Validated `length_buckets`: positive, strictly ascending, none above max_len."""
    out = tuple(int(b) for b in buckets)
    if any(b <= 0 for b in out) or list(out) != sorted(set(out)) or (out and out[-1] > max_len):
        raise ValueError(f"data config length_buckets={tuple(buckets)} must be positive, strictly ascending and "
                         f"<= max_len={max_len} (() = every batch at max_len)")
    return out


def bucket_of(length: int, buckets: Sequence[int], max_len: int) -> int:
    """The smallest bucket (or max_len) holding `length` tokens."""
    return next((b for b in buckets if b >= length), max_len)


def source_captions(source) -> list[str]:
    """Every caption of a source in index order (a lazy source is read once, images included)."""
    if isinstance(source, RecordSource):
        return [r.caption for r in source.records]
    return [source[i]["caption"] for i in range(len(source))]


def caption_lengths(captions: Sequence[str], tokenizer, max_len: int) -> np.ndarray:
    """Token counts (special tokens included) of captions, capped at max_len: int32 [N]."""
    enc = tokenizer(list(captions), add_special_tokens=True, truncation=True, max_length=max_len)
    return np.asarray([len(ids) for ids in enc["input_ids"]], np.int32)


@dataclasses.dataclass
class TrimToBucket(grain.transforms.MapWithIndex):
    """Cuts a host batch's caption arrays to its global batch's bucket length (trailing pad columns only).

    Global batch k is positions [k*G, (k+1)*G) of the shuffled stream (every process takes a strided slice of
    it), so `lengths[k]`, the caption lengths of that global batch, gives every process the same bucket.
    """

    lengths: Any  # grain.MapDataset of int32 [G]: global batch k's caption lengths
    buckets: tuple[int, ...]
    max_len: int
    keys: tuple[str, ...] = ("input_ids", "attention_mask")

    def map_with_index(self, index: int, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        length = bucket_of(int(np.max(self.lengths[index])), self.buckets, self.max_len)
        return {k: (v[:, :length] if k in self.keys else v) for k, v in batch.items()}


def as_source(records, image_root=None):
    """A list of Records becomes a RecordSource; anything else must already yield examples."""
    if isinstance(records, (list, tuple)) and (not records or isinstance(records[0], Record)):
        return RecordSource(records, image_root)
    return records


def _process_shard(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def _to_iter(ds: grain.MapDataset, cfg: dict[str, Any]) -> grain.IterDataset:
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, cfg["read_threads"]),
                                              prefetch_buffer_size=max(1, cfg["prefetch"])))
    if cfg["workers"] > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg["workers"], per_worker_buffer_size=max(1, cfg["prefetch"])))
    return it


def make_train_dataset(cfg_data, records, tokenizer, ontology, seed: int, *, image_root=None,
                       process_index: int | None = None, process_count: int | None = None,
                       num_epochs: int | None = None, teacher: Any = None) -> grain.IterDataset:
    """Infinite (or num_epochs) per-host train batches; see `make_train_iterator`.

    `teacher`: a `teacher_inputs.TeacherInputs` adding the teacher's own ids or cached embedding per caption.
    """
    cfg = resolve_config(cfg_data)
    pi, pc = _process_shard(process_index, process_count)
    shuffle_seed = seed if cfg["shuffle_seed"] is None else cfg["shuffle_seed"]
    source = as_source(records, image_root)
    # Indices are shuffled, sharded and batched; ExampleBatch then reads and prepares a whole batch in one map.
    ds = grain.MapDataset.range(len(source))
    # Global shuffle, reshuffled every epoch (the shuffle seed advances per epoch inside repeat),
    # then every process takes its strided slice, so processes never see the same example.
    ds = ds.shuffle(seed=shuffle_seed).repeat(num_epochs)
    global_batch = cfg["per_host_batch_size"] * pc
    if cfg["length_buckets"]:
        # The caption lengths, shuffled and repeated with the same seed as the examples, give each global batch's
        # lengths from its index alone, so every process picks the same bucket without seeing the others' captions.
        lengths = caption_lengths(source_captions(source), tokenizer, cfg["max_len"])
        lengths = grain.MapDataset.source(lengths).shuffle(seed=shuffle_seed).repeat(num_epochs)
        if cfg["length_group_window"]:
            # The same reordering for examples and lengths keeps them aligned (length_groups.py).
            group = dict(window=cfg["length_group_window"], group=global_batch, seed=shuffle_seed)
            ds = LengthGroupedMapDataset(ds, lengths, **group)
            lengths = LengthGroupedMapDataset(lengths, lengths, **group)
    # The position in the global stream (before the process slice) seeds the example's crop, so a record's crop is
    # the same for any process count.
    ds = IndexBatches(ds, pi, pc, cfg["per_host_batch_size"])
    ds = ds.map(ExampleBatch(source, cfg["image_size"], Tokenize(tokenizer, cfg["max_len"]), _hpo_encoder(ontology, cfg),
                             TrainCrop(tuple(cfg["crop_scale"]), bool(cfg["hflip"]), seed + 1), teacher))
    if cfg["length_buckets"]:
        # Pad each batch to the bucket of its longest caption. Without length_group_window the batches, their
        # negatives and the resume position stay exactly those without buckets.
        ds = ds.map_with_index(TrimToBucket(lengths.batch(global_batch, drop_remainder=True),
                                            cfg["length_buckets"], cfg["max_len"]))
    return _to_iter(ds, cfg)


def _hpo_encoder(ontology, cfg: dict[str, Any]) -> HpoEncoder:
    return HpoEncoder(ontology, cfg["max_hpo"], cfg["max_ancestors"], cfg["max_hops"], cfg["max_organs"], cfg["strict"])


def make_train_iterator(cfg_data, records, tokenizer, ontology, seed: int, **kwargs):
    """A checkpointable iterator of per-host train batches (`get_state()` / `set_state()`).

    Batch keys: image uint8 [B,H,W,3] (normalised on the device: `images.model_input`),
    input_ids / attention_mask i32 [B,L], hpo i32 [B,M],
    hpo_anc / hpo_hops i32 [B,M,A], organs i32 [B,O], image_id / caption_id i32 [B]; with `teacher=`
    also teacher_input_ids / teacher_attention_mask i32 [B,L'] (its own tokenizer) or teacher_emb f32 [B,D].
    `records`: validated Records (read with `image_root`) or a random-access source of examples.
    """
    return iter(make_train_dataset(cfg_data, records, tokenizer, ontology, seed, **kwargs))


def make_eval_batches(cfg_data, records, tokenizer, ontology, *, image_root=None,
                      process_index: int | None = None, process_count: int | None = None
                      ) -> grain.IterDataset:
    """Deterministic per-host eval batches in source order, every example exactly once.

    No shuffle, no drop: the example count is padded up to a multiple of
    process_count * per_host_batch_size, so every host yields the same number of full batches;
    padding rows repeat example 0 with `valid` False and image_id = caption_id = -1.
    """
    cfg = resolve_config(cfg_data)
    pi, pc = _process_shard(process_index, process_count)
    source = as_source(records, image_root)
    n, b = len(source), cfg["per_host_batch_size"]
    if n == 0:
        raise ValueError("make_eval_batches: no examples")
    total = -(-n // (pc * b)) * pc * b

    ds = grain.MapDataset.range(total)[pi::pc].map(_indexed_eval).batch(b, drop_remainder=False)
    ds = ds.map(ExampleBatch(source, cfg["image_size"], Tokenize(tokenizer, cfg["max_len"]), _hpo_encoder(ontology, cfg)))
    return _to_iter(ds, cfg)


def _indexed_eval(index: int) -> dict[str, int]:
    return {"index": index}
