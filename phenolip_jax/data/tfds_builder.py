"""A tensorflow-datasets builder over a local manifest + image folder (array_record, no TensorFlow).

    builder = PhenoKGFolder(data_dir=DIR, manifest="folder/manifest.jsonl", image_root="folder")
    builder.download_and_prepare()
    source = tfds.data_source("phenokg_folder", data_dir=DIR, split="train")  # random access
    ds = grain.MapDataset.source(ExampleSource(source))  # or pass ExampleSource to make_*_batches

Records go through `validate_records` while generating; images are stored as RGB PNG (tfds
encodes a numpy image only through TensorFlow, so we hand it PNG bytes). The dataset's metadata
(`builder.info.metadata`, saved beside the data) holds the validation report and, per split, the HPO ids
used and how many records carry n ids (as packing.json does for packed shards).
"""
from __future__ import annotations

import io
from typing import Any

import grain
from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from phenolip_jax.data import containers, images, paths
from phenolip_jax.data.manifest import read_and_validate
from phenolip_jax.data.packing import hpo_summary
from phenolip_jax.data.records import assign_ids, resolve_image_path
from phenolip_jax.ontology import load_ontology


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H,W,3] as PNG bytes (fast compression)."""
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return out.getvalue()


class PhenoKGFolder(tfds.core.GeneratorBasedBuilder):
    """PhenoKG-format image-caption pairs with HPO ids, from a local JSONL / PhenoBench CSV manifest."""

    name = "phenokg_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    # tfds' own code_path probes `importlib_resources` (not installed here: tfds is pinned without
    # its optional deps), so name this file directly.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(self, *, manifest: str | None = None, image_root: str | None = None,
                 ontology=None, strict: bool = False, **kwargs):
        # Reading an already prepared dataset (tfds.data_source / tfds.builder) needs no manifest.
        self._manifest, self._image_root = manifest, image_root
        self._ontology, self._strict = ontology, strict
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "caption": tfds.features.Text(),
                "hpo_ids": tfds.features.Sequence(tfds.features.Text()),
                "image_key": tfds.features.Text(),
                "image_id": np.int32,
                "caption_id": np.int32,
            }),
            description=__doc__,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        if self._manifest is None:
            raise ValueError("PhenoKGFolder needs manifest=... to generate the dataset")
        root = self._image_root or paths.parent(self._manifest)
        onto = self._ontology
        if onto is None:
            onto = load_ontology()
        kept, report = read_and_validate([self._manifest], onto, root, strict=self._strict)
        print(report)
        by_split: dict[str, list] = {}
        for r in kept:
            by_split.setdefault(r.split, []).append(r)
        self.info.metadata.update({"validation": report.as_dict(),
                                   "splits": {s: hpo_summary(recs) for s, recs in by_split.items()}})
        return {split: self._generate_examples(recs, root) for split, recs in by_split.items()}

    def _generate_examples(self, recs, root):
        image_ids, caption_ids, _, _ = assign_ids(recs)
        for i, r in enumerate(recs):
            rgb, _ = images.decode_rgb(containers.read_image_bytes(resolve_image_path(r.image, root, allow_absolute=True)))
            yield i, {"image": png_bytes(rgb), "caption": r.caption, "hpo_ids": list(r.hpo_ids),
                      "image_key": r.image_id, "image_id": image_ids[i], "caption_id": caption_ids[i]}


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class ExampleSource(grain.sources.RandomAccessDataSource):
    """Adapts a tfds data_source of PhenoKGFolder to pipeline examples (image = uint8 array)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.source[index]
        return {"image": np.asarray(ex["image"]), "caption": _text(ex["caption"]),
                "hpo_ids": tuple(_text(h) for h in ex["hpo_ids"]),
                "image_id": int(ex["image_id"]), "caption_id": int(ex["caption_id"])}
