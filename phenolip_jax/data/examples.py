"""A batch of source indices -> the step's batch: read, decode + crop, tokenise, HPO arrays, stacked.

The pipelines (data/pipeline.py) shuffle, shard and batch *indices*; `ExampleBatch` then does every
per-example step for a whole batch in one grain map. Per-example grain layers cost ~10 µs each (stats,
dict copies, tree walks); in one loop the pipeline runs near the speed of its decoder (benchmarks/input_pipeline.py
--packed). A train crop's randomness is keyed by the example's position in the global shuffled stream, so
crops do not depend on the process count.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import grain
import numpy as np
from PIL import Image

from phenolip_jax.data import containers, images
from phenolip_jax.data.records import Record, assign_ids, resolve_image_path
from phenolip_jax.data.tokenize import Tokenize
from phenolip_jax.ontology import organ_table, sized_ancestor_table


class RecordSource(grain.sources.RandomAccessDataSource):
    """Random access over validated records: reads the image file's bytes on demand."""

    def __init__(self, records: Sequence[Record], image_root: str | os.PathLike | None):
        self.records = list(records)
        self.image_root = None if image_root is None else os.fspath(image_root)
        self.image_ids, self.caption_ids, self.image_keys, self.captions = assign_ids(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        # Absolute paths reach here only through validate_records' allow_absolute: the gate is there.
        data = containers.read_image_bytes(resolve_image_path(rec.image, self.image_root, allow_absolute=True))
        return {"image": data, "caption": rec.caption, "hpo_ids": rec.hpo_ids,
                "image_id": self.image_ids[index], "caption_id": self.caption_ids[index]}


class IndexBatches(grain.MapDataset):
    """Batch k of one process's strided slice of a stream of source indices, as {'index': [B], 'position': [B]}.

    Process `pi` of `pc` takes stream positions pi, pi + pc, ... (as `stream[pi::pc].batch(B, drop_remainder=True)`
    would); `position` is the place in the global stream, which seeds the example's crop. The indices are read
    with one `_getitems` call, so the stream's layers cost a list comprehension per example, not a grain layer each.
    """

    _MUTATES_ELEMENT_SPEC = True

    def __init__(self, stream: grain.MapDataset, process_index: int, process_count: int, batch_size: int):
        super().__init__(stream)
        self._pi, self._pc, self._b = int(process_index), int(process_count), int(batch_size)
        self._length = ((len(stream) - self._pi + self._pc - 1) // self._pc) // self._b

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"IndexBatches(process={self._pi}/{self._pc}, batch={self._b})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        positions = self._pi + self._pc * (index * self._b + np.arange(self._b, dtype=np.int64))
        indices = self._parent._getitems([int(p) for p in positions])  # pylint: disable=protected-access
        return {"index": np.asarray(indices, np.int64), "position": positions}


class HpoEncoder:
    """HPO ids -> fixed-width index arrays, from per-term tables precomputed once (cheap to pickle)."""

    def __init__(self, ontology, max_hpo: int, max_ancestors: int, max_hops: int, max_organs: int,
                 strict: bool = False):
        all_terms = np.arange(len(ontology.ids), dtype=np.int32)
        self.anc, self.hops = sized_ancestor_table(ontology, all_terms, max_hops, max_ancestors, strict=strict)
        self.organ = organ_table(ontology, all_terms)
        # Validated records hold current ids; alt ids are accepted too so an unvalidated source
        # with old annotations still works. Anything else fails loudly below.
        self.lookup = {h: i for i, h in enumerate(ontology.ids)}
        self.lookup.update(getattr(ontology, "aliases", {}))
        self.max_hpo, self.max_organs = max_hpo, max_organs

    def __call__(self, hpo_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """`hpo` [M], `hpo_anc` [M,A], `hpo_hops` [M,A], `organs` [O]; -1 padded int32."""
        return {k: v[0] for k, v in self.batch([hpo_ids]).items()}

    def batch(self, id_lists: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Per example's ids: `hpo` [B,M], `hpo_anc` / `hpo_hops` [B,M,A], `organs` [B,O]; -1 padded int32."""
        hpo = np.full((len(id_lists), self.max_hpo), -1, np.int32)
        try:
            for row, ids in enumerate(id_lists):
                idx = [self.lookup[h] for h in list(ids)[: self.max_hpo]]
                hpo[row, : len(idx)] = idx
        except KeyError as e:
            raise KeyError(f"HPO id {e} not in the ontology; run validate_records first") from None
        known = hpo >= 0
        safe = np.where(known, hpo, 0)
        anc = np.where(known[..., None], self.anc[safe], -1).astype(np.int32)
        hops = np.where(known[..., None], self.hops[safe], -1).astype(np.int32)
        organ_of = self.organ[safe].reshape(len(id_lists), self.max_hpo, -1)  # [B,M,K]: a term may sit in several
        organ_of = np.where(known[..., None], organ_of, -1).reshape(len(id_lists), -1)
        organs = np.full((len(id_lists), self.max_organs), -1, np.int32)
        for row, found in enumerate(organ_of):
            found = np.unique(found[found >= 0])[: self.max_organs]
            organs[row, : len(found)] = found
        return {"hpo": hpo, "hpo_anc": anc, "hpo_hops": hops, "organs": organs}


def decode(image: Any) -> np.ndarray:
    """Encoded bytes (or a tfds source's decoded array) -> uint8 RGB [H,W,3]."""
    if isinstance(image, np.ndarray):  # tfds data sources hand over decoded arrays
        if image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8:
            return image
        return images.to_rgb(Image.fromarray(np.squeeze(image)))[0]
    return images.decode_rgb_fast(bytes(image))  # every record was fully decoded by validation already


@dataclasses.dataclass(frozen=True)
class TrainCrop:
    """Random resized crop (+ optional flip) of a train view, seeded per stream position by `seed`."""

    scale: tuple[float, float]
    hflip: bool
    seed: int


def _position_rng(rng: np.random.Generator, position: int) -> np.random.Generator:
    # Philox counter = (0, 0, 0, position): the stream grain's random_map gives element `position`, so crops
    # are those of the former per-example pipeline (and of any process count).
    state = rng.bit_generator.state
    state["state"]["counter"] = np.array([0, 0, 0, position], dtype=np.uint64)
    state["buffer"], state["buffer_pos"] = np.zeros(4, np.uint64), 4
    state["has_uint32"], state["uinteger"] = 0, 0
    rng.bit_generator.state = state
    return rng


@dataclasses.dataclass
class ExampleBatch(grain.transforms.Map):
    """{'index': [B], 'position': [B]} -> the step's batch (keys: `pipeline.make_train_iterator`).

    `crop`: train views (TrainCrop); None: eval views (shorter side + centre crop), where an index past the
    source's end pads with example 0, `valid` False and image_id = caption_id = -1. `teacher`: a
    `teacher_inputs.TeacherInputs` adding the teacher's ids or cached embedding.
    """

    source: Any
    image_size: int
    tokenize: Tokenize
    hpo: HpoEncoder
    crop: TrainCrop | None = None
    teacher: Any = None

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices = np.asarray(batch["index"])
        valid = indices < len(self.source)
        examples = [self.source[int(i) if v else 0] for i, v in zip(indices, valid)]
        size = self.image_size
        out_images = np.empty((len(examples), size, size, 3), np.uint8)
        # One generator per batch: read threads map batches concurrently.
        rng = None if self.crop is None else np.random.Generator(np.random.Philox(self.crop.seed))
        for row, ex in enumerate(examples):
            rgb = decode(ex["image"])
            if self.crop is None:
                out_images[row] = images.eval_view(rgb, size)
            else:
                rng = _position_rng(rng, int(batch["position"][row]))
                out_images[row] = images.train_view(rgb, size, rng, self.crop.scale, self.crop.hflip)
        captions = [ex["caption"] for ex in examples]
        out = {"image": out_images}
        if self.teacher is not None:
            out.update(self.teacher.batch(captions, [ex.get("stored_teacher_ids") for ex in examples]))
        out["input_ids"], out["attention_mask"] = self.tokenize.batch(
            captions, [ex.get("stored_ids") for ex in examples])
        out.update(self.hpo.batch([ex["hpo_ids"] for ex in examples]))
        out["image_id"] = np.asarray([ex["image_id"] for ex in examples], np.int32)
        out["caption_id"] = np.asarray([ex["caption_id"] for ex in examples], np.int32)
        if self.crop is None:
            out["valid"] = valid
            out["image_id"][~valid] = out["caption_id"][~valid] = -1
        return out
