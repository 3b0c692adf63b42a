"""Evaluation outputs: eval_results.json (every figure), report.md and its PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.evaluate import calibration, unseen

RETRIEVAL_DIRECTIONS = ("image_to_text", "text_to_image", "image_to_phenotype", "phenotype_to_image")
# Chance levels sit near 0 and often coincide (directions sharing a candidate pool), so colour alone would leave
# only the last-drawn one visible: each also gets its own dash pattern and hollow marker.
CHANCE_STYLES = {"image_to_text": ((0, (4, 2)), "o"), "text_to_image": ((0, (1, 1.5)), "s"),
                 "image_to_phenotype": ((0, (6, 2, 1, 2)), "^"), "phenotype_to_image": ((0, (2, 3)), "v")}
DEMO_DATA = "synthetic demo data (not real images)"
MULTI_SYSTEM_NOTE = ("An image whose gold phenotypes lie under several organ systems counts once in each of them, "
                     "so the per-system n add up to more than the number of images.")


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (headless CI, Colab alike)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_jsonable(x: Any) -> Any:
    """NumPy scalars/arrays to Python, NaN/inf to None (strict JSON), dict keys to strings."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def recall_figure(retrieval: dict[str, Any], title: str = "") -> Any:
    """The R@K figure: one line per retrieval direction, its chance level dashed in the same colour (own dash
    pattern and marker), every K labelled on the log axis, the legend beside the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    all_ks: set[int] = set()
    for direction in RETRIEVAL_DIRECTIONS:
        rec = retrieval.get(direction)
        if not rec:
            continue
        ks = sorted(int(k[2:]) for k in rec if k.startswith("r@"))
        all_ks.update(ks)
        label = direction.replace("_", " ")
        line, = ax.plot(ks, [rec[f"r@{k}"] for k in ks], marker="o", label=label)
        dashes, marker = CHANCE_STYLES[direction]
        ax.plot(ks, [rec[f"chance_r@{k}"] for k in ks], linestyle=dashes, marker=marker, markersize=4,
                markerfacecolor="none", color=line.get_color(), alpha=0.8, label=f"{label} (chance)")
    ax.set_xscale("log")
    ticks = sorted(all_ks)
    ax.set_xticks(ticks, [str(k) for k in ticks])  # a log axis labels only powers of ten by default
    ax.minorticks_off()
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "Retrieval recall@K (dashed: chance)")
    ax.grid(alpha=0.3)
    # Outside the axes: inside, any placement covers some curve, since recall spans the whole 0-1 range.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_recall_curves(retrieval: dict[str, Any], path: str, title: str = "") -> str:
    """Writes `recall_figure` to path (PNG)."""
    plt = _pyplot()
    fig = recall_figure(retrieval, title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def distinct_colors(n: int) -> list[tuple[float, ...]]:
    """n distinct RGBA colours: tab20, tab20b and tab20c (60), then evenly spaced hues beyond."""
    plt = _pyplot()
    palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    if n > len(palette):
        palette += [plt.get_cmap("hsv")(i / (n - len(palette))) for i in range(n - len(palette))]
    return palette[:n]


def plot_organ_accuracy(per_group: dict[str, dict[str, float]], path: str, title: str = "") -> str:
    """Horizontal bars: top-1 accuracy (and hierarchy-aware accuracy) per organ system, with counts."""
    plt = _pyplot()
    names = sorted(per_group, key=lambda g: per_group[g]["accuracy"])
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.7))
    ax.barh(y + 0.2, [per_group[g]["hierarchical"] for g in names], height=0.4, label="hierarchy-aware", alpha=0.6)
    ax.barh(y - 0.2, [per_group[g]["accuracy"] for g in names], height=0.4, label="exact")
    ax.set_yticks(y, [f"{g} (n={per_group[g]['n']})" for g in names], fontsize=8)
    ax.set_xlim(0, 1)
    # Two short lines: on one, the note ran past the figure's right edge beside long organ-system names.
    ax.set_xlabel("top-1 accuracy\n(an image counts in each organ system of its phenotypes)", fontsize=9)
    ax.set_title(title or "Accuracy per organ system")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_reliability(section: dict[str, Any], path: str) -> str:
    """Reliability diagram before / after temperature scaling: accuracy per confidence bin against the diagonal."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, key, t in zip(axes, ("before", "after"), (1.0, section["temperature"])):
        rel = section[key]["reliability"]
        edges = np.asarray(rel["edges"])
        acc, conf = (np.nan_to_num(np.asarray(rel[k], np.float64)) for k in ("accuracy", "confidence"))
        filled = np.asarray(rel["count"]) > 0
        width = np.diff(edges)
        ax.bar(edges[:-1][filled], acc[filled], width=width[filled], align="edge", edgecolor="black", alpha=0.75,
               label="accuracy")
        # The gap between a bin's accuracy and its mean confidence is what ECE averages.
        ax.bar(edges[:-1][filled], conf[filled] - acc[filled], bottom=acc[filled], width=width[filled],
               align="edge", facecolor="none", edgecolor="tab:red", hatch="//", label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence")
        ax.set_title(f"{key} (T = {t:.3g}): ECE {100 * section[key]['ece']:.2f}%")
    axes[0].set_ylabel(f"top-1 accuracy ({section['test_split']} split, n={section['n_test']})")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pca_2d(x: np.ndarray) -> np.ndarray:
    """[N, 2] projection on the two leading principal components (centred SVD)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_phenotype_map(emb: np.ndarray, groups: Sequence[str], path: str, labels: Sequence[str] | None = None,
                       title: str = "") -> str:
    """PCA map of phenotype embeddings coloured by organ system (labels written when there are few)."""
    plt = _pyplot()
    xy = pca_2d(emb)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    uniq = sorted(set(groups))
    # tab20 alone repeats colours past 20 groups, and HPO has 23 organ systems.
    for g, color in zip(uniq, distinct_colors(len(uniq))):
        sel = np.array([x == g for x in groups])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=color, label=g)
    if labels is not None and len(labels) <= 40:
        for (px, py), name in zip(xy, labels):
            ax.annotate(name[:28], (px, py), fontsize=6, alpha=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "Phenotype embeddings (PCA), coloured by organ system")
    ax.legend(fontsize=6, loc="best", markerscale=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    return f"{100 * v:.2f}" if isinstance(v, (float, np.floating)) and math.isfinite(v) else "n/a"


def _data_kind(results: dict[str, Any]) -> str:
    """config.data.kind of the run ('' when the results carry no config)."""
    return str(((results.get("config") or {}).get("data") or {}).get("kind") or "")


def title(results: dict[str, Any]) -> str:
    """'<run> on <data>': the model's workdir (and checkpoint step) and the dataset, demo data called synthetic."""
    model = os.path.basename(os.path.normpath(str(results.get("model") or ""))) or "model"
    ckpt = str((results.get("config") or {}).get("checkpoint") or "")
    step = os.path.basename(os.path.normpath(ckpt)) if ckpt else ""
    run = f"{model} (checkpoint {step})" if step and step != model else model
    kind = _data_kind(results)
    # A demo's dataset name is the generator's cache folder (a hash), which says nothing to a reader.
    data = DEMO_DATA if kind == "demo" else f"{results.get('dataset', '')} ({kind} data)" if kind else str(
        results.get("dataset", ""))
    return f"{run} on {data}"


def _mean_sd(v: dict[str, Any], key: str) -> str:
    """'mean ± sd (n=K)' over seeds; one seed has no spread, so 'mean (n=1)'."""
    n = int(v.get("n_seeds", 1))
    spread = f" ± {_fmt(v[f'{key}_std'])}" if n > 1 else ""
    return f"{_fmt(v[f'{key}_mean'])}{spread} (n={n})"


def _count(xs: Any) -> str:
    """A per-seed example count: one number, or min-max when the seeds differ."""
    xs = sorted({int(x) for x in (xs if isinstance(xs, (list, tuple)) else [xs])})
    return str(xs[0]) if len(xs) == 1 else f"{xs[0]}-{xs[-1]}"


def _markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    """The report body: headline tables per evaluator, skipped evaluators, figure links."""
    kind = _data_kind(results)
    lines = [f"# Evaluation report: {title(results)}", "",
             f"- model: `{results.get('model', '')}` ({results.get('model_kind', '')})",
             f"- data: `{results.get('dataset', '')}` (config.data.kind {kind or 'unknown'})"]
    if kind == "demo":
        lines.append("- the demo's images and captions are generated (`phenolip_jax.data.demo`): these numbers check "
                     "the pipeline and say nothing about clinical images")
    lines += ["- numbers are percentages; chance levels from a uniformly random ranking", ""]
    r = results.get("retrieval")
    if r:
        ks = sorted(int(k[2:]) for k in r["image_to_text"] if k.startswith("r@"))
        lines += ["## Cross-modal retrieval (multi-positive recall@K; direction = query -> candidates)", "",
                  "| direction | " + " | ".join(f"R@{k} (chance)" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for d in RETRIEVAL_DIRECTIONS:
            if d in r:
                lines.append(f"| {d.replace('_', ' ')} | " + " | ".join(
                    f"{_fmt(r[d][f'r@{k}'])} ({_fmt(r[d][f'chance_r@{k}'])})" for k in ks) + " |")
        lines += ["", f"{r['n_images']} images, {r['n_captions']} captions, {r['n_phenotypes']} phenotypes.", ""]
    z = results.get("zero_shot")
    if z:
        # acc_medmnist is MedMNIST's own accuracy (the evaluator always computes it); elsewhere it repeats top1.
        wanted = ("top1", "top5", "mean_per_class_recall", "chance_top1") + (
            ("acc_medmnist",) if kind == "medmnist" else ()) + ("auc",)
        keys = [k for k in wanted if k in z]
        lines += ["## Zero-shot classification (template-ensembled prompts)", "",
                  "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                  "| " + " | ".join(_fmt(z[k]) for k in keys) + " |", "",
                  f"{z['n_images']} images, {z['n_classes']} classes, {z['n_templates']} templates.", ""]
    m = results.get("matching")
    if m:
        ks = sorted(int(k[2:]) for k in m if k.startswith("r@"))
        keys = [f"r@{k}" for k in ks] + [f"hit@{k}" for k in ks] + [
            "micro_precision", "micro_recall", "micro_f1", "sample_f1", "label_f1"]
        lines += [f"## Multi-label phenotype matching (predicted set: {m['predicted_set']})", "",
                  "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                  "| " + " | ".join(_fmt(m[k]) for k in keys) + " |", ""]
    h = results.get("hierarchy")
    if h:
        lines += ["## Hierarchy-aware top-1 phenotype prediction", "",
                  f"exact {_fmt(h['exact'])}, hierarchy-aware (gold, or an ancestor/descendant within "
                  f"{h['max_hops']} hop(s)) {_fmt(h['hierarchical'])}, "
                  f"organ-system macro {_fmt(h['organ_system_macro'])}"
                  f" over {h['n']} images.", "", "| organ system | n | exact | hierarchy-aware |", "|---|---|---|---|"]
        for g, v in h["per_organ_system"].items():
            lines.append(f"| {g} | {v['n']} | {_fmt(v['accuracy'])} | {_fmt(v['hierarchical'])} |")
        lines += ["", MULTI_SYSTEM_NOTE, ""]
    if results.get("unseen"):
        lines += unseen.markdown(results["unseen"])
    p = results.get("linear_probe")
    if p:
        lines += ["## Linear probe (logistic regression, C chosen on validation, refit on train + validation)", "",
                  "Cells: mean ± sd over n seeds (population sd); a single fit (100% of the labels) shows n=1.", "",
                  "| labels (examples per seed) | top-1 | mean per-class recall |", "|---|---|---|"]
        for frac, v in p.items():
            if isinstance(v, dict):
                size = (f" ({_count(v['n_train'])} train + {_count(v['n_val'])} val examples)"
                        if "n_train" in v and "n_val" in v else "")
                lines.append(f"| {frac}{size} | {_mean_sd(v, 'top1')} | {_mean_sd(v, 'mean_per_class_recall')} |")
        if all(k in p for k in ("n_train", "n_val", "n_test")):
            lines.append(f"\nFull splits: {p['n_train']} train, {p['n_val']} val, {p['n_test']} test images.")
        lines.append("")
    if results.get("calibration"):
        lines += calibration.markdown(results["calibration"], figures.get("reliability"))
    if results.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in results["skipped"].items()] + [""]
    listed = [f"![{name}]({os.path.basename(p)})" for name, p in figures.items() if name != "reliability"]
    if listed:  # the reliability diagram sits in the Calibration section
        lines += ["## Figures", ""] + listed + [""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: str, figures: dict[str, str]) -> tuple[str, str]:
    """Writes eval_results.json and report.md into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    res_path, md_path = os.path.join(out_dir, "eval_results.json"), os.path.join(out_dir, "report.md")
    payload = dict(results, figures={k: os.path.basename(v) for k, v in figures.items()})
    with open(res_path, "w") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True, allow_nan=False)
    with open(md_path, "w") as f:
        f.write(_markdown(results, figures))
    return res_path, md_path
