"""Linking many records: `link_records(records, linker) -> (records with hpo_ids, evidence, summary)`.

This is the API the packer (or any reader of `data.records.Record`s) calls: it reads nothing and writes nothing.
Captions go through `linker.link_texts` in chunks, so encoder spans are embedded in large batches.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from phenolip_jax.data.records import Record
from phenolip_jax.link.linker import Linker, link_texts, linked_ids

EXISTING = ("merge", "replace")  # config.existing: what happens to ids a record already carries
TOP_TERMS = 20
COUNT_BINS = ("0", "1", "2", "3", "4", "5+")  # terms per caption, for the summary's distribution


def link_records(records: Sequence[Record], linker: Linker, existing: str = "merge", chunk: int = 512,
                 progress: Callable[[int, int], None] | None = None
                 ) -> tuple[list[Record], list[dict[str, Any]], dict[str, Any]]:
    """(records with hpo_ids filled, one evidence row per record, the summary).

    existing='merge': ids the record already had come first, then the linked ones; 'replace': the linked ids only.
    `progress(done, total)` is called after each chunk.
    """
    if existing not in EXISTING:
        raise ValueError(f"config.existing={existing!r}: use one of {', '.join(EXISTING)}")
    out, rows = [], []
    for lo in range(0, len(records), chunk):
        batch = records[lo:lo + chunk]
        for rec, evidence in zip(batch, link_texts([r.caption for r in batch], linker)):
            ids = linked_ids(evidence)
            merged = list(dict.fromkeys([*rec.hpo_ids, *ids])) if existing == "merge" else ids
            out.append(dataclasses.replace(rec, hpo_ids=tuple(merged)))
            rows.append(dict(image=rec.image, image_id=rec.image_id, where=rec.where, caption=rec.caption,
                             hpo_ids=ids, evidence=evidence))
        if progress is not None:
            progress(min(lo + chunk, len(records)), len(records))
    return out, rows, summarise(rows)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Captions read / linked / unlinked, terms per caption, the top terms, each method's share, negated count."""
    per_caption = np.array([len(r["hpo_ids"]) for r in rows], np.int64)
    mentions = [e for r in rows for e in r["evidence"]]
    linked = [e for e in mentions if e["linked"]]
    names: dict[str, str] = {}
    counts: collections.Counter = collections.Counter()
    for r in rows:
        for e in r["evidence"]:
            names[e["hpo_id"]] = e["name"]
        counts.update(r["hpo_ids"])
    methods = collections.Counter(e["method"] for e in linked)
    bins = collections.Counter(COUNT_BINS[min(int(n), len(COUNT_BINS) - 1)] for n in per_caption)
    return dict(
        captions=len(rows),
        linked=int((per_caption > 0).sum()),
        unlinked=int((per_caption == 0).sum()),
        terms_per_caption=dict(mean=round(float(per_caption.mean()), 3) if len(rows) else 0.0,
                               distribution={b: bins[b] for b in COUNT_BINS}),
        distinct_terms=len(counts),
        top_terms=[dict(hpo_id=h, name=names.get(h, ""), captions=n) for h, n in counts.most_common(TOP_TERMS)],
        mentions=len(mentions),
        linked_mentions=len(linked),
        method_share={m: round(n / max(len(linked), 1), 4) for m, n in sorted(methods.items())},
        negated=sum(e["excluded"] for e in mentions),
        uncertain=sum(e["uncertain"] for e in mentions),
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines."""
    tpc = summary["terms_per_caption"]
    lines = [f"captions {summary['captions']}: linked {summary['linked']}, unlinked {summary['unlinked']}; "
             f"terms per caption mean {tpc['mean']} (" + ", ".join(f"{k}: {v}" for k, v in tpc["distribution"].items())
             + ")",
             f"mentions {summary['mentions']} (linked {summary['linked_mentions']}, negated {summary['negated']}, "
             f"uncertain {summary['uncertain']}); method share "
             + (", ".join(f"{m} {100 * s:.1f}%" for m, s in summary["method_share"].items()) or "-"),
             f"top terms ({summary['distinct_terms']} distinct):"]
    lines += [f"  {t['captions']:>6}  {t['hpo_id']}  {t['name']}" for t in summary["top_terms"]]
    return "\n".join(lines)


class ProgressLine:
    """`(done, total)` -> a line on stderr every `every` captions (and at the end): count, rate, ETA."""

    def __init__(self, every: int, what: str = "captions"):
        self.every, self.what, self.start, self.last = every, what, time.time(), 0

    def __call__(self, done: int, total: int) -> None:
        if not self.every or (done - self.last < self.every and done < total):
            return
        self.last = done
        elapsed = max(time.time() - self.start, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("nan")
        print(f"link: {done}/{total} {self.what} ({100 * done / max(total, 1):.0f}%), {rate:.1f}/s, "
              f"elapsed {elapsed:.0f}s, eta {eta:.0f}s", file=sys.stderr, flush=True)
