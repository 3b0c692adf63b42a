"""Stage 2 from every data source: a manifest on a (fake) gs:// bucket, packed ArrayRecord shards, a tfds dataset."""
import importlib
import json
import os
import zlib

import fsspec
import ml_collections
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from phenolip_jax import config_checks, config_lib
from phenolip_jax.data import paths, sources
from phenolip_jax.data.packing import pack_manifest
from phenolip_jax.ontology import load_ontology
from tests.tasks.test_stages import read_losses, tiny_stage2

BUCKET = "gs://phenolip-test-bucket/demo"


class FakeGCS(MemoryFileSystem):
    """An in-memory stand-in for gcsfs: epath sends gs:// paths to fsspec's 'gcs' filesystem."""

    protocol = ("gcs", "gs")
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path).removeprefix("gs://").removeprefix("gcs://").strip("/")
        return "/" + path if path else ""


@pytest.fixture(scope="module")
def onto():
    return load_ontology()


@pytest.fixture
def fake_gcs():
    """gs:// URLs served from memory for the test's duration (epath's fsspec backend caches filesystems)."""
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    yield
    importlib.import_module("fsspec.registry")._registry.pop("gcs", None)  # `fsspec.registry` is a proxy
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    FakeGCS.store.clear()


def upload(local_dir: str, url: str) -> None:
    """Copies a local folder tree to `url`."""
    for folder, _, files in os.walk(local_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), local_dir)
            paths.as_path(paths.join(url, rel)).write_bytes(open(os.path.join(folder, name), "rb").read())


def short_run(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Two steps, no teacher (kd off), so each run is a few seconds."""
    cfg.loss.kd_weight = 0.0
    cfg.total_steps = cfg.eval_every = cfg.checkpoint_every = 2
    return cfg


def data_cfg(**fields) -> ml_collections.ConfigDict:
    base = dict(source="demo", manifest="", image_root="", test_csv="", packed_dir="", tfds_dir="",
                tfds_name="phenokg_folder", max_hpo=4)
    return ml_collections.ConfigDict({**base, **fields})


@pytest.mark.parametrize("fields, message", [
    (dict(source="parquet"), "config.data.source='parquet': use one of demo, jsonl, arrayrecord, tfds"),
    (dict(source="jsonl"), "config.data.manifest is empty"),
    (dict(source="arrayrecord"), "config.data.packed_dir is empty"),
    (dict(source="tfds", tfds_dir="/"), None),
    (dict(source="tfds"), "config.data.tfds_dir is empty"),
    (dict(source="tfds", tfds_dir="/", tfds_name=""), "config.data.tfds_name is empty"),
    (dict(source="arrayrecord", packed_dir="/no/such/dir"), "config.data.packed_dir='/no/such/dir' does not exist"),
    (dict(source="arrayrecord", packed_dir="/", test_csv="/"), "config.data.test_csv is read with"),
])
def test_validate_source_names_the_field(fields, message):
    if message is None:
        sources.validate_source(data_cfg(**fields))
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sources.validate_source(data_cfg(**fields))


def test_bucket_urls_are_not_mangled(fake_gcs, tiny_demo_dir):
    url = f"{BUCKET}/manifest.jsonl"
    assert paths.parent(url) == BUCKET and paths.absolute(url) == url
    assert paths.join(BUCKET, "images/a.png") == f"{BUCKET}/images/a.png"
    with pytest.raises(ValueError, match="config.data.manifest='gs://.*' does not exist"):
        sources.validate_source(data_cfg(source="jsonl", manifest=url))
    upload(tiny_demo_dir, BUCKET)
    sources.validate_source(data_cfg(source="jsonl", manifest=url, image_root=BUCKET))
    cfg = config_lib.load_config("stage2")
    cfg.data.source, cfg.data.manifest = "jsonl", url
    config_checks.validate(cfg, 8)  # the URL is left to epath, not rejected by os.path.exists


def test_bucket_manifest_and_packed_shards_give_the_same_batches(fake_gcs, tiny_bert_dir, tiny_demo_dir, onto,
                                                                 tmp_path, capsys):
    """Same pairs, same order, same ids: a gs:// manifest and the shards packed from it feed identical batches."""
    from phenolip_jax.data import pipeline
    from phenolip_jax.artifacts import load_tokenizer
    from phenolip_jax.tasks import stage2

    upload(tiny_demo_dir, BUCKET)
    tok = load_tokenizer(tiny_bert_dir)
    cfg = tiny_stage2(tiny_bert_dir, tiny_demo_dir, "")
    cfg.data.source, cfg.data.manifest = "jsonl", f"{BUCKET}/manifest.jsonl"
    records, root = stage2.load_records(cfg, onto, tok)
    assert root == BUCKET and "data: records: 88 read, 88 kept, 0 dropped" in capsys.readouterr().out

    info = pack_manifest(f"{BUCKET}/manifest.jsonl", str(tmp_path / "packed"), onto, num_shards=3, progress=False)
    assert info["manifest"] == f"{BUCKET}/manifest.jsonl"  # recorded as given, not made "absolute"
    assert info["splits"]["train"]["num_examples"] == 64 and len(info["splits"]["train"]["shards"]) == 3
    cfg.data.source, cfg.data.manifest, cfg.data.packed_dir = "arrayrecord", "", str(tmp_path / "packed")
    lazy, no_root = stage2.load_records(cfg, onto, tok)
    assert no_root is None and "data: records: 88 read, 88 kept, 0 dropped" in capsys.readouterr().out
    assert {k: len(v) for k, v in lazy.items()} == {k: len(v) for k, v in records.items()}
    assert sources.split_terms(lazy["train"]) == sources.split_terms(records["train"])
    assert [r.hpo_ids for r in lazy["test"]] == [r.hpo_ids for r in records["test"]]

    pcfg = dict(stage2.pipeline_config(cfg), per_host_batch_size=16)
    a = pipeline.make_train_iterator(pcfg, records["train"], tok, onto, 0, image_root=root)
    b = pipeline.make_train_iterator(pcfg, lazy["train"], tok, onto, 0)
    c = pipeline.make_eval_batches(pcfg, records["test"], tok, onto, image_root=root)
    d = pipeline.make_eval_batches(pcfg, lazy["test"], tok, onto)
    for x, y in [(next(a), next(b)), (next(a), next(b))] + list(zip(c, d)):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_stage2_trains_from_packed_shards(tiny_bert_dir, tiny_demo_dir, onto, tmp_path, capsys):
    pack_manifest(os.path.join(tiny_demo_dir, "manifest.jsonl"), str(tmp_path / "packed"), onto, num_shards=2,
                  progress=False)
    cfg = short_run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, ""))
    cfg.data.source, cfg.data.packed_dir = "arrayrecord", str(tmp_path / "packed")
    run_two_steps(cfg, tmp_path, capsys)


def run_two_steps(cfg, tmp_path, capsys) -> dict:
    """Runs the short stage 2 on the demo's 88 pairs; checks its report, its 2 logged steps and eval.json."""
    from phenolip_jax.tasks import stage2

    result = stage2.run(cfg, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "data: records: 88 read, 88 kept, 0 dropped" in out and "stage 2: 64 train / 16 test pairs" in out
    assert sorted(read_losses(tmp_path / "run")) == [1, 2]
    with open(tmp_path / "run" / "eval.json") as f:
        assert json.load(f) == pytest.approx(result)
    return result


def test_stage2_from_tfds(tiny_bert_dir, tiny_demo_dir, onto, tmp_path, capsys):
    from phenolip_jax.data.tfds_builder import PhenoKGFolder

    tfds_dir = str(tmp_path / "tfds")
    PhenoKGFolder(data_dir=tfds_dir, manifest=os.path.join(tiny_demo_dir, "manifest.jsonl"),
                  ontology=onto).download_and_prepare()
    cfg = short_run(tiny_stage2(tiny_bert_dir, tiny_demo_dir, ""))
    cfg.data.source, cfg.data.tfds_dir = "tfds", tfds_dir
    cfg.data.max_hpo = 1  # the demo's pairs carry 1 or 2 ids: the 2-id ones are counted, from the metadata
    result = run_two_steps(cfg, tmp_path, capsys)
    assert 0.0 <= result["i2t_r@10"] <= 1.0


class PixelEncoder:
    """A deterministic stand-in for a model: images -> their pixels, texts -> seeded random vectors."""

    has_images = True

    def encode_images(self, images):
        from phenolip_jax.inference import prepare_images

        x = prepare_images(list(images), 16, (0.5,) * 3, (0.5,) * 3).reshape(len(images), -1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def encode_texts(self, texts):
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=768) for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows])

    def encode_phenotypes(self, hpo_ids, templates=None):
        return self.encode_texts(list(hpo_ids))


def flat(tree, prefix=""):
    """Nested dicts of numbers as one {'a/b': value} dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}/{key}").items()}


def test_eval_command_reads_pairs_from_shards_and_tfds(tiny_demo_dir, onto, tmp_path):
    """The eval stage's `arrayrecord` / `tfds` kinds give the manifest's test pairs, images and retrieval scores."""
    from phenolip_jax.data.tfds_builder import PhenoKGFolder
    from phenolip_jax.evaluate import evaluators
    from phenolip_jax.evaluate import run as eval_run
    from phenolip_jax.inference import prepare_images

    manifest = os.path.join(tiny_demo_dir, "manifest.jsonl")
    pack_manifest(manifest, str(tmp_path / "packed"), onto, progress=False)
    PhenoKGFolder(data_dir=str(tmp_path / "tfds"), manifest=manifest, ontology=onto).download_and_prepare()
    cfg = config_lib.load_config("eval", "manifest")
    cfg.data.manifest = manifest
    _, ref, _ = eval_run.load_data(cfg, onto, 16)
    ref = ref.select("test")
    def rows(pairs):  # captions repeat across images in the demo: compare (caption, ids, pixels) multisets
        x = prepare_images(pairs.image_paths, 16, (0,) * 3, (1,) * 3)
        return sorted(zip(pairs.captions, pairs.hpo_ids, (a.tobytes() for a in x)))

    want = rows(ref)
    scores = evaluators.cross_modal_retrieval(PixelEncoder(), ref, ks=(1, 5))
    for kind, field, value in (("arrayrecord", "packed_dir", "packed"), ("tfds", "tfds_dir", "tfds")):
        cfg = config_lib.load_config("eval", kind)
        cfg.data[field] = str(tmp_path / value)
        _, pairs, cls = eval_run.load_data(cfg, onto, 16)
        assert set(pairs.splits) == {"test"} and rows(pairs) == want, kind
        assert flat(evaluators.cross_modal_retrieval(PixelEncoder(), pairs, ks=(1, 5))) == pytest.approx(flat(scores))
        assert cls is not None and len(cls.splits["test"]) > 0
        cfg.data[field] = ""
        with pytest.raises(ValueError, match=f"config.data.{field} is empty"):
            eval_run.load_data(cfg, onto, 16)
