"""Evaluation inputs: PhenoBench-style manifests, image-folder classification sets, MedMNIST .npz files."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

import numpy as np

from phenolip_jax.data import paths
from phenolip_jax.data.images import IMAGE_EXTENSIONS
from phenolip_jax.data.manifest import read_and_validate, read_manifest
from phenolip_jax.data.records import resolve_image_path
from phenolip_jax.data.tfds_builder import png_bytes

_HPO_ID = re.compile(r"^HP:\d{7}$")
MULTI_LABEL = "multi-label, binary-class"  # MedMNIST's task names
BINARY = "binary-class"
MULTI_CLASS = "multi-class"


@dataclasses.dataclass
class Split:
    """Images (paths or a uint8 array) and labels: int [N] or multi-hot [N, L]."""

    images: Any
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass
class ClassificationSet:
    """A labelled image set with one prompt text per class (and its HPO id when the class maps to one)."""

    name: str
    class_names: list[str]
    class_texts: list[str]
    class_hpo: list[str | None]
    splits: dict[str, Split]
    task: str = MULTI_CLASS  # MedMNIST task name: 'multi-class', 'binary-class', 'multi-label, binary-class'

    @property
    def multi_label(self) -> bool:
        """Whether labels are multi-hot."""
        return self.task == MULTI_LABEL


@dataclasses.dataclass
class PairSet:
    """Image-caption pairs (PhenoBench testdata.csv / JSONL manifest) with each pair's HPO ids."""

    image_paths: list[Any]  # per pair: a path resolved against the image root, or encoded bytes (lazy sources)
    image_ids: list[str]  # per pair; pairs sharing an id are one image with several captions
    captions: list[str]
    hpo_ids: list[tuple[str, ...]]
    splits: list[str]

    def select(self, split: str | None) -> "PairSet":
        """The pairs of one split (all pairs when `split` is None or no pair carries it)."""
        keep = [i for i, s in enumerate(self.splits) if s == split] if split else []
        if not keep:
            return self
        pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
        return PairSet(pick(self.image_paths), pick(self.image_ids), pick(self.captions), pick(self.hpo_ids),
                       pick(self.splits))

    def images(self) -> tuple[list[str], list[tuple[str, ...]]]:
        """Unique images (first-seen order) as paths, and the union of HPO ids of each image's pairs."""
        first: dict[str, int] = {}
        terms: dict[str, dict[str, None]] = {}
        for i, (iid, hpo) in enumerate(zip(self.image_ids, self.hpo_ids)):
            first.setdefault(iid, i)
            terms.setdefault(iid, {}).update(dict.fromkeys(hpo))
        return [self.image_paths[i] for i in first.values()], [tuple(terms[k]) for k in first]


def is_hpo_id(text: str) -> bool:
    """Whether `text` is an 'HP:NNNNNNN' id."""
    return bool(_HPO_ID.match(str(text).strip()))


def class_prompts(class_names: Sequence[str], class_map: dict[str, str] | None,
                  onto: Any = None) -> tuple[list[str], list[str | None]]:
    """(prompt text, HPO id or None) per class: the map's text, or the ontology name of the map's HPO id."""
    texts, hpo = [], []
    for c in class_names:
        value = (class_map or {}).get(c, str(c).replace("_", " "))
        if is_hpo_id(value):
            if onto is None:
                raise ValueError(f"class {c!r} maps to {value}: an ontology is needed to name it")
            texts.append(onto.names[onto.index(value.strip())])
            hpo.append(onto.ids[onto.index(value.strip())])
        else:
            texts.append(str(value))
            hpo.append(None)
    return texts, hpo


def read_class_map(path_or_map: Any) -> dict[str, str] | None:
    """A class -> text/HPO-id map from a dict, a list, a JSON file ({class: text} or [text, ...]) or ''/None."""
    if path_or_map is None or (isinstance(path_or_map, str) and not path_or_map):
        return None
    if isinstance(path_or_map, (dict, list, tuple)) or hasattr(path_or_map, "items"):
        obj = dict(path_or_map) if hasattr(path_or_map, "items") else list(path_or_map)
    else:
        with open(path_or_map) as f:
            obj = json.load(f)
    if isinstance(obj, dict) and "label" in obj and isinstance(obj["label"], dict):
        obj = obj["label"]  # medmnist INFO[flag] layout: {"label": {"0": "adipose", ...}, ...}
    if isinstance(obj, (list, tuple)):
        obj = {str(i): v for i, v in enumerate(obj)}
    return {str(k): str(v) for k, v in obj.items()}


def _folder_split(folder: str) -> tuple[list[str], list[str]]:
    """(sorted class folder names, [(path, class)]) of `folder/<class>/*.<image>`."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    items = []
    for c in classes:
        for f in sorted(os.listdir(os.path.join(folder, c))):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                items.append((os.path.join(folder, c, f), c))
    return classes, items


def load_image_folder(root: str, class_map: Any = None, onto: Any = None, name: str = "") -> ClassificationSet:
    """`root/<class>/*.png`, or `root/{train,val,test}/<class>/*.png` for a set with splits."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    split_dirs = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(root, s))]
    folders = {s: os.path.join(root, s) for s in split_dirs} if split_dirs else {"test": root}
    found = {s: _folder_split(f) for s, f in folders.items()}
    classes = sorted({c for cls, _ in found.values() for c in cls})
    if not classes:
        raise ValueError(f"no class folders under {root}")
    at = {c: i for i, c in enumerate(classes)}
    splits = {s: Split([p for p, _ in items], np.array([at[c] for _, c in items], np.int64))
              for s, (_, items) in found.items() if items}
    if not splits:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    texts, hpo = class_prompts(classes, read_class_map(class_map), onto)
    return ClassificationSet(name or os.path.basename(os.path.normpath(root)), classes, texts, hpo, splits,
                             BINARY if len(classes) == 2 else MULTI_CLASS)


def load_medmnist(npz_path: str, class_map: Any = None, onto: Any = None, task: str = "",
                  name: str = "") -> ClassificationSet:
    """A MedMNIST .npz (train/val/test _images, _labels); task inferred from the labels unless given."""
    data = np.load(npz_path)
    splits = {}
    for s in ("train", "val", "test"):
        if f"{s}_images" in data and f"{s}_labels" in data:
            images, labels = data[f"{s}_images"], np.asarray(data[f"{s}_labels"])
            if images.dtype != np.uint8:
                raise ValueError(f"{npz_path}: {s}_images must be uint8, got {images.dtype}")
            if len(images) != len(labels):
                raise ValueError(f"{npz_path}: {s} has {len(images)} images but {len(labels)} labels")
            splits[s] = Split(images, labels.reshape(len(labels), -1))
    if "test" not in splits:
        raise ValueError(f"{npz_path} has no test_images / test_labels")
    width = splits["test"].labels.shape[1]
    task = task or (MULTI_LABEL if width > 1 else "")
    cmap = read_class_map(class_map)
    if task == MULTI_LABEL:
        n_classes = width
    else:
        for s in splits.values():
            s.labels = s.labels[:, 0].astype(np.int64)
        n_classes = max(int(s.labels.max()) for s in splits.values()) + 1
        n_classes = max(n_classes, len(cmap or {}))
        task = task or (BINARY if n_classes == 2 else MULTI_CLASS)
    class_names = [str(i) for i in range(n_classes)]
    if cmap is None:
        raise ValueError(f"{npz_path}: give a class map (JSON {{label index: class name or HPO id}}); "
                         "zero-shot prompts need class names")
    texts, hpo = class_prompts(class_names, cmap, onto)
    return ClassificationSet(name or os.path.splitext(os.path.basename(npz_path))[0], class_names, texts, hpo,
                             splits, task)


def load_pairs(manifest: str, image_root: str = "", onto: Any = None, check_images: bool = True,
               strict: bool = False, allow_absolute: bool = False) -> PairSet:
    """Pairs from a JSONL manifest or PhenoBench testdata.csv, through the records' bad-input policy."""
    root = image_root or paths.parent(manifest)
    if onto is not None:  # every line kept or counted: bad lines, missing/corrupt images, unknown HPO ids
        records, report = read_and_validate([manifest], onto, root, strict=strict, check_images=check_images,
                                            allow_absolute=allow_absolute)
        print(f"eval data: {report}", flush=True)
    else:
        records = read_manifest(manifest, strict=strict)
    if not records:
        raise ValueError(f"no usable records in {manifest}")
    image_paths = [resolve_image_path(r.image, root, allow_absolute=allow_absolute) for r in records]
    return PairSet(image_paths, [r.image_id for r in records], [r.caption for r in records],
                   [tuple(r.hpo_ids) for r in records], [r.split for r in records])


def pairs_from_split(split: Any, name: str) -> PairSet:
    """The pairs of one lazily read split (`data.sources.LazySplit`), images as encoded bytes."""
    images, ids, captions, hpo = [], [], [], []
    for i in range(len(split)):
        ex = split[i]
        image = ex["image"]  # packed shards: the stored bytes; tfds: a decoded array (re-encoded, lossless)
        images.append(bytes(image) if isinstance(image, (bytes, bytearray)) else png_bytes(np.asarray(image)))
        ids.append(f"{name}/{ex['image_id']}")
        captions.append(ex["caption"])
        hpo.append(tuple(ex["hpo_ids"]))
    if not images:
        raise ValueError(f"no pairs in split {name!r}")
    return PairSet(images, ids, captions, hpo, [name] * len(images))


def classification_from_pairs(pairs: PairSet, onto: Any, name: str = "phenotypes") -> ClassificationSet:
    """Images with exactly one HPO id, per split, as a phenotype classification set (classes = those ids)."""
    per_split: dict[str, tuple[list[str], list[str]]] = {}
    for split in dict.fromkeys(pairs.splits):
        paths, terms = pairs.select(split).images()
        single = [(p, t[0]) for p, t in zip(paths, terms) if len(t) == 1]
        if single:
            per_split[split] = ([p for p, _ in single], [t for _, t in single])
    classes = sorted({t for _, ts in per_split.values() for t in ts})
    if not classes:
        raise ValueError("no image carries exactly one HPO id: nothing to classify")
    at = {c: i for i, c in enumerate(classes)}
    splits = {s: Split(p, np.array([at[t] for t in ts], np.int64)) for s, (p, ts) in per_split.items()}
    texts = [onto.names[onto.index(c)] for c in classes]
    return ClassificationSet(name, classes, texts, list(classes), splits,
                             BINARY if len(classes) == 2 else MULTI_CLASS)
