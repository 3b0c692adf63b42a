"""Encoder and hybrid linking: span selection with a stub scorer, and a real (tiny, raw) encoder end to end."""
from pathlib import Path

import numpy as np
import pytest

from phenolip_jax import config_lib
from phenolip_jax.link import encoder, spans, text
from phenolip_jax.link.linker import Linker, link_texts, linked_ids
from phenolip_jax.link.run import build_linker
from tests.link.conftest import IDS

TABLE = {"dilated heart": ("HP:0001640", 0.93), "heart": ("HP:0001640", 0.85), "dilated": ("HP:0001640", 0.6),
         "fluid": ("HP:0002202", 0.82), "effusion": ("HP:0002202", 0.99)}


def test_candidate_spans_skip_stopword_edges_numbers_and_phrase_breaks():
    ws = text.words("Dilated heart of the child, 5 cm")
    got = {ws.span_text(a, b) for a, b in spans.candidate_spans(ws, 6)}
    assert got == {"Dilated", "Dilated heart", "Dilated heart of the child", "heart", "heart of the child", "child"}


def test_encoder_keeps_the_best_non_overlapping_spans_above_threshold(make_linker):
    ev = link_texts(["Dilated heart and some fluid."], make_linker("encoder", TABLE, threshold=0.8))[0]
    assert [(e["span"], e["hpo_id"], e["score"]) for e in ev] == [
        ("Dilated heart", IDS["cardiomegaly"], 0.93), ("fluid", IDS["effusion"], 0.82)]
    assert all(e["method"] == "encoder" and "matched" not in e for e in ev)
    ev = link_texts(["Dilated heart and some fluid."], make_linker("encoder", TABLE, threshold=0.9))[0]
    assert [e["span"] for e in ev] == ["Dilated heart"]


def test_hybrid_adds_encoder_mentions_only_where_lexical_left_words(make_linker):
    lk = make_linker("hybrid", {**TABLE, "pleural effusion": ("HP:0002107", 0.999)}, threshold=0.8)
    ev = link_texts(["Pleural effusion and dilated heart."], lk)[0]
    assert [(e["span"], e["method"], e["hpo_id"]) for e in ev] == [
        ("Pleural effusion", "lexical", IDS["effusion"]), ("dilated heart", "encoder", IDS["cardiomegaly"])]
    assert linked_ids(ev) == [IDS["effusion"], IDS["cardiomegaly"]]


def test_span_filter_skips_anatomy_only_spans(mini, make_linker):
    onto, annotations, terms = mini
    filt = spans.span_filter("anatomy", onto, terms, annotations)
    assert "heart" in filt.anatomy  # from 'Abnormal heart morphology'
    lk = make_linker("encoder", TABLE, span_filter="anatomy", threshold=0.8)
    assert [e["span"] for e in link_texts(["the left heart"], lk)[0]] == []
    finding = spans.span_filter("finding", onto, terms, annotations)
    ws = text.words("enlarged left heart showing")
    assert finding.keep(ws, 0, 3) and not finding.keep(ws, 1, 4)


def test_linker_refuses_a_method_without_its_parts(mini):
    onto = mini[0]
    with pytest.raises(ValueError, match="config.encoder"):
        Linker(onto, "hybrid", lexicon=object())
    with pytest.raises(ValueError, match="config.method"):
        Linker(onto, "fuzzy")


@pytest.fixture(scope="module")
def raw_linker_cfg(tiny_bert_dir, mini_obo):
    cfg = config_lib.load_config("link")
    cfg.encoder, cfg.method, cfg.threshold, cfg.span_filter = tiny_bert_dir, "hybrid", -1.0, "none"
    cfg.ontology.obo_path = mini_obo
    return cfg


def test_real_encoder_scores_spans_against_every_term_and_caches_the_terms(raw_linker_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOLIP_CACHE_DIR", str(tmp_path / "cache"))
    lk = build_linker(raw_linker_cfg, str(tmp_path))
    assert encoder.is_hf_dir(raw_linker_cfg.encoder) and lk.scorer.model.kind == "stage1"
    assert (tmp_path / "phenotype_cache").is_dir()  # a raw HF dir is not written to: the output folder is
    assert len(lk.scorer.terms) == 12  # every term under HP:0000118 (not it, not the inheritance branch)
    ev = link_texts(["Pleural effusion with a strange shadow."], lk)[0]
    assert ev[0]["method"] == "lexical"
    enc = [e for e in ev if e["method"] == "encoder"]
    assert enc and all(-1.0 <= e["score"] <= 1.0 for e in enc)  # threshold -1: the best span always links
    # A second scorer on the same model reads the cached term matrix: same embeddings, nothing re-encoded.
    again = build_linker(raw_linker_cfg, str(tmp_path))
    np.testing.assert_allclose(np.asarray(again.scorer.matrix), np.asarray(lk.scorer.matrix), atol=1e-6)
    # Memoised span scores survive a save / load.
    path = encoder.memo_path(str(tmp_path / "spans"), lk.scorer)
    encoder.save_memo(path, lk.scorer)
    fresh = again.scorer
    fresh.memo.clear()
    assert encoder.load_memo(path, fresh) == len(lk.scorer.memo)


def test_a_stage1_workdir_links_with_its_term_matrix_cached_in_the_run(stage1_workdir, tmp_path):
    cfg = config_lib.load_config("link")
    cfg.encoder, cfg.threshold, cfg.organ_system = stage1_workdir, -1.0, "HP:0002086"  # respiratory terms only
    cfg.span_filter = "none"  # a 3-step tiny encoder: any span, any cosine
    lk = build_linker(cfg, str(tmp_path))
    assert lk.method == "hybrid" and lk.scorer.model.kind == "stage1"
    assert (Path(stage1_workdir) / "phenotype_cache").is_dir()  # the run keeps its term matrix
    organ = lk.ontology.index("HP:0002086")
    assert all(organ in lk.ontology.organ_systems(int(t)) for t in lk.scorer.terms)
    ev = link_texts(["Pleural effusion and a strange shadow in the lungs."], lk)[0]
    assert ev[0]["method"] == "lexical" and any(e["method"] == "encoder" for e in ev)
    assert all(lk.ontology.index(e["hpo_id"]) in set(lk.scorer.terms.tolist()) for e in ev)
