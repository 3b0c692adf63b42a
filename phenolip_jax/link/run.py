"""The link stage: read captions, link them to HPO terms, write linked.jsonl, evidence.jsonl, link_summary.json.

`python -m phenolip_jax.main --config=configs/link.py --config.input=FILE [--config.encoder=RUN] --workdir=OUT`
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from phenolip_jax import config_checks
from phenolip_jax.artifacts import output_folder
from phenolip_jax.data import manifest, paths
from phenolip_jax.evaluate import phenotype_cache
from phenolip_jax.link import corpus, encoder, inputs, lexical, obo_terms, spans
from phenolip_jax.link.linker import Linker, allowed_terms
from phenolip_jax.ontology import Ontology, load_ontology, organ_system_index


def method_of(cfg: Any) -> str:
    """config.method, or (when empty) 'hybrid' with an encoder and 'lexical' without."""
    return cfg.method or ("hybrid" if cfg.encoder else "lexical")


def cache_dirs(model: Any, out_dir: str) -> list[str]:
    """Where term embeddings are cached: the run's own folder first (not a raw Hugging Face dir), then the output."""
    own = [] if encoder.is_hf_dir(model.path) else [os.path.join(model.path, phenotype_cache.CACHE_DIRNAME)]
    return own + [os.path.join(out_dir, phenotype_cache.CACHE_DIRNAME)]


def make_lexicon(onto: Ontology, terms: Any, annotations: obo_terms.TermAnnotations, lexical_cfg: Any
                 ) -> lexical.Lexicon:
    """The lexicon of `terms` under config.lexical."""
    return lexical.build_lexicon(onto, terms, annotations, tuple(lexical_cfg.scopes), int(lexical_cfg.min_chars),
                                 int(lexical_cfg.acronym_max_len), bool(lexical_cfg.fold_plurals))


def build_linker(cfg: Any, out_dir: str) -> Linker:
    """The Linker a link config describes (the encoder loaded and its term matrix cached when one is named)."""
    method = method_of(cfg)
    model = encoder.load_encoder(cfg.encoder, cfg.ontology, int(cfg.batch_size)) if cfg.encoder else None
    if model is not None:
        onto, obo_path = model.ontology, model.obo_path
    else:
        onto, obo_path = load_ontology(cfg.ontology.obo_path or None), cfg.ontology.obo_path or None
    try:
        onto.index(cfg.root)
    except KeyError as e:
        raise ValueError(f"config.root={cfg.root!r}: {e}") from None
    organ = organ_system_index(onto, cfg.organ_system) if cfg.organ_system else None
    terms = allowed_terms(onto, cfg.root, organ)
    if not len(terms):
        raise ValueError(f"config.root={cfg.root!r} / config.organ_system={cfg.organ_system!r}: no terms to link to")
    annotations = obo_terms.read_annotations(onto, obo_path)
    lexicon = make_lexicon(onto, terms, annotations, cfg.lexical) if method != "encoder" else None
    scorer, span_filter = None, spans.SpanFilter()
    if model is not None and method != "lexical":
        ids = [onto.ids[int(t)] for t in terms]
        scorer = encoder.SpanScorer(model, terms, encoder.term_matrix(model, ids, cache_dirs(model, out_dir)),
                                    verbose=True)
        span_filter = spans.span_filter(cfg.span_filter, onto, terms, annotations)
    return Linker(onto, method, lexicon, scorer, float(cfg.threshold), int(cfg.max_span_words), bool(cfg.negation),
                  int(cfg.negation_window), bool(cfg.link_uncertain), span_filter)


def write_outputs(out_dir: str, records: list, rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    """linked.jsonl (the manifest), evidence.jsonl (one object per caption) and link_summary.json (naming all three)."""
    out = {name: os.path.join(out_dir, name) for name in ("linked.jsonl", "evidence.jsonl", "link_summary.json")}
    summary["outputs"] = out
    manifest.write_jsonl(records, out["linked.jsonl"])
    paths.write_text(out["evidence.jsonl"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    paths.write_text(out["link_summary.json"], json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return out


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Links every caption of config.input; writes the outputs and returns the summary."""
    config_checks.validate(cfg, num_devices=1)
    t0 = time.time()
    out_dir = output_folder(cfg, workdir)
    records, report, fmt = inputs.read_input(cfg.input, cfg.input_format)
    linker = build_linker(cfg, out_dir)
    print(f"link: {len(records)} captions from {cfg.input} ({fmt}), method {linker.method}"
          + (f", encoder {cfg.encoder} (threshold {linker.threshold})" if linker.scorer else "")
          + (f", organ system {cfg.organ_system}" if cfg.organ_system else ""), flush=True)
    progress = corpus.ProgressLine(int(cfg.progress_every))
    linked, rows, summary = corpus.link_records(records, linker, cfg.existing, int(cfg.chunk), progress)
    summary = dict(input=cfg.input, input_format=fmt, method=linker.method, encoder=cfg.encoder,
                   threshold=linker.threshold if linker.scorer else None, organ_system=cfg.organ_system,
                   lines_without_record=report.dropped, **summary, seconds=round(time.time() - t0, 1))
    write_outputs(out_dir, linked, rows, summary)
    print(corpus.format_summary(summary), flush=True)
    print(f"link: wrote {', '.join(summary['outputs'].values())} in {summary['seconds']}s", flush=True)
    return summary
