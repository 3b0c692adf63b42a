"""The eval stage: load a model, read the dataset, run the configured evaluators, write the report."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from phenolip_jax import artifacts, config_tools, inference
from phenolip_jax.data import demo, dicom, sources
from phenolip_jax.evaluate import calibrate, datasets, evaluators, medpix_labels, prediction_diff, report, unseen

_HEADLINE = (("retrieval", "image_to_text", "r@10"), ("retrieval", "text_to_image", "r@10"),
             ("retrieval", "image_to_phenotype", "r@10"), ("retrieval", "phenotype_to_image", "r@10"),
             ("zero_shot", None, "top1"), ("zero_shot", None, "mean_per_class_recall"), ("zero_shot", None, "auc"),
             ("matching", None, "r@10"), ("matching", None, "micro_f1"), ("hierarchy", None, "exact"),
             ("hierarchy", None, "hierarchical"), ("unseen", None, "zs_seen_top1"), ("unseen", None, "zs_unseen_top1"),
             ("unseen", None, "zs_unseen_hier_top1"), ("calibration", None, "temperature"),
             ("calibration", "before", "ece"), ("calibration", "after", "ece"))


def read_candidates(path: str) -> list[str]:
    """Candidate HPO ids from a JSON list (of ids, or of objects with `hpo_id`, as the demo's phenotypes.json) or
    a text file (one id per line, '#' comments)."""
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("["):
        items = json.loads(text)
        return [str(x["hpo_id"]) if isinstance(x, dict) and "hpo_id" in x else str(x) for x in items]
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


# The demo's sizes when neither the eval config nor the run names them: configs/stage2.py's defaults.
DEMO_DEFAULTS = dict(num_phenotypes=150, train_pairs=3000, val_pairs=300, test_pairs=600)


def demo_run_config(checkpoint: str) -> dict[str, Any] | None:
    """The saved config.json of the run behind `checkpoint` when it trained stage 2 on the generated demo, else
    None (another source, a stage-1 run, an open_clip dir or no config saved)."""
    try:
        _, root, _ = inference.locate(checkpoint)
    except FileNotFoundError:
        return None
    path = os.path.join(root, config_tools.CONFIG_FILE)
    run = artifacts.read_json(path) if os.path.exists(path) else {}
    return run if run.get("stage") == "stage2" and run.get("data", {}).get("source") == "demo" else None


def run_demo_settings(cfg: Any) -> tuple[int, dict[str, int], str]:
    """(seed, demo sizes, demo folder) of the demo the checkpoint's run trained on (its config.json), each
    overridden by the eval config's `data.demo_seed` (>= 0), `data.demo` (> 0) and `data.demo_dir` fields."""
    run = demo_run_config(cfg.checkpoint) or {}
    trained_on_demo = bool(run)
    run_data = run["data"] if trained_on_demo else {}
    d = cfg.data
    seed = int(d.demo_seed) if d.demo_seed >= 0 else int(run.get("seed", 0)) if trained_on_demo else 0
    sizes = {k: int(d.demo[k]) if d.demo[k] > 0 else int(run_data.get("demo", {}).get(k, v))
             for k, v in DEMO_DEFAULTS.items()}
    run_dir = run_data.get("demo_dir") or ""
    folder = d.demo_dir or (run_dir if run_dir and os.path.isdir(run_dir) else "")
    return seed, sizes, folder


def eval_manifest(cfg: Any, onto: Any, image_size: int | None, verbose: bool = True) -> tuple[str, str]:
    """(manifest, image root) of a 'demo' or 'manifest' config.data; a demo is generated with release `onto`."""
    d = cfg.data
    if d.kind == "demo":
        size = d.demo_image_size or image_size or 64  # the generator's cache key includes the size
        seed, sizes, folder = run_demo_settings(cfg)
        if verbose:
            print(f"eval: the demo of seed {seed}, {sizes} ({folder or 'cache'})", flush=True)
        root = demo.generate_demo_dataset(folder or None, image_size=size, ontology=onto, seed=seed, **sizes)
        return os.path.join(str(root), "manifest.jsonl"), str(root)
    if not d.manifest:
        raise ValueError("config.data.manifest is empty (config.data.kind='manifest')")
    return d.manifest, d.image_root


def load_data(cfg: Any, onto: Any, image_size: int | None, trained: Any = None) -> tuple[
        str, datasets.PairSet | None, datasets.ClassificationSet | None]:
    """(name, pairs or None, classification set or None) for config.data, labels read in release `onto`; a demo is
    drawn from `trained` (the run's release, when another) as the run's was, its labels mapped through replaced_by."""
    d = cfg.data
    if d.kind in ("demo", "manifest"):
        manifest, image_root = eval_manifest(cfg, trained or onto, image_size)
        pairs = datasets.load_pairs(manifest, image_root, onto, strict=d.strict, allow_absolute=d.allow_absolute_paths)
        return d.name or os.path.basename(os.path.dirname(os.path.abspath(manifest))), pairs, _single(d, pairs, onto)
    if d.kind in ("arrayrecord", "tfds"):
        pairs = _lazy_pairs(d, onto)
        return d.name or d.kind, pairs, _single(d, pairs, onto)
    if d.kind == "folder":
        return d.name or os.path.basename(os.path.normpath(d.path)), None, datasets.load_image_folder(
            d.path, d.class_map, onto, d.name)
    if d.kind == "medmnist":
        cls = datasets.load_medmnist(d.path, d.class_map, onto, d.task, d.name)
        return cls.name, None, cls
    raise ValueError(f"config.data.kind={d.kind!r}: use demo, manifest, arrayrecord, tfds, folder or medmnist")


def _single(d: Any, pairs: datasets.PairSet, onto: Any) -> datasets.ClassificationSet | None:
    """Single-phenotype images of the pairs as a classification set (None when there are none)."""
    try:
        return datasets.classification_from_pairs(pairs, onto, name=d.name or "single-phenotype images")
    except ValueError:
        return None


def _lazy_pairs(d: Any, onto: Any, calibration_split: str = "") -> datasets.PairSet:
    """The evaluated split of packed shards / a tfds dataset (only that split is read), or the calibration one."""
    needs = {"arrayrecord": ("packed_dir",), "tfds": ("tfds_dir", "tfds_name")}[d.kind]
    for field in needs:
        if not d[field]:
            raise ValueError(f"config.data.{field} is empty (config.data.kind={d.kind!r} needs it)")
    splits, report = sources.read_lazy_splits(d.kind, packed_dir=d.packed_dir, tfds_dir=d.tfds_dir,
                                              tfds_name=d.tfds_name)
    split = calibration_split or d.split
    if calibration_split and split not in splits:
        raise calibrate.missing_split("config.calibration.split", split, splits)
    if split not in splits:
        raise ValueError(f"config.data.split={d.split!r} is not in {d.kind} data (have {sorted(splits)})")
    sources.check_lazy_splits({split: splits[split]}, report, onto)
    if not calibration_split:
        print(f"eval data: {report}", flush=True)
    return datasets.pairs_from_split(splits[split], split)


def _limit(split: datasets.Split, n: int) -> datasets.Split:
    return split if not n or len(split) <= n else datasets.Split(split.images[:n], split.labels[:n])


def _phenotype_tasks(cfg: Any, onto: Any, pairs: datasets.PairSet | None,
                     cls: datasets.ClassificationSet | None) -> tuple[Any, list, list[str]]:
    """(test images, gold HPO sets, candidate HPO ids) for matching / hierarchy / the phenotype map."""
    if pairs is not None:
        images, gold = _limited_pairs(cfg, pairs).images()
        if not cfg.data.candidates:
            return images, gold, sorted({t for g in gold for t in g})
        # The records' ids were resolved to current terms; resolve the candidates (alt / obsolete ids) alike.
        cands = list(dict.fromkeys(onto.ids[onto.index(c)] for c in read_candidates(cfg.data.candidates)))
        return images, gold, cands
    if cls is not None and all(h is not None for h in cls.class_hpo) and not cls.multi_label:
        s = _limit(cls.splits["test"], cfg.data.max_images)
        return s.images, [[cls.class_hpo[int(y)]] for y in s.labels], list(cls.class_hpo)
    return None, [], []


def run_evaluators(cfg: Any, encoder: Any, onto: Any, pairs: datasets.PairSet | None,
                   cls: datasets.ClassificationSet | None) -> dict[str, Any]:
    """Every configured evaluator's results, plus `skipped` {name: reason}."""
    enc = evaluators.CachedEncoder(encoder)
    templates = tuple(cfg.templates)
    images, gold, cands = _phenotype_tasks(cfg, onto, pairs, cls)
    m = cfg.matching
    jobs = {
        "retrieval": lambda: evaluators.cross_modal_retrieval(
            enc, _limited_pairs(cfg, pairs), cands, tuple(cfg.ks), templates) if pairs is not None else _skip(
            "needs image-caption pairs (a manifest)"),
        "matching": lambda: evaluators.phenotype_matching(
            enc, images, gold, cands, k=None if m.threshold >= -1 else m.k,
            threshold=m.threshold if m.threshold >= -1 else None, ks=tuple(m.ks),
            templates=templates) if pairs is not None else _skip("needs multi-phenotype annotations (a manifest)"),
        "zero_shot": lambda: evaluators.zero_shot_classification(
            enc, _limited_set(cfg, cls), templates) if cls is not None else _skip("no classification set"),
        "hierarchy": lambda: evaluators.hierarchy_scores(
            enc, images, gold, cands, onto, cfg.hierarchy.max_hops, templates) if cands else _skip(
            "classes are not HPO phenotypes"),
        "unseen": lambda: unseen.evaluate_encoder(
            enc, images, gold, cands, _train_hpo(pairs), onto, cfg.hierarchy.max_hops, templates)
        if pairs is not None and _train_hpo(pairs) and cands else _skip("needs a manifest with a 'train' split"),
        "linear_probe": lambda: evaluators.linear_probe_eval(
            enc, cls, tuple(cfg.probe.fractions), tuple(cfg.probe.seeds), tuple(cfg.probe.cs))
        if cls is not None else _skip("no labelled classification set"),
    }
    results: dict[str, Any] = {"skipped": {}}
    for name in cfg.evaluators:
        if name not in jobs:
            raise ValueError(f"unknown evaluator {name!r}; known: {sorted(jobs)}")
        t0 = time.time()
        try:
            results[name] = jobs[name]()
            print(f"eval: {name} done in {time.time() - t0:.1f}s", flush=True)
        except evaluators.Skip as e:
            results["skipped"][name] = str(e)
            print(f"eval: {name} skipped: {e}", flush=True)
    results["_phenotypes"] = cands
    return results


def _train_hpo(pairs: datasets.PairSet) -> set[str]:
    """HPO ids of the manifest's train split: the phenotypes a model trained on it has seen."""
    return {h for hs, s in zip(pairs.hpo_ids, pairs.splits) if s == "train" for h in hs}


def _skip(reason: str):
    raise evaluators.Skip(reason)


def _limited_pairs(cfg: Any, pairs: datasets.PairSet) -> datasets.PairSet:
    """The evaluated split's pairs, cut to config.data.max_images pairs when set."""
    test = pairs.select(cfg.data.split)
    n = cfg.data.max_images
    return test if not n else datasets.PairSet(*(x[:n] for x in (
        test.image_paths, test.image_ids, test.captions, test.hpo_ids, test.splits)))


def _limited_set(cfg: Any, cls: datasets.ClassificationSet) -> datasets.ClassificationSet:
    if not cfg.data.max_images or "test" not in cls.splits:
        return cls
    splits = dict(cls.splits, test=_limit(cls.splits["test"], cfg.data.max_images))
    return datasets.ClassificationSet(cls.name, cls.class_names, cls.class_texts, cls.class_hpo, splits, cls.task)


def make_figures(cfg: Any, results: dict[str, Any], encoder: Any, onto: Any, out_dir: str) -> dict[str, str]:
    """The report's PNGs: recall@K curves, per-organ-system accuracy, the phenotype-embedding map."""
    figs: dict[str, str] = {}
    if "retrieval" in results:
        figs["recall_at_k"] = report.plot_recall_curves(results["retrieval"], os.path.join(out_dir, "recall_at_k.png"))
    if "hierarchy" in results and results["hierarchy"]["per_organ_system"]:
        figs["organ_system_accuracy"] = report.plot_organ_accuracy(
            results["hierarchy"]["per_organ_system"], os.path.join(out_dir, "organ_system_accuracy.png"))
    phen = list(results.get("_phenotypes") or [])[: cfg.map_max_phenotypes]
    if len(phen) >= 2:
        # Image prompts for a two-tower model; a stage-1 knowledge encoder reads bare names (its own templates).
        templates = tuple(cfg.templates) if getattr(encoder, "has_images", True) else None
        emb = encoder.encode_phenotypes(phen, templates)
        groups = [(evaluators.organ_system_names(onto, [h]) or ["(none)"])[0] for h in phen]
        names = [onto.names[onto.index(h)] for h in phen]
        figs["phenotype_map"] = report.plot_phenotype_map(emb, groups, os.path.join(out_dir, "phenotype_map.png"),
                                                          labels=names)
    return figs


def _calibrate(cfg: Any, encoder: Any, model: Any, onto: Any, pairs: datasets.PairSet | None,
               cls: datasets.ClassificationSet | None, results: dict[str, Any], figures: dict[str, str],
               out_dir: str) -> None:
    """Fits the temperature on config.calibration.split into results['calibration'] (+ reliability.png)."""
    if pairs is not None and cfg.data.kind in ("arrayrecord", "tfds"):  # only the evaluated split was read
        pairs = calibrate.merge_pairs(pairs, _lazy_pairs(cfg.data, onto, cfg.calibration.split))
    t0 = time.time()
    try:
        results["calibration"], figures["reliability"] = calibrate.run(
            cfg, encoder, model.logit_scale, pairs, cls, model.path, out_dir,
            candidates=results.get("_phenotypes") if cfg.data.candidates else None)
        print(f"eval: calibration done in {time.time() - t0:.1f}s", flush=True)
    except evaluators.Skip as e:
        results["skipped"]["calibration"] = str(e)
        print(f"eval: calibration skipped: {e}", flush=True)


def headline(results: dict[str, Any]) -> dict[str, float]:
    """The few numbers printed at the end (percent-free fractions)."""
    out = {}
    for section, sub, key in _HEADLINE:
        block = results.get(section) or {}
        block = block.get(sub, {}) if sub else block
        if isinstance(block.get(key), (int, float, np.floating)):
            out[f"{section}/{sub + '/' if sub else ''}{key}"] = round(float(block[key]), 4)
    return out


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Evaluates `cfg.checkpoint` on `cfg.data`; writes eval_results.json, report.md and PNGs; returns results."""
    if not cfg.checkpoint:
        raise ValueError("config.checkpoint is empty: pass --config.checkpoint=WORKDIR (stage-1 / stage-2 workdir, "
                         "a checkpoint folder inside one, or an open_clip directory)")
    calibrate.validate(cfg)
    dicom.configure_from(cfg.data, "config.data")
    t0 = time.time()
    out_dir = cfg.output_dir or workdir
    os.makedirs(out_dir, exist_ok=True)
    model = inference.load(cfg.checkpoint, tokenizer_dir=cfg.tokenizer_dir or None, batch_size=cfg.batch_size)
    inference.use_ontology(model, cfg.ontology)
    onto = model.ontology
    trained = prediction_diff.recorded_release(model)
    name, pairs, cls = load_data(cfg, onto, model.image_size, trained)
    print(f"eval: {model.kind} model from {model.path}; dataset {name} ({time.time() - t0:.0f}s)", flush=True)
    encoder = evaluators.CachedEncoder(model)  # shared with calibration: each image set is encoded once
    labels = medpix_labels.read_configured(cfg, onto)  # config.medpix.dir: read first, so a bad folder fails fast
    results = run_evaluators(cfg, encoder, onto, pairs, cls)
    if labels is not None:  # with the hierarchy evaluator's images and candidates, for its chance level
        results["medpix_labels"] = medpix_labels.evaluate_and_write(
            cfg, encoder, labels, out_dir, (onto, *_phenotype_tasks(cfg, onto, pairs, cls)[1:]))
    figures = make_figures(cfg, results, model, onto, out_dir)
    if (cfg.get("calibration") or {}).get("fit"):
        _calibrate(cfg, encoder, model, onto, pairs, cls, results, figures, out_dir)
    results.pop("_phenotypes", None)
    if trained is not None and trained is not onto:  # evaluated with another release than the run's
        kind = cfg.data.kind
        manifest = eval_manifest(cfg, trained, model.image_size, False)[0] if kind in ("demo", "manifest") else ""
        results["release"] = prediction_diff.label_report(trained, onto, manifest)
    results.update(dataset=name, model=model.path, model_kind=model.kind, templates=list(cfg.templates),
                   config=cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg), seconds=round(time.time() - t0, 1))
    res_path, md_path = report.write_report(results, out_dir, figures)
    print(json.dumps(headline(results)), flush=True)
    print(f"eval done in {time.time() - t0:.0f}s: {res_path}, {md_path}, {len(figures)} figures", flush=True)
    return results
