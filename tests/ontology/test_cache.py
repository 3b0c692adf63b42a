"""The sha256-keyed ontology cache: used when valid, rebuilt when corrupt, written atomically."""
from __future__ import annotations

import dataclasses
import logging
import zipfile

import numpy as np
import pytest

from phenolip_jax.ontology import cache, load_ontology, parse
from phenolip_jax.ontology.hpo import ARRAY_FIELDS


def assert_same_ontology(x, y):
    for field in dataclasses.fields(x):
        a, b = getattr(x, field.name), getattr(y, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, field.name
            np.testing.assert_array_equal(a, b, err_msg=field.name)
        else:
            assert a == b, field.name


def forbid_parsing(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pronto was called although a valid cache exists")

    monkeypatch.setattr(parse.pronto, "Ontology", boom)


def test_second_load_comes_from_cache(hpo, hpo_cache_dir, monkeypatch):
    files = list(hpo_cache_dir.iterdir())
    assert [f.name for f in files] == [f"hpo-v{cache.CACHE_FORMAT}-{hpo.source_sha256}.npz"]
    forbid_parsing(monkeypatch)
    again = load_ontology(cache_dir=hpo_cache_dir)
    assert_same_ontology(hpo, again)
    assert again.index("HP:0000399") == hpo.index("HP:0000399")  # alias maps survive the round trip
    with zipfile.ZipFile(files[0]) as z:  # nothing pickled: plain numeric arrays only
        for name in z.namelist():
            with z.open(name) as f:
                assert np.lib.format.read_array(f, allow_pickle=False).dtype != object


def test_use_cache_false_neither_reads_nor_writes(toy_obo, tmp_path, monkeypatch):
    calls = []
    real = parse.pronto.Ontology
    monkeypatch.setattr(parse.pronto, "Ontology", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_ontology(toy_obo, cache_dir=tmp_path / "c")
    load_ontology(toy_obo, cache_dir=tmp_path / "c", use_cache=False)
    assert calls == [1, 1]
    load_ontology(toy_obo, cache_dir=tmp_path / "d", use_cache=False)
    assert not (tmp_path / "d").exists()


def test_env_var_picks_the_cache_dir(toy_obo, tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path / "env"))
    onto = load_ontology(toy_obo)
    assert (tmp_path / "env" / "ontology" / f"hpo-v{cache.CACHE_FORMAT}-{onto.source_sha256}.npz").is_file()


def test_changed_file_gets_a_new_cache_entry(toy_obo, tmp_path):
    first = load_ontology(toy_obo, cache_dir=tmp_path / "c")
    toy_obo.write_text(toy_obo.read_text().replace("name: Diamond\n", "name: Rhombus\n"))
    second = load_ontology(toy_obo, cache_dir=tmp_path / "c")
    assert first.source_sha256 != second.source_sha256
    assert second.names[second.index("HP:0000300")] == "Rhombus"
    assert len(list((tmp_path / "c").iterdir())) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_sha", "missing_field"])
def test_corrupt_cache_is_ignored_and_rebuilt(toy_obo, tmp_path, caplog, damage):
    good = load_ontology(toy_obo, cache_dir=tmp_path)
    path = cache.cache_file(tmp_path, good.source_sha256)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "wrong_sha":  # a file renamed into place for another source
        other = dataclasses.replace(good, source_sha256="0" * 64)
        cache.save_cache(other, path)
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != ARRAY_FIELDS[0]}
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING, logger="phenolip_jax.ontology.cache"):
        rebuilt = load_ontology(toy_obo, cache_dir=tmp_path)
    assert "corrupt ontology cache" in caplog.text
    assert_same_ontology(good, rebuilt)
    assert cache.load_cache(path, good.source_sha256) is not None  # rewritten whole


def test_failed_write_leaves_no_partial_file(toy, tmp_path, monkeypatch, caplog):
    path = tmp_path / "c" / "x.npz"

    def fail_midway(f, **arrays):
        f.write(b"PK partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", fail_midway)
    with caplog.at_level(logging.WARNING, logger="phenolip_jax.ontology.cache"):
        assert cache.save_cache(toy, path) is False
    assert "disk full" in caplog.text
    assert list(path.parent.iterdir()) == []  # neither the target nor a temp file


def test_unwritable_cache_dir_still_loads(toy_obo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    onto = load_ontology(toy_obo, cache_dir=blocker / "sub")
    assert len(onto) == 10
