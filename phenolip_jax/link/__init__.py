"""Linking captions to HPO terms: lexical (names and synonyms), encoder (a stage-1 encoder on candidate spans),
hybrid; NegEx-style negation and uncertainty; evidence kept with every linked id.

    linker = build_linker(cfg, out_dir)                       # link.run, from configs/link.py
    records, evidence, summary = link_records(records, linker)  # data.records.Record in, ids filled out
"""
from phenolip_jax.link.corpus import link_records, summarise
from phenolip_jax.link.linker import METHODS, Linker, link_texts, linked_ids

__all__ = ["METHODS", "Linker", "link_records", "link_texts", "linked_ids", "summarise"]
