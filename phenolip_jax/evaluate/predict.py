"""The predict stage: top-k HPO terms for each image of an unlabelled folder, written as CSV and JSONL.

Scores are cosine similarities between an image embedding and each candidate phenotype's template-ensembled
text embedding (`Model.encode_phenotypes`); ranks are over the candidates only. Probabilities are the softmax over
the candidates of logit_scale x cosine / T, T from the run's calibration.json (evaluate/calibrate.py) or the config.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import config_checks, inference
from phenolip_jax.artifacts import output_folder
from phenolip_jax.data import demo, dicom
from phenolip_jax.data.images import IMAGE_EXTENSIONS
from phenolip_jax.evaluate import calibration, cases, phenotype_cache, prediction_diff
from phenolip_jax.evaluate.phenotype_cache import progress_bar
from phenolip_jax.evaluate.run import DEMO_DEFAULTS, demo_run_config, read_candidates
from phenolip_jax.ontology import organ_system_index
from phenolip_jax.ontology.release_diff import carry_over

PHENOTYPIC_ABNORMALITY = "HP:0000118"


def validate(cfg: Any) -> None:
    """Checks every field before anything loads; one line naming the field and what it allows (config_checks)."""
    config_checks.validate(cfg, num_devices=1)
    # Probability fields are checked here, as config_checks does not know them.
    if not isinstance(cfg.temperature, (int, float)) or cfg.temperature < 0:
        raise ValueError(f"config.temperature={cfg.temperature!r} must be >= 0 (0 = the run's calibration.json or 1)")
    if not isinstance(cfg.min_probability, (int, float)) or not 0 <= cfg.min_probability <= 1:
        raise ValueError(f"config.min_probability={cfg.min_probability!r} must lie in [0, 1] (0 = keep everything)")
    prediction_diff.check_diff_against(cfg.get("diff_against", ""))
    cases.validate_fields(cfg)


def list_images(folder: str) -> list[str]:
    """Image files under `folder` (recursive, sorted), by extension."""
    found = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise ValueError(f"config.images={folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def select_candidates(onto: Any, candidates: str = "", organ_system: str = "",
                      default: Sequence[str] | None = None) -> list[str]:
    """Candidate HPO ids: the listed ids (resolved, deduplicated), else `default` (when given and candidates is
    ''), else every term under HP:0000118; optionally only those under one organ system."""
    if default is not None and not candidates:
        ids = list(default)
    elif candidates and candidates != "all":
        ids = []
        for c in read_candidates(candidates):
            try:
                ids.append(onto.ids[onto.index(inference.canonical_hpo_id(c))])
            except KeyError as e:  # unknown or obsolete without replacement
                raise ValueError(f"config.candidates={candidates!r}: {str(e).strip(chr(34) + chr(39))}") from None
        ids = list(dict.fromkeys(ids))
    else:
        root = onto.index(PHENOTYPIC_ABNORMALITY)
        ids = [onto.ids[int(i)] for i in onto.subtree(root) if int(i) != root]
    if organ_system:
        organ = organ_system_index(onto, organ_system)
        ids = [h for h in ids if organ in set(int(o) for o in onto.organ_systems(h))]
    if not ids:
        raise ValueError(f"no candidate phenotypes left (config.candidates={candidates!r}, "
                         f"config.organ_system={organ_system!r})")
    return ids


def demo_candidates(onto: Any, checkpoint: str, trained: Any = None) -> list[str] | None:
    """The phenotypes of the generated demo a stage-2 run trained on (its seed and size), else None.

    A model trained on the demo has seen only these; ranking all 18K terms for its images means nothing. The demo
    was drawn from the run's release (`trained`, when loadable): in another release `onto` its terms map through
    replaced_by, and the terms `onto` adds beneath them join.
    """
    run = demo_run_config(checkpoint)
    if run is None:
        return None
    n = int(run["data"].get("demo", {}).get("num_phenotypes", DEMO_DEFAULTS["num_phenotypes"]))
    base = trained or onto
    terms, _ = demo.choose_phenotypes(base, n, int(run.get("seed", 0)))
    ids = [base.ids[int(t)] for t in terms]
    if base is onto:
        return ids
    ids, dropped = carry_over(ids, base, onto)
    if dropped:
        print(f"predict: {len(dropped)} demo phenotypes are obsolete in {onto.release} without a replacement: "
              f"{', '.join(dropped)}", flush=True)
    return ids


def encode_folder(model: Any, paths: Sequence[str], batch_size: int) -> tuple[np.ndarray, list[str], list[str]]:
    """(embeddings [M, D] of the readable images, their paths, the paths that could not be read: skipped)."""
    kept, failed, start = [], [], time.time()
    for lo in range(0, len(paths), batch_size):
        chunk = list(paths[lo:lo + batch_size])
        try:
            kept.append((chunk, model.encode_images(chunk)))
        except (OSError, ValueError):  # find the unreadable file(s) one by one
            for p in chunk:
                try:
                    kept.append(([p], model.encode_images([p])))
                except (OSError, ValueError) as err:
                    failed.append(p)
                    print(f"\npredict: skipped {p}: {err}", file=sys.stderr, flush=True)
        progress_bar(min(lo + batch_size, len(paths)), len(paths), start)
    names = [p for chunk, _ in kept for p in chunk]
    emb = np.concatenate([e for _, e in kept]) if kept else np.zeros((0, model.embed_dim), np.float32)
    return emb, names, failed


def top_probabilities(scores: np.ndarray, order: np.ndarray, logit_scale: float, temperature: float) -> np.ndarray:
    """[M, k] probabilities of the ranked candidates: softmax over every candidate of logit_scale x cosine / T."""
    out = np.zeros(order.shape, np.float64)
    for lo in range(0, len(scores), 1024):  # a block at a time: float64 [M, 18K] for a large folder is gigabytes
        p = calibration.softmax(logit_scale * scores[lo:lo + 1024], temperature)
        out[lo:lo + 1024] = np.take_along_axis(p, order[lo:lo + 1024], axis=1)
    return out


def top_k_rows(onto: Any, image_emb: np.ndarray, phen_emb: np.ndarray, ids: Sequence[str], k: int,
               logit_scale: float | None = None, temperature: float = 1.0,
               min_probability: float = 0.0) -> list[list[dict[str, Any]]]:
    """Per image, its k best candidates: rank, hpo_id, name, score (cosine), probability (with a logit_scale),
    organ systems (names); those below min_probability are dropped (an image may keep none)."""
    scores = image_emb @ phen_emb.T
    k = min(k, len(ids))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    probs = None if logit_scale is None else top_probabilities(scores, order, logit_scale, temperature)
    out = []
    for i, (row, top) in enumerate(zip(scores, order)):
        preds = []
        for rank, j in enumerate(top, start=1):
            p = None if probs is None else float(probs[i, rank - 1])
            if p is not None and p < min_probability:
                break  # ranked by cosine, so by probability too: the rest are lower
            idx = onto.index(ids[j])
            pred = dict(rank=rank, hpo_id=ids[j], name=onto.names[idx], score=round(float(row[j]), 6))
            if p is not None:
                pred["probability"] = round(p, 6)
            pred["organ_systems"] = [onto.names[int(o)] for o in onto.organ_systems(idx)]
            preds.append(pred)
        out.append(preds)
    return out


def temperature_for(cfg: Any, model: Any, n_candidates: int) -> tuple[float, str | None]:
    """(T, where it came from: 'config.temperature', the calibration.json path, or None = uncalibrated, T = 1)."""
    if cfg.temperature > 0:
        return float(cfg.temperature), "config.temperature"
    source = os.path.join(model.path, calibration.CALIBRATION_FILE)
    try:
        cal = calibration.load(model.path)
    except (ValueError, TypeError) as err:  # a damaged or hand-edited file
        raise ValueError(f"config.checkpoint={cfg.checkpoint!r}: {source} is unreadable ({err}); rerun eval with "
                         "--config.calibration.fit=True, delete it, or give --config.temperature") from None
    if cal is None:
        return 1.0, None
    if model.logit_scale is not None and not np.isclose(cal.logit_scale, model.logit_scale, rtol=1e-4):
        print(f"predict: WARNING {source} was fitted with logit_scale {cal.logit_scale:.4g}, this checkpoint has "
              f"{model.logit_scale:.4g}: rerun eval with --config.calibration.fit=True", flush=True)
    if cal.candidates != n_candidates:
        print(f"predict: note: T={cal.temperature:.4g} was fitted over {cal.candidates} candidates, these are "
              f"{n_candidates}: a softmax over another candidate set is not calibrated by it", flush=True)
    return float(cal.temperature), source


def write_outputs(out_dir: str, images: Sequence[str], predictions: Sequence[Sequence[dict[str, Any]]],
                  formats: Sequence[str]) -> list[str]:
    """predictions.csv (one row per image and rank) and/or predictions.jsonl (one object per image)."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if "csv" in formats:
        path = os.path.join(out_dir, "predictions.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "rank", "hpo_id", "name", "score", "probability", "organ_systems"])
            for image, preds in zip(images, predictions):  # an image that abstains has no row
                for p in preds:
                    w.writerow([image, p["rank"], p["hpo_id"], p["name"], p["score"], p.get("probability", ""),
                                "; ".join(p["organ_systems"])])
        written.append(path)
    if "jsonl" in formats:
        path = os.path.join(out_dir, "predictions.jsonl")
        with open(path, "w") as f:
            for image, preds in zip(images, predictions):
                f.write(json.dumps(dict(image=image, predictions=list(preds))) + "\n")
        written.append(path)
    return written


def load_model(cfg: Any) -> Any:
    """The Model of config.checkpoint (it must have an image tower), with the config's ontology settings."""
    model = inference.load(cfg.checkpoint, tokenizer_dir=cfg.tokenizer_dir or None, batch_size=int(cfg.batch_size),
                           templates=tuple(cfg.templates) or None)
    if not model.has_images:
        raise ValueError(f"config.checkpoint={cfg.checkpoint!r} is a stage-1 text encoder: {cfg.stage} needs a "
                         "model with an image tower (a stage-2 workdir or an open_clip directory)")
    inference.use_ontology(model, cfg.ontology)
    return model


def candidate_ids(cfg: Any, model: Any) -> list[str]:
    """config.candidates resolved (a demo run's own phenotypes by default), kept to config.organ_system if set."""
    demo_ids = None if cfg.candidates else demo_candidates(model.ontology, cfg.checkpoint,
                                                           prediction_diff.recorded_release(model))
    if demo_ids is not None:
        print(f"{cfg.stage}: {model.path} trained on the generated demo: candidates are its {len(demo_ids)} "
              "phenotypes (--config.candidates=all ranks every term under HP:0000118)", flush=True)
    return select_candidates(model.ontology, cfg.candidates, cfg.get("organ_system", ""), default=demo_ids)


def cached_phenotype_embeddings(model: Any, ids: Sequence[str], out_dir: str) -> tuple[np.ndarray, dict[str, Any]]:
    """phenotype_cache.phenotype_embeddings cached in the run's own folder, else in `out_dir`."""
    # The run's own folder first (a later predict into any output finds it there), else the output folder.
    cache_dirs = ([os.path.join(model.path, phenotype_cache.CACHE_DIRNAME)] if model.path else []) + [
        os.path.join(out_dir, phenotype_cache.CACHE_DIRNAME)]
    return phenotype_cache.phenotype_embeddings(model, ids, cache_dirs)


def old_release_ranking(cfg: Any, model: Any, emb: np.ndarray, temperature: float,
                        out_dir: str) -> prediction_diff.Ranking:
    """The same images ranked under config.diff_against's release (its names through the run's text tower)."""
    old = prediction_diff.release_view(model, prediction_diff.diff_release(model, cfg.diff_against))
    ids = candidate_ids(cfg, old)
    phen, _ = cached_phenotype_embeddings(old, ids, out_dir)
    rows = top_k_rows(old.ontology, emb, phen, ids, int(cfg.top_k), model.logit_scale, temperature,
                      float(cfg.min_probability))
    return prediction_diff.Ranking(old, ids, phen, rows)


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Predict top-k phenotypes for every image in cfg.images; writes the outputs and returns a summary."""
    validate(cfg)
    dicom.configure_from(cfg, "config")
    t0 = time.time()
    out_dir = output_folder(cfg, workdir)
    groups, paths = cases.read_cases(cfg.cases, cfg.images, list_images(cfg.images))  # a manifest picks the images
    model = load_model(cfg)
    ids = candidate_ids(cfg, model)
    print(f"predict: {len(paths)} images, {len(ids)} candidate phenotypes x {len(model.templates)} templates",
          flush=True)
    phen, cache = cached_phenotype_embeddings(model, ids, out_dir)
    emb, kept, failed = encode_folder(model, paths, int(cfg.batch_size))
    temperature, calibrated_by = temperature_for(cfg, model, len(ids))
    predictions = top_k_rows(model.ontology, emb, phen, ids, int(cfg.top_k), model.logit_scale, temperature,
                             float(cfg.min_probability))
    rel = [os.path.relpath(p, cfg.images) for p in kept]
    written = write_outputs(out_dir, rel, predictions, tuple(cfg.formats))
    by_case = (cases.write_case_outputs(cfg, model, groups, emb, kept, phen, ids, temperature, out_dir)
               if groups else {})
    written += by_case.pop("outputs", [])
    diffed = None if not cfg.get("diff_against") else prediction_diff.compare_releases(
        cfg, old_release_ranking(cfg, model, emb, temperature, out_dir),
        prediction_diff.Ranking(model, ids, phen, predictions), emb, kept, groups, temperature, out_dir)
    summary = dict(images=len(paths), predicted=len(kept), skipped=[os.path.relpath(p, cfg.images) for p in failed],
                   candidates=len(ids), top_k=min(int(cfg.top_k), len(ids)), outputs=written,
                   phenotype_cache=cache["cache"], phenotypes_cached=cache["cached"],
                   phenotypes_encoded=cache["encoded"], calibrated=calibrated_by is not None,
                   temperature=round(temperature, 6), calibration=calibrated_by,
                   logit_scale=None if model.logit_scale is None else round(model.logit_scale, 6),
                   min_probability=float(cfg.min_probability), abstained=sum(not p for p in predictions),
                   release=model.ontology.release, release_diff=diffed, **by_case,
                   seconds=round(time.time() - t0, 1))
    print(json.dumps(summary), flush=True)
    return summary
