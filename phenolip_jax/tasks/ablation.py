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

from phenolip_jax import artifacts, config_checks, config_lib, config_tools
from phenolip_jax.evaluate import medpix_labels
from phenolip_jax.tasks import ablation_tables, common, stage1, stage2



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


LABELS_FILE = "medpix_labels.json"  # a run's figures on MedPix's own labels (config.medpix.dir) and their settings

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
    """Checks the ablation's own fields (config_checks' checks; each arm's stage-2 config is checked when it starts)."""
    config_checks.validate(cfg, num_devices=1)


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


def _on_medpix_labels(cfg: Any, path: str, label_sets: Any) -> dict[str, float]:
    """A finished run's figures on MedPix's own labels (`medpix_labels.run_figures`), cached in the run and reused
    only when made with the same settings (the labels' section and the probe); an evaluation that found no label
    set is not cached."""
    probe = config_lib.load_config("eval", "medpix").probe
    probe.fractions, probe.seeds = (1.0,), (0,)  # one probe, on every train label
    out = os.path.join(path, LABELS_FILE)
    settings = json.loads(json.dumps({"medpix": cfg.medpix.to_dict(), "probe": probe.to_dict()}))  # as saved
    saved = _read_json(out) or {}
    if saved.get("settings") == settings:
        return saved["figures"]
    t = time.time()
    figures = medpix_labels.run_figures(path, cfg.medpix, probe, cfg.stage2.ontology, label_sets=label_sets)
    if figures:
        artifacts.write_json(out, {"settings": settings, "figures": figures})
    print(f"ablation: {path} evaluated on MedPix's labels ({time.time() - t:.0f}s)", flush=True)
    return figures


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Runs every (arm, seed), then writes ablation.json and ablation.md; returns the summary."""
    validate(cfg)
    t0 = time.time()
    teachers = {"trained": cfg.teacher_workdir or os.path.join(workdir, "teacher"),
                "raw": os.path.join(workdir, "teacher_raw")}
    check_workdir(cfg, workdir, teachers)  # before any training: a stale run is refused at once
    label_sets = None  # MedPix's label sets, read once and before training, so a bad folder fails fast
    if cfg.medpix.dir:
        m = cfg.medpix
        label_sets = medpix_labels.read_label_sets(m.dir, common.load_ontology_from_config(cfg.stage2.ontology),
                                                   m.location_field, int(m.min_test_images))
    if any(ARMS[a].teacher == "trained" for a in cfg.arms) and not cfg.teacher_workdir:
        _teacher(cfg.teacher, teachers["trained"])
    if any(ARMS[a].teacher == "raw" for a in cfg.arms):
        _teacher(raw_teacher_config(cfg.teacher), teachers["raw"])
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in cfg.arms}
    more: dict[str, list[dict[str, float]]] = {arm: [] for arm in cfg.arms}  # on eval_test_pairs test pairs
    seconds: dict[str, float] = {}
    reused: set[str] = set()
    earlier = (_read_json(os.path.join(workdir, "ablation.json")) or {}).get("seconds", {})
    reeval = label_seconds = 0.0
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
            if label_sets is not None:
                t = time.time()
                result = {**result, **_on_medpix_labels(cfg, path, label_sets)}
                label_seconds += time.time() - t
            runs[arm].append(result)
            if cfg.eval_test_pairs:
                t = time.time()
                more[arm].append(_on_more_test_pairs(cfg, arm, seed, teachers, workdir))
                reeval += time.time() - t
    # The training time, with the reused runs' own time; the re-evaluations (label ones too) are counted apart.
    total = round(time.time() - t0 - reeval - label_seconds + sum(seconds[k] for k in reused), 1)
    summary = ablation_tables.write_tables(workdir, runs, cfg.seeds, seconds, total, label_seconds=label_seconds)
    names = ["ablation.md"]
    if cfg.eval_test_pairs:
        ablation_tables.write_tables(workdir, more, cfg.seeds, seconds, total, int(cfg.eval_test_pairs), reeval)
        names.append(f"ablation_test{int(cfg.eval_test_pairs)}.md")
    print(f"ablation done in {total:.0f}s; results in {', '.join(os.path.join(workdir, n) for n in names)}", flush=True)
    return summary
