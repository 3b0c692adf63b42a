"""Predictions under two HPO releases: which images' top terms changed, and why.

The same image embeddings are ranked against each release's candidate embeddings (each release's names through
the run's text tower, both from the phenotype cache). A term that enters or leaves an image's top-k is explained by
the release diff (ontology/release_diff.py):

  new_child          a term the new release adds: its `parent`, and its nearest `ancestor_in_old_top` (or null)
  replaces_obsolete  a new candidate that is the successor (replaced_by / merge) of an obsoleted old candidate
  obsoleted          the old term is obsolete in the new release; `replaced_by` names its successor (or null)
  renamed            same id, new name: a new text, so a new embedding and score
  rank_moved         nothing about the term changed (its cosine is the same): terms entering or leaving moved it
  implied            (cases) a case's profile now lists it under a descendant that entered (evaluate/cases.py)
A term in both top-k lists whose name changed is reported as `renamed` too. Cases compare their image terms (the
profile without the note: linking a note is not part of what a release changes here).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.data.manifest import read_manifest
from phenolip_jax.evaluate import cases
from phenolip_jax.ontology import Ontology, OntologyFormatError, load_ontology
from phenolip_jax.ontology.release_diff import ReleaseDiff, diff_releases, label_mapping

RELEASE_DIFF_JSON = "release_diff.json"
RELEASE_DIFF_MD = "release_diff.md"
MD_ITEMS = 20  # images (cases) listed one by one in the Markdown summary (all are in the JSON)


def check_diff_against(value: Any) -> None:
    """Refuses a config.diff_against that is neither '', 'run' nor an existing file (before anything loads)."""
    if not isinstance(value, str) or (value not in ("", "run") and not os.path.isfile(value)):
        raise ValueError(f"config.diff_against={value!r} must be '' (off), 'run' (the release the run recorded) "
                         "or the path of an hp.obo file")


def recorded_release(model: Any) -> Ontology | None:
    """The release the run recorded, loaded again (checked by sha256); None when the run recorded none or its file
    is gone or changed. The model's own ontology when that is the recorded release."""
    rec = model.ontology_release
    if not rec or not rec.get("sha256"):
        return None
    if model.ontology.source_sha256 == rec["sha256"]:
        return model.ontology
    try:
        onto = load_ontology(rec.get("obo_path") or None)
    except (OSError, OntologyFormatError):
        return None
    return onto if onto.source_sha256 == rec["sha256"] else None


def diff_release(model: Any, diff_against: str) -> Ontology:
    """The old release of config.diff_against: 'run' = the one the run recorded, else an hp.obo path."""
    if diff_against != "run":
        return load_ontology(diff_against)
    onto = recorded_release(model)
    if onto is None:
        raise ValueError(f"config.diff_against='run': {model.path or 'this model'} recorded no HPO release that can "
                         f"be loaded again (recorded: {model.ontology_release}); give the old hp.obo's path")
    return onto


def release_view(model: Any, onto: Ontology) -> Any:
    """A copy of `model` reading phenotype names from release `onto`; params and compiled towers are shared."""
    view = copy.copy(model)
    vars(view)["ontology"] = onto  # where functools.cached_property keeps Model.ontology
    return view


def label_report(trained: Ontology, onto: Ontology, manifest: str = "") -> dict[str, Any]:
    """Eval under another release than the run's: the ontology counts and, for a manifest, how its labels map
    (replaced_by / alt_id) into release `onto` and which cannot (their records are dropped as 'obsolete_hpo')."""
    out = dict(run_release=trained.release, ontology=diff_releases(trained, onto).summary())
    if manifest:
        out["labels"] = labels = label_mapping((h for r in read_manifest(manifest) for h in r.hpo_ids), onto)
        print(f"eval: HPO release {onto.release} (the run trained with {trained.release}): of {labels['labels']} "
              f"labels, {labels['remapped_labels']} map to a replacement and {labels['unmapped_labels']} to none "
              f"({', '.join(labels['unmapped']) or '-'})", flush=True)
    return out


def _nearest_in(h: str, onto: Ontology, ids: set[str]) -> str | None:
    """The nearest is-a ancestor of `h` among `ids` (fewest hops, then id), or None."""
    found = [(int(hops), onto.ids[int(a)]) for a, hops in zip(onto.ancestors(h), onto.ancestor_hops(h))
             if onto.ids[int(a)] in ids]
    return min(found)[1] if found else None


def entered_reason(h: str, diff: ReleaseDiff, new: Ontology, old_candidates: set[str],
                   old_top: set[str]) -> dict[str, Any]:
    """Why `h` is in the new top-k (or candidates) and was not in the old."""
    if h in diff.added:
        parents = [new.ids[int(p)] for p in new.parents(h)]
        return dict(reason="new_child", parent=parents[0] if parents else None,
                    ancestor_in_old_top=_nearest_in(h, new, old_top))
    if h not in old_candidates:
        replaces = sorted(o for o in old_candidates if diff.obsoleted.get(o) == h)
        return dict(reason="replaces_obsolete", replaces=replaces) if replaces else dict(reason="new_candidate")
    if h in diff.renamed:
        return dict(reason="renamed", old_name=diff.renamed[h][0])
    return dict(reason="rank_moved")


def left_reason(h: str, diff: ReleaseDiff, new_candidates: set[str]) -> dict[str, Any]:
    """Why `h` was in the old top-k (or candidates) and is not in the new."""
    if h in diff.obsoleted:
        out = dict(reason="obsoleted", replaced_by=diff.obsoleted[h])
        return dict(out, why=diff.why_unmapped[h]) if h in diff.why_unmapped else out
    if h not in new_candidates:
        return dict(reason="not_a_candidate")
    if h in diff.renamed:
        return dict(reason="renamed", new_name=diff.renamed[h][1])
    return dict(reason="rank_moved")


def image_changes(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], diff: ReleaseDiff, onto: Ontology,
                  old_candidates: set[str], new_candidates: set[str]) -> list[dict[str, Any]]:
    """The changes between one image's (or case's) old and new top-k rows (rank, hpo_id, name; a case's terms may
    list the ancestors they imply): entered, left, renamed."""
    before, after = {p["hpo_id"]: p for p in old}, {p["hpo_id"]: p for p in new}
    implied = {i["hpo_id"]: p["hpo_id"] for p in new for i in p.get("implies", [])}
    out = []
    for h, p in after.items():
        if h not in before:
            why = entered_reason(h, diff, onto, old_candidates, set(before))
            out.append(dict(change="entered", hpo_id=h, name=p["name"], old_rank=None, new_rank=p["rank"], **why))
        elif before[h]["name"] != p["name"]:
            out.append(dict(change="renamed", hpo_id=h, name=p["name"], old_rank=before[h]["rank"],
                            new_rank=p["rank"], reason="renamed", old_name=before[h]["name"]))
    for h, p in before.items():
        if h not in after:
            why = left_reason(h, diff, new_candidates)
            if why["reason"] == "rank_moved" and h in implied:  # a case lists it under a new descendant
                why = dict(reason="implied", by=implied[h])
            out.append(dict(change="left", hpo_id=h, name=p["name"], old_rank=p["rank"], new_rank=None, **why))
    return out


@dataclasses.dataclass(frozen=True)
class Ranking:
    """One release's side of a comparison: the model reading it, its candidates, their embeddings, top-k rows."""

    model: Any
    ids: Sequence[str]
    phen: np.ndarray  # [C, D]
    rows: Sequence[Sequence[dict[str, Any]]]  # per image


def diff_rows(names: Sequence[str], old_rows: Sequence[Sequence[dict[str, Any]]],
              new_rows: Sequence[Sequence[dict[str, Any]]], diff: ReleaseDiff, new: Ontology, old_ids: set[str],
              new_ids: set[str], key: str) -> dict[str, Any]:
    """Every item (image or case, named by `key`) whose top-k changed, with counts per change and reason."""
    changed = []
    for name, before, after in zip(names, old_rows, new_rows):
        changes = image_changes(before, after, diff, new, old_ids, new_ids)
        if changes:
            top1 = [r[0]["hpo_id"] if r else None for r in (before, after)]
            changed.append({key: name, "top1_changed": top1[0] != top1[1], "old_top1": top1[0],
                            "new_top1": top1[1], "changes": changes})
    reasons = Counter(f"{c['change']}/{c['reason']}" for item in changed for c in item["changes"])
    return dict(total=len(names), changed=len(changed), top1_changed=sum(i["top1_changed"] for i in changed),
                reasons=dict(sorted(reasons.items())), changes=changed)


def diff_predictions(images: Sequence[str], old: Ranking, new: Ranking,
                     cases: tuple[Sequence[str], Sequence[Any], Sequence[Any]] | None = None) -> dict[str, Any]:
    """The release-diff report: ontology counts, candidate-set changes, every image (and case: (case ids, old rows,
    new rows)) whose top-k changed."""
    o_onto, n_onto = old.model.ontology, new.model.ontology
    diff = diff_releases(o_onto, n_onto)
    old_set, new_set = set(old.ids), set(new.ids)
    candidates = dict(
        old=len(old_set), new=len(new_set),
        entered={h: entered_reason(h, diff, n_onto, old_set, set())["reason"] for h in new.ids if h not in old_set},
        left={h: left_reason(h, diff, new_set)["reason"] for h in old.ids if h not in new_set},
        renamed={h: dict(old=diff.renamed[h][0], new=diff.renamed[h][1]) for h in new.ids if h in diff.renamed})
    report = dict(ontology=diff.summary(), candidates=candidates,
                  images=diff_rows(images, old.rows, new.rows, diff, n_onto, old_set, new_set, "image"))
    if cases is not None:
        report["cases"] = diff_rows(*cases, diff, n_onto, old_set, new_set, "case")
    return report


def case_rows(cfg: Any, side: Ranking, groups: Sequence[Any], emb: np.ndarray, kept: Sequence[str],
              logit_scale: float, temperature: float) -> list[list[dict[str, Any]]]:
    """Per case, its image terms under one release as ranked rows: its profile (evaluate/cases.py) without the note,
    which a release does not change."""
    at, out = {p: i for i, p in enumerate(kept)}, []
    for case in groups:
        mine = [at[p] for p in case.images if p in at]
        cos, probs = cases.image_probabilities(emb[mine], side.phen, logit_scale, temperature)
        profile = cases.profile_case(side.model.ontology, case.case_id, side.ids, probs, cos, aggregate=cfg.aggregate,
                                     top_k=int(cfg.top_k), min_probability=float(cfg.case_min_probability))
        out.append([dict(t, rank=r) for r, t in enumerate(profile["present"], 1)])
    return out


def compare_releases(cfg: Any, old: Ranking, new: Ranking, emb: np.ndarray, kept: Sequence[str],
                     groups: Sequence[Any], temperature: float, out_dir: str) -> dict[str, Any]:
    """Predict's diff step: the report of `old` against `new` for every image (and case) -> OUT/release_diff.json
    and .md; returns the summary's fields."""
    by_case = None
    if groups:
        scale = new.model.logit_scale
        by_case = ([c.case_id for c in groups], case_rows(cfg, old, groups, emb, kept, scale, temperature),
                   case_rows(cfg, new, groups, emb, kept, scale, temperature))
    report = diff_predictions([os.path.relpath(p, cfg.images) for p in kept], old, new, by_case)
    out = dict(outputs=write_release_diff(out_dir, report), old_release=old.model.ontology.release,
               changed_images=report["images"]["changed"], top1_changed=report["images"]["top1_changed"])
    return dict(out, changed_cases=report["cases"]["changed"]) if by_case else out


def _describe(c: dict[str, Any]) -> str:
    """One change as Markdown text: '+ HP:... name (new child of HP:...; rank - -> 3)'."""
    sign = {"entered": "+", "left": "-", "renamed": "~"}[c["change"]]
    anc = c.get("ancestor_in_old_top")
    in_top = "" if not anc else " (in the old top-k)" if anc == c["parent"] else f" (under {anc}, in the old top-k)"
    why = {"new_child": lambda: f"new child of {c['parent']}{in_top}",
           "replaces_obsolete": lambda: f"replaces obsoleted {', '.join(c['replaces'])}",
           "obsoleted": lambda: f"obsoleted, replaced by {c['replaced_by']}" if c["replaced_by"]
           else "obsoleted without a replacement",
           "renamed": lambda: f"renamed from '{c['old_name']}'" if "old_name" in c else f"renamed to '{c['new_name']}'",
           "implied": lambda: f"implied by {c['by']}, listed under it",
           }.get(c["reason"], lambda: c["reason"].replace("_", " "))()
    return f"{sign} {c['hpo_id']} {c['name']} ({why}; rank {c['old_rank'] or '-'} -> {c['new_rank'] or '-'})"


def _section(part: dict[str, Any], key: str) -> list[str]:
    """The Markdown of one diff_rows block: counts, reasons, the first MD_ITEMS items."""
    lines = [f"{key.capitalize()}s: {part['changed']} of {part['total']} have a changed top-k "
             f"({part['top1_changed']} a changed top-1).", "", "| change / reason | terms |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in part["reasons"].items()]
    shown = part["changes"][:MD_ITEMS]
    if shown:
        lines += ["", f"## {key.capitalize()}s ({len(shown)} of {part['changed']}; all in {RELEASE_DIFF_JSON})", ""]
        for item in shown:
            top1 = f" top-1 {item['old_top1']} -> {item['new_top1']}" if item["top1_changed"] else ""
            lines.append(f"- `{item[key]}`{top1}")
            lines += [f"  - {_describe(c)}" for c in item["changes"]]
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of a release-diff report."""
    o, cand = report["ontology"], report["candidates"]
    lines = [f"# HPO release diff: {o['old_release'] or '?'} -> {o['new_release'] or '?'}", "",
             f"Ontology: {o['added']} terms added, {o['renamed']} renamed, {o['obsoleted']} obsoleted "
             f"({o['obsoleted_replaced']} with a replacement).",
             f"Candidates: {cand['old']} -> {cand['new']} ({len(cand['entered'])} entered, {len(cand['left'])} left, "
             f"{len(cand['renamed'])} renamed).", ""]
    lines += _section(report["images"], "image")
    if "cases" in report:
        lines += _section(report["cases"], "case")
    return "\n".join(lines).rstrip() + "\n"


def write_release_diff(out_dir: str, report: dict[str, Any]) -> list[str]:
    """OUT/release_diff.json (every change) and OUT/release_diff.md (the summary); returns their paths."""
    paths = [os.path.join(out_dir, RELEASE_DIFF_JSON), os.path.join(out_dir, RELEASE_DIFF_MD)]
    with open(paths[0], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(markdown(report))
    return paths
