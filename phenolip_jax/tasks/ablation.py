"""Ablation: stage 2 with and without the ontology knowledge (distillation, hierarchical positives), over seeds.

Writes <workdir>/ablation.json (every run's figures, mean and sd per arm) and ablation.md (the table);
each run lives in <workdir>/<arm>/seed<N> and is reused when finished, so an interrupted ablation resumes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from phenolip_jax import artifacts, config_lib, config_tools
from phenolip_jax.tasks import stage1, stage2



@dataclasses.dataclass(frozen=True)
class Arm:
    """What one row of the table switches on: distillation, the hierarchy (how), and which teacher."""

    distil: bool
    hierarchy: str = "off"  # 'off', 'share' (soft, own pair >= own_share), 'uncapped' (soft, own_share 0), 'mask'
    teacher: str = "trained"  # 'trained' (stage 1) or 'raw' (the encoder as published)
    about: str = ""


ARMS: dict[str, Arm] = {
    "clip": Arm(False, about="image-text contrastive only (CLIP)"),
    "paper_kd": Arm(True, about="the paper's objective: contrastive + distillation from the stage-1 teacher"),
    "paper_kd_hier_share": Arm(True, "share", about="paper_kd + hierarchical soft positives, the pair itself "
                               "keeping >= own_share of its target row at any batch size"),
    "paper_kd_hier_mask": Arm(True, "mask", about="paper_kd + KEP-style masking: same-phenotype pairs leave the "
                              "denominators, the pair itself is the only positive"),
    "paper_kd_hier_uncapped": Arm(True, "uncapped", about="paper_kd + uncapped soft positives (the former default: "
                                  "the own pair's share falls as the batch grows)"),
    "clip_hier_share": Arm(False, "share", about="clip + hierarchical soft positives (own share kept), no distillation"),
    "paper_kd_raw_teacher": Arm(True, teacher="raw", about="paper_kd with an untrained teacher (does stage 1 matter?)"),
}
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


def raw_teacher_config(teacher: Any) -> Any:
    """The untrained teacher: the teacher's encoder after 0 steps, with an identity head (the raw encoder)."""
    raw = copy.deepcopy(teacher)
    raw.total_steps = 0
    raw.text.head, raw.text.head_init = "linear", "identity"
    raw.eval.before = False
    raw.eval.baselines = False
    raw.export_table = False
    return raw


def arm_config(cfg: Any, arm: str, seed: int, teachers: dict[str, str], workdir: str) -> Any:
    """The stage-2 config of one (arm, seed) run."""
    spec = ARMS[arm]
    run = copy.deepcopy(cfg.stage2)
    run.seed = seed
    run.loss.kd_weight = cfg.kd_weight if spec.distil else 0.0
    hierarchy = run.loss.hierarchy
    hierarchy.enabled = spec.hierarchy != "off"
    if spec.hierarchy in ("share", "uncapped"):
        hierarchy.mode = "soft"
        hierarchy.own_share = cfg.own_share if spec.hierarchy == "share" else 0.0
    elif spec.hierarchy == "mask":
        hierarchy.mode = "mask"
    run.teacher.workdir = teachers[spec.teacher]
    if run.data.source == "demo" and not run.data.demo_dir:
        # One demo dataset per seed (the generator is seeded), shared by the arms: paired comparisons.
        run.data.demo_dir = os.path.join(workdir, "demo", f"seed{seed}")
    return run


# Fields a finished run may differ in and still be reused: how it was logged and fed, not what it computed.
_REUSE_SAFE = ("log_every", "eval_only", "data.workers", "data.prefetch", "mesh.", "eval.batch_size")


class StaleRunError(config_lib.UserError):
    """A finished run in the ablation's workdir was made with another config than its arm's."""


def _check_reusable(path: str, run_cfg: Any) -> None:
    """Refuses to reuse the finished run at `path` unless its saved config.json is the arm's config."""
    saved = _read_json(os.path.join(path, config_tools.CONFIG_FILE))
    if saved is None:
        raise StaleRunError(f"{path} has results but no {config_tools.CONFIG_FILE} to check them against the arm's "
                            "config: move it away (or use a new --workdir) to rerun it")
    changes = config_tools.config_changes(saved, config_tools.config_as_json(run_cfg), safe=_REUSE_SAFE)
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:6])
        raise StaleRunError(f"{path} was made with another config than this arm's ({len(changes)} fields: {listed}"
                            f"{'; ...' if len(changes) > 6 else ''}): move it away (or use a new --workdir) to rerun it")


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and figure: mean, sample sd (0 for one seed) and the number of runs that report it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, results in runs.items():
        out[arm] = {}
        for key, _ in COLUMNS:
            values = np.array([r[key] for r in results if r.get(key) is not None], np.float64)
            if len(values):
                out[arm][key] = dict(mean=float(values.mean()), sd=float(values.std(ddof=1)) if len(values) > 1
                                     else 0.0, n=len(values))
    return out


def reference_rows(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """The REFERENCES rows over the seeds (from the first arm's runs: every arm of a seed shares its test data)."""
    results = next(iter(runs.values()), [])
    renamed = {name: [{col: r.get(key) for col, key in keys.items()} for r in results]
               for name, keys in REFERENCES.items()}
    return {name: figures for name, figures in summarise(renamed).items() if figures}


def paired_differences(runs: dict[str, list[dict[str, float]]], baseline: str = "clip"
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
        for key, _ in COLUMNS:
            diffs = np.array([r[key] - b[key] for r, b in zip(results, runs[baseline])
                              if r.get(key) is not None and b.get(key) is not None], np.float64)
            if len(diffs):
                out[arm][key] = dict(mean=float(diffs.mean()), sd=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
                                     n=len(diffs), wins=int((diffs > 0).sum()))
    return out


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], signed: bool = False) -> str:
    """The table: one row per arm, mean ± sd in percent."""
    lines = ["| arm | " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for arm, figures in summary.items():
        sign = "+" if signed else ""
        cells = [f"{100 * figures[k]['mean']:{sign}.1f} ± {100 * figures[k]['sd']:.1f}"
                 + (f" ({figures[k]['wins']}/{figures[k]['n']})" if "wins" in figures[k] else "")
                 if k in figures else "n/a" for k, _ in COLUMNS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _teacher(cfg: Any, path: str) -> None:
    """Trains the stage-1 teacher `cfg` into `path` unless it is already there (checked by `check_workdir`)."""
    if not os.path.exists(os.path.join(path, "encoder")):
        config_tools.save_run_config(cfg, path)
        stage1.run(cfg, path)


def _started(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("eval.json", "encoder", config_tools.CONFIG_FILE))


def check_workdir(cfg: Any, workdir: str, teachers: dict[str, str]) -> None:
    """Raises StaleRunError when a finished or interrupted run in `workdir` was made from another config."""
    arms = set(cfg.arms)
    own = {"trained": cfg.teacher, "raw": raw_teacher_config(cfg.teacher)}
    for kind, teacher_cfg in own.items():
        used = any(ARMS[a].teacher == kind for a in arms)
        if used and not (kind == "trained" and cfg.teacher_workdir) and _started(teachers[kind]):
            _check_reusable(teachers[kind], teacher_cfg)
    for seed in cfg.seeds:
        for arm in cfg.arms:
            path = os.path.join(workdir, arm, f"seed{seed}")
            if _started(path):
                _check_reusable(path, arm_config(cfg, arm, seed, teachers, workdir))


def validate(cfg: Any) -> None:
    """Checks the ablation's own fields (config_lib's checks; each arm's stage-2 config is checked when it starts)."""
    config_lib.validate(cfg, num_devices=1)


def _on_more_test_pairs(cfg: Any, arm: str, seed: int, teachers: dict[str, str], workdir: str) -> dict[str, Any]:
    """A finished run's figures on its demo regenerated with `eval_test_pairs` test pairs (cached in the run)."""
    n, path = int(cfg.eval_test_pairs), os.path.join(workdir, arm, f"seed{seed}")
    out = os.path.join(path, f"eval_test{n}.json")
    result = _read_json(out)
    if result is None:
        t = time.time()
        result = stage2.evaluate_on_more_test_pairs(arm_config(cfg, arm, seed, teachers, workdir), path, n,
                                                    os.path.join(workdir, f"demo_test{n}", f"seed{seed}"))
        artifacts.write_json(out, result)
        print(f"ablation: {arm} seed {seed} evaluated on {n} test pairs ({time.time() - t:.0f}s)", flush=True)
    return result


def _write_tables(workdir: str, runs: dict[str, list[dict[str, float]]], cfg: Any, seconds: dict[str, float],
                  total: float, test_pairs: int = 0, reeval: float = 0.0) -> dict[str, Any]:
    """Writes ablation[_test<N>].json and .md (mean ± sd per arm, paired differences against clip).

    test_pairs=N > 0: the runs' figures on their demo regenerated with N test pairs. Returns the summary.
    """
    name = f"ablation_test{test_pairs}" if test_pairs else "ablation"
    summary = summarise(runs)
    references = reference_rows(runs)
    paired = {base: paired_differences(runs, base) for base in BASELINES if base in runs and len(runs) > 1}
    artifacts.write_json(os.path.join(workdir, f"{name}.json"), {
        "summary": summary, "references": references, "paired_vs": paired,
        "runs": {a: [{k: r.get(k) for k, _ in COLUMNS + EXTRA} for r in rs] for a, rs in runs.items()},
        "seeds": list(cfg.seeds), "seconds": seconds, "total_seconds": total, "eval_test_pairs": test_pairs})
    text = ""
    if test_pairs:
        first = next(iter(runs.values()))[0]
        text = (f"Evaluated on the demo regenerated with {test_pairs} test pairs per seed (same train split; "
                f"{first.get('zs_unseen_images', 0):.0f} unseen-phenotype images of "
                f"{first.get('zs_unseen_phenotypes', 0):.0f} unseen phenotypes in seed {cfg.seeds[0]}; "
                f"{reeval:.0f} s of re-evaluation this time).\n\n")
    text += (f"Stage 2 ablation, {len(cfg.seeds)} seed(s), mean ± sd in percent ({total:.0f} s):\n\n"
             f"{markdown_table({**summary, **references})}")
    for base, diffs in paired.items():
        text += (f"\nEach arm minus `{base}` on the same seed, mean ± sd in points (seeds where the arm is ahead / "
                 f"seeds):\n\n{markdown_table(diffs, signed=True)}")
    with open(os.path.join(workdir, f"{name}.md"), "w") as f:
        f.write(text)
    print(text, flush=True)
    return summary


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Runs every (arm, seed), then writes ablation.json and ablation.md; returns the summary."""
    validate(cfg)
    t0 = time.time()
    teachers = {"trained": cfg.teacher_workdir or os.path.join(workdir, "teacher"),
                "raw": os.path.join(workdir, "teacher_raw")}
    check_workdir(cfg, workdir, teachers)  # before any training: a stale run is refused at once
    if any(ARMS[a].teacher == "trained" for a in cfg.arms) and not cfg.teacher_workdir:
        _teacher(cfg.teacher, teachers["trained"])
    if any(ARMS[a].teacher == "raw" for a in cfg.arms):
        _teacher(raw_teacher_config(cfg.teacher), teachers["raw"])
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in cfg.arms}
    more: dict[str, list[dict[str, float]]] = {arm: [] for arm in cfg.arms}  # on eval_test_pairs test pairs
    seconds: dict[str, float] = {}
    reused: set[str] = set()
    earlier = (_read_json(os.path.join(workdir, "ablation.json")) or {}).get("seconds", {})
    reeval = 0.0
    for seed in cfg.seeds:
        for arm in cfg.arms:
            path, key = os.path.join(workdir, arm, f"seed{seed}"), f"{arm}/seed{seed}"
            t = time.time()
            run_cfg = arm_config(cfg, arm, seed, teachers, workdir)
            result = _read_json(os.path.join(path, "eval.json"))
            if result is None:
                config_tools.save_run_config(run_cfg, path)
                result = stage2.run(run_cfg, path)
                seconds[key] = round(time.time() - t, 1)
            else:  # a reused run keeps the time it took when it ran
                seconds[key] = earlier.get(key, 0.0)
                reused.add(key)
            print(f"ablation: {arm} seed {seed} done ({seconds[key]:.0f}s)", flush=True)
            runs[arm].append(result)
            if cfg.eval_test_pairs:
                t = time.time()
                more[arm].append(_on_more_test_pairs(cfg, arm, seed, teachers, workdir))
                reeval += time.time() - t
    # The training time, with the reused runs' own time; the re-evaluations are counted apart.
    total = round(time.time() - t0 - reeval + sum(seconds[k] for k in reused), 1)
    summary = _write_tables(workdir, runs, cfg, seconds, total)
    names = ["ablation.md"]
    if cfg.eval_test_pairs:
        _write_tables(workdir, more, cfg, seconds, total, int(cfg.eval_test_pairs), reeval)
        names.append(f"ablation_test{int(cfg.eval_test_pairs)}.md")
    print(f"ablation done in {total:.0f}s; results in {', '.join(os.path.join(workdir, n) for n in names)}", flush=True)
    return summary
