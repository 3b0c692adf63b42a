"""The ablation's tables: mean ± sd per arm, reference rows, paired differences; ablation[_test<N>].json and .md.

Pure functions of the runs' figures (`{arm: [figures of seed 0, seed 1, ...]}`), so they are tested without
training. Two column sets: the stage-2 evaluation's (COLUMNS) and, when the runs carry them, MedPix 2.0's own
labels (LABEL_COLUMNS, from `evaluate.medpix_labels.run_figures`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import artifacts
from phenolip_jax.evaluate.medpix_labels import TASKS as LABEL_TASKS

Runs = dict[str, list[dict[str, float]]]
Columns = Sequence[tuple[str, str]]

BASELINES = ("clip", "paper_kd")  # each other arm is compared with these, seed by seed
COLUMNS = (("i2t_r@10", "I2T R@10"), ("t2i_r@10", "T2I R@10"), ("i2p_r@10", "I2P R@10"), ("p2i_r@10", "P2I R@10"),
           ("zs_seen_top1", "seen top-1"), ("zs_unseen_top1", "unseen top-1"), ("zs_unseen_r@10", "unseen R@10"),
           ("zs_unseen_hier_top1", "unseen hier. top-1 (all)"))
EXTRA = (("zs_seen_images", ""), ("zs_unseen_images", ""), ("zs_unseen_phenotypes", ""))  # kept in the json
# Reference rows under the table (model-free, the same for every arm of a seed): chance, and the image-free rule
# "name a seen relative of the gold term", which the hierarchy-aware unseen score must beat to mean anything.
REFERENCES = {
    "(chance)": {"i2t_r@10": "chance_r@10", "t2i_r@10": "chance_r@10", "i2p_r@10": "i2p_chance_r@10",
                 "p2i_r@10": "p2i_chance_r@10", "zs_seen_top1": "zs_seen_chance_top1",
                 "zs_unseen_top1": "zs_unseen_chance_top1", "zs_unseen_r@10": "zs_unseen_chance_r@10",
                 "zs_unseen_hier_top1": "zs_unseen_hier_chance_top1"},
    "(seen-relative rule)": {"zs_unseen_hier_top1": "zs_unseen_parent_rule_hier_top1"},
}
# MedPix 2.0's own labels: zero-shot (prompts from the label names) and a linear probe on every train label.
LABEL_COLUMNS = tuple((f"{t}_{kind}_top1", f"{t} {title}") for kind, title in (("zs", "zero-shot"), ("probe", "probe"))
                      for t in LABEL_TASKS)
LABEL_REFERENCES = {
    f"(chance, {guess})": {f"{t}_{kind}_top1": f"{t}_chance_{guess}" for kind in ("zs", "probe") for t in LABEL_TASKS}
    for guess in ("uniform", "majority")
}


def summarise(runs: Runs, columns: Columns = COLUMNS) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and figure: mean, sample sd (0 for one seed) and the number of runs that report it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, results in runs.items():
        out[arm] = {}
        for key, _ in columns:
            values = np.array([r[key] for r in results if r.get(key) is not None], np.float64)
            if len(values):
                out[arm][key] = dict(mean=float(values.mean()), sd=float(values.std(ddof=1)) if len(values) > 1
                                     else 0.0, n=len(values))
    return out


def reference_rows(runs: Runs, references: dict[str, dict[str, str]] = REFERENCES, columns: Columns = COLUMNS
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """The reference rows over the seeds (from the first arm's runs: every arm of a seed shares its test data)."""
    results = next(iter(runs.values()), [])
    renamed = {name: [{col: r.get(key) for col, key in keys.items()} for r in results]
               for name, keys in references.items()}
    return {name: figures for name, figures in summarise(renamed, columns).items() if figures}


def paired_differences(runs: Runs, baseline: str = "clip", columns: Columns = COLUMNS
                       ) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and figure: mean and sample sd over seeds of (arm - baseline) on the same seed, and the wins.

    Arms of one seed share the dataset, initialisation and data order, so the per-seed difference removes
    what the seeds change for every arm alike; `wins` counts the seeds where the arm is ahead.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, results in runs.items():
        if arm == baseline:
            continue
        out[arm] = {}
        for key, _ in columns:
            diffs = np.array([r[key] - b[key] for r, b in zip(results, runs[baseline])
                              if r.get(key) is not None and b.get(key) is not None], np.float64)
            if len(diffs):
                out[arm][key] = dict(mean=float(diffs.mean()), sd=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
                                     n=len(diffs), wins=int((diffs > 0).sum()))
    return out


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], signed: bool = False,
                   columns: Columns = COLUMNS) -> str:
    """The table: one row per arm, mean ± sd in percent."""
    lines = ["| arm | " + " | ".join(title for _, title in columns) + " |", "|---|" + "---|" * len(columns)]
    for arm, figures in summary.items():
        sign = "+" if signed else ""
        cells = [f"{100 * figures[k]['mean']:{sign}.1f} ± {100 * figures[k]['sd']:.1f}"
                 + (f" ({figures[k]['wins']}/{figures[k]['n']})" if "wins" in figures[k] else "")
                 if k in figures else "n/a" for k, _ in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _section(runs: Runs, title: str, columns: Columns, references: dict[str, dict[str, str]]
             ) -> tuple[str, dict[str, Any]]:
    """One table with its paired differences: (markdown, {summary, references, paired_vs})."""
    summary, refs = summarise(runs, columns), reference_rows(runs, references, columns)
    paired = {base: paired_differences(runs, base, columns) for base in BASELINES if base in runs and len(runs) > 1}
    text = f"{title}\n\n{markdown_table({**summary, **refs}, columns=columns)}"
    for base, diffs in paired.items():
        text += (f"\nEach arm minus `{base}` on the same seed, mean ± sd in points (seeds where the arm is ahead / "
                 f"seeds):\n\n{markdown_table(diffs, signed=True, columns=columns)}")
    return text, {"summary": summary, "references": refs, "paired_vs": paired}


def write_tables(workdir: str, runs: Runs, seeds: Sequence[int], seconds: dict[str, float], total: float,
                 test_pairs: int = 0, reeval: float = 0.0, label_seconds: float = 0.0) -> dict[str, Any]:
    """Writes ablation[_test<N>].json and .md (mean ± sd per arm, paired differences against the baselines, and
    MedPix's labels when the runs carry them); test_pairs=N > 0: figures on the demo regenerated with N test
    pairs. Returns the summary."""
    name = f"ablation_test{test_pairs}" if test_pairs else "ablation"
    text = ""
    if test_pairs:
        first = next(iter(runs.values()))[0]
        text = (f"Evaluated on the demo regenerated with {test_pairs} test pairs per seed (same train split; "
                f"{first.get('zs_unseen_images', 0):.0f} unseen-phenotype images of "
                f"{first.get('zs_unseen_phenotypes', 0):.0f} unseen phenotypes in seed {seeds[0]}; "
                f"{reeval:.0f} s of re-evaluation this time).\n\n")
    main, out = _section(runs, f"Stage 2 ablation, {len(seeds)} seed(s), mean ± sd in percent ({total:.0f} s):",
                         COLUMNS, REFERENCES)
    text += main
    keep = COLUMNS + EXTRA
    if any(k in r for rs in runs.values() for r in rs for k, _ in LABEL_COLUMNS):
        labels, out["labels"] = _section(
            runs, f"MedPix 2.0's own labels, top-1 in percent (zero-shot from the label names; linear probe on every "
            f"train label; {label_seconds:.0f} s of label evaluation this time):", LABEL_COLUMNS, LABEL_REFERENCES)
        text += "\n" + labels
        keep += LABEL_COLUMNS + tuple((v, "") for refs in LABEL_REFERENCES.values() for v in refs.values())
    artifacts.write_json(os.path.join(workdir, f"{name}.json"), {
        **out, "runs": {a: [{k: r.get(k) for k, _ in keep} for r in rs] for a, rs in runs.items()},
        "seeds": list(seeds), "seconds": seconds, "total_seconds": total, "eval_test_pairs": test_pairs,
        "label_seconds": round(label_seconds, 1)})
    with open(os.path.join(workdir, f"{name}.md"), "w") as f:
        f.write(text)
    print(text, flush=True)
    return out["summary"]
