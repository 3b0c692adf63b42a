"""Case-level phenotype profiles: a case's images and its note -> one hierarchy-consistent set of HPO terms.

A case is one patient: several images and an optional free-text note. Its image terms come from each image's
calibrated probabilities over the candidates, aggregated over the case's images: `mean` by default, as a
probability the model gives a random image of the case (one odd image moves it by 1/n; it does not grow with
the number of images, as `max` does, where more images mean more chances of one spurious high score); `max`
keeps a finding that only one view shows (a hand among face photographs). A term is kept when it is in the
case's `top_k` and its aggregated probability is at least `min_probability`.

The note's terms come from the HPO linker (link/: lexical names and synonyms, NegEx negation): linked mentions
are present, negated ones excluded, uncertain ones listed apart and asserted neither way. The profile is then
made consistent with the hierarchy: the note's exclusions win over image terms at or below them (a person
wrote the note; the model guesses); present terms are the most specific ones (an ancestor of a present term is
implied, listed under it, not twice); excluded terms are the most general ones (their descendants are implied
excluded), and an exclusion at or above a note-present term is dropped as contradictory.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax import config_lib
from phenolip_jax.evaluate import calibration, case_report, phenopacket
from phenolip_jax.link import lexical, obo_terms
from phenolip_jax.link.linker import Linker, allowed_terms, link_texts
from phenolip_jax.link.run import build_linker
from phenolip_jax.ontology import PHENOTYPIC_ABNORMALITY_ID, Ontology

AGGREGATES = ("mean", "max")  # config.aggregate
FOLDERS = "folders"  # config.cases: one sub-folder of config.images per case
NOTE_FILE = "note.txt"  # a case folder's note
_LINKERS: dict[tuple[str, str, str, str], Linker] = {}  # note_linker's, per (release, hp.obo, method, encoder)


@dataclasses.dataclass(frozen=True)
class Case:
    """One case: its id, its image files (absolute paths) and its note ('' when none)."""

    case_id: str
    images: tuple[str, ...]
    note: str = ""


def cases_from_folders(folder: str, images: Sequence[str]) -> tuple[list[Case], list[str]]:
    """(one Case per sub-folder of `folder` holding images, the images directly in `folder`: in no case)."""
    groups: dict[str, list[str]] = {}
    loose = []
    for path in images:
        parts = os.path.relpath(path, folder).split(os.sep)
        (loose.append(path) if len(parts) == 1 else groups.setdefault(parts[0], []).append(path))
    out = []
    for case_id in sorted(groups):
        note_path = os.path.join(folder, case_id, NOTE_FILE)
        note = open(note_path, encoding="utf-8").read().strip() if os.path.isfile(note_path) else ""
        out.append(Case(case_id, tuple(groups[case_id]), note))
    if not out:
        raise ValueError(f"config.cases='folders': config.images={folder!r} has no sub-folder holding images "
                         "(one sub-folder per case)")
    return out, loose


def _manifest_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) of a JSONL or CSV (header: image, case_id[, note]) case manifest."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.lower().endswith(".csv"):
            return [(f"{path}:{n}", dict(r)) for n, r in enumerate(csv.DictReader(f), start=2)]
        rows = []
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"config.cases: {path}:{n} is not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"config.cases: {path}:{n} is not a JSON object")
                rows.append((f"{path}:{n}", row))
        return rows


def cases_from_manifest(path: str, folder: str) -> list[Case]:
    """Cases of a manifest (`image` relative to `folder` or absolute, `case_id`, optional `note`), in first-seen
    order; a case's distinct notes are joined; an image in two cases, or missing, is refused."""
    images: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for where, row in _manifest_rows(path):
        case_id, image = str(row.get("case_id") or "").strip(), str(row.get("image") or "").strip()
        if not case_id or not image:
            raise ValueError(f"config.cases: {where} needs a non-empty 'image' and 'case_id' (got {sorted(row)})")
        full = os.path.normpath(os.path.join(folder, image))
        if not os.path.isfile(full):
            raise ValueError(f"config.cases: {where}: image {image!r} is not a file under config.images={folder!r}")
        if owner.setdefault(full, case_id) != case_id:
            raise ValueError(f"config.cases: {where}: image {image!r} is in cases {owner[full]!r} and {case_id!r}")
        if full not in images.setdefault(case_id, []):
            images[case_id].append(full)
        note = str(row.get("note") or "").strip()
        if note and note not in notes.setdefault(case_id, []):
            notes[case_id].append(note)
    if not images:
        raise ValueError(f"config.cases={path!r} lists no images")
    return [Case(c, tuple(imgs), "\n".join(notes.get(c, ()))) for c, imgs in images.items()]


def read_cases(spec: str, folder: str, found: Sequence[str]) -> tuple[list[Case], list[str]]:
    """(cases, the images to predict) for config.cases: '' (no cases: `found`, the folder's images), 'folders'
    (sub-folders of `folder`: `found`, loose ones predicted but in no case) or a manifest (the images it lists)."""
    if not spec:
        return [], list(found)
    if spec == FOLDERS:
        return cases_from_folders(folder, found)[0], list(found)
    groups = cases_from_manifest(spec, folder)
    return groups, [p for c in groups for p in c.images]


def validate_fields(cfg: Any) -> None:
    """The case fields of a predict config: cases, aggregate, case_min_probability, the 'phenopacket' format."""
    if cfg.cases and cfg.cases != FOLDERS and not os.path.isfile(cfg.cases):
        raise ValueError(f"config.cases={cfg.cases!r}: use '' (no cases), 'folders' (one sub-folder of "
                         "config.images per case) or a JSONL/CSV manifest file (image, case_id, optional note)")
    if cfg.aggregate not in AGGREGATES:
        raise ValueError(f"config.aggregate={cfg.aggregate!r}: use one of {', '.join(AGGREGATES)}")
    check_note_fields(cfg)
    p = cfg.case_min_probability
    if not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"config.case_min_probability={p!r} must lie in [0, 1]")
    if "phenopacket" in tuple(cfg.formats) and not cfg.cases:
        raise ValueError("config.formats has 'phenopacket' but config.cases is '': phenopackets are per case "
                         "(set --config.cases=folders or a manifest)")


def check_note_fields(cfg: Any) -> None:
    """config.note_link and config.note_encoder (predict and serve): a configs/link.py method, its stage-1 run."""
    if cfg.note_link not in config_lib.LINK_METHODS:
        raise ValueError(f"config.note_link={cfg.note_link!r}: use one of {', '.join(config_lib.LINK_METHODS)}")
    if cfg.note_link != "lexical" and not os.path.isdir(cfg.note_encoder or ""):
        raise ValueError(f"config.note_link={cfg.note_link!r} needs config.note_encoder=RUN (a stage-1 workdir); "
                         f"got {cfg.note_encoder!r}")


def note_linker(onto: Ontology, obo_path: str | None = None, method: str = "lexical", encoder: str = "",
                out_dir: str = "") -> Linker:
    """The linker for case notes (negation on): lexical (HPO names and synonyms under HP:0000118), or configs/link.py's
    encoder / hybrid with a stage-1 run. Built once per release, hp.obo and method in a process (it parses hp.obo:
    seconds), as a server profiles case after case."""
    key = (onto.source_sha256, os.fspath(obo_path or ""), method, encoder)
    if key not in _LINKERS:
        if method == "lexical" and not encoder:
            terms = allowed_terms(onto, PHENOTYPIC_ABNORMALITY_ID)
            lexicon = lexical.build_lexicon(onto, terms, obo_terms.read_annotations(onto, obo_path))
            _LINKERS[key] = Linker(onto, "lexical", lexicon)
        else:  # the HPO linker of configs/link.py (its encoder's term matrix cached in out_dir)
            cfg = config_lib.load_config("link")
            cfg.method, cfg.encoder = method, encoder
            cfg.ontology.obo_path = os.fspath(obo_path or "")
            _LINKERS[key] = build_linker(cfg, out_dir)
    return _LINKERS[key]


def image_probabilities(image_emb: np.ndarray, phen_emb: np.ndarray, logit_scale: float, temperature: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [n, C], probabilities [n, C]): softmax over the candidates of logit_scale x cosine / T."""
    cos = np.asarray(image_emb, np.float64) @ np.asarray(phen_emb, np.float64).T
    return cos, calibration.softmax(logit_scale * cos, temperature)


def _term(onto: Ontology, hpo_id: str, **extra: Any) -> dict[str, Any]:
    return dict(hpo_id=hpo_id, name=onto.names[onto.index(hpo_id)], **extra)


def _image_terms(onto: Ontology, ids: Sequence[str], probs: np.ndarray, cos: np.ndarray | None, aggregate: str,
                 top_k: int, min_probability: float) -> list[dict[str, Any]]:
    """The case's image terms: aggregated over images, its top_k at min_probability or above."""
    if not len(probs):
        return []
    reduce = np.mean if aggregate == "mean" else np.max
    agg = reduce(probs, axis=0)
    out = []
    for j in np.argsort(-agg, kind="stable")[:top_k]:
        if agg[j] < min_probability:
            break
        term = _term(onto, ids[j], probability=round(float(agg[j]), 6),
                     image_probabilities=[round(float(p), 6) for p in probs[:, j]], sources=["image"])
        if cos is not None:
            term["cosine"] = round(float(reduce(cos[:, j])), 6)
        out.append(term)
    return out


def _under(onto: Ontology, hpo_id: str, others: dict[str, Any]) -> str | None:
    """The first of `others` that is `hpo_id` or one of its ancestors (None when none is)."""
    lineage = {onto.ids[int(a)] for a in onto.ancestors(hpo_id, include_self=True)}
    return next((o for o in others if o in lineage), None)


def profile_case(onto: Ontology, case_id: str, candidate_ids: Sequence[str], probabilities: np.ndarray,
                 cosines: np.ndarray | None = None, *, images: Sequence[str] = (), note: str = "",
                 linker: Linker | None = None, aggregate: str = "mean", top_k: int = 10,
                 min_probability: float = 0.1) -> dict[str, Any]:
    """A case's profile (a JSON-able dict: present, excluded, uncertain and dropped terms) from its images'
    probabilities [n_images, C] over `candidate_ids` and its note (linked with `linker`, lexical by default)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"config.aggregate={aggregate!r}: use one of {', '.join(AGGREGATES)}")
    probs = np.asarray(probabilities, np.float64)
    probs = probs.reshape(0, len(candidate_ids)) if not probs.size else probs
    if probs.ndim != 2 or probs.shape[1] != len(candidate_ids):
        raise ValueError(f"case {case_id!r}: probabilities of shape {probs.shape}, expected [n_images, "
                         f"{len(candidate_ids)}] (one column per candidate)")
    cos = None if cosines is None else np.asarray(cosines, np.float64).reshape(probs.shape)
    if len(images) not in (0, len(probs)):
        raise ValueError(f"case {case_id!r}: {len(images)} image names for {len(probs)} rows of probabilities")
    present = {t["hpo_id"]: t for t in _image_terms(onto, candidate_ids, probs, cos, aggregate, top_k,
                                                    min_probability)}
    evidence = link_texts([note], linker or note_linker(onto))[0] if note.strip() else []
    excluded: dict[str, dict[str, Any]] = {}
    uncertain: dict[str, dict[str, Any]] = {}
    noted: dict[str, dict[str, Any]] = {}
    for e in evidence:
        table = noted if e["linked"] else excluded if e["excluded"] else uncertain
        table.setdefault(e["hpo_id"], _term(onto, e["hpo_id"], sources=["note"], note_spans=[]))
        table[e["hpo_id"]]["note_spans"].append(e["span"])
    dropped = []
    for hpo_id in list(excluded):  # the note says both: what it states present stands
        if any(_under(onto, p, {hpo_id: 1}) for p in noted):
            dropped.append(dict(excluded.pop(hpo_id), reason="the note also states it (or a descendant) present"))
    for hpo_id in list(present):  # the note's exclusions beat the image model's guesses at or below them
        by = _under(onto, hpo_id, excluded)
        if by is not None:
            dropped.append(dict(present.pop(hpo_id), reason=f"excluded by the note ({by} {excluded[by]['name']})"))
    for hpo_id, t in noted.items():
        if hpo_id in present:
            present[hpo_id]["sources"].append("note")
            present[hpo_id]["note_spans"] = t["note_spans"]
        else:
            present[hpo_id] = t
    uncertain = {h: t for h, t in uncertain.items() if h not in present and h not in excluded}
    implied(onto, present, specific=True)
    implied(onto, excluded, specific=False)
    order = sorted(present.values(), key=lambda t: -t.get("probability", -1.0))
    return dict(case_id=case_id, images=list(images), note=note, aggregate=aggregate,
                note_method=linker.method if linker else "lexical", present=order, excluded=list(excluded.values()),
                uncertain=list(uncertain.values()), dropped=dropped)


def implied(onto: Ontology, terms: dict[str, dict[str, Any]], specific: bool) -> None:
    """Removes the implied terms of `terms` (in place), listing each under a term implying it: a present
    ancestor is implied by its descendant (`specific`), an excluded descendant by its excluded ancestor."""
    ids = list(terms)
    lineage = {h: {onto.ids[int(a)] for a in onto.ancestors(h)} for h in ids}
    by = {h: [o for o in ids if (h in lineage[o] if specific else o in lineage[h])] for h in ids}
    for h in ids:
        if by[h]:  # the implying terms that nothing implies in turn: the most specific (or general) ones
            keep = next(o for o in by[h] if not by[o])
            gone = terms.pop(h)
            terms[keep].setdefault("implies", []).append(
                {k: gone[k] for k in ("hpo_id", "name", "probability") if k in gone})



def write_case_outputs(cfg: Any, model: Any, cases: Sequence[Case], emb: np.ndarray, kept: Sequence[str],
                       phen_emb: np.ndarray, ids: Sequence[str], temperature: float, out_dir: str) -> dict[str, Any]:
    """Predict's case step: a profile per case -> cases.jsonl, cases.md and (format 'phenopacket') phenopackets;
    returns the summary's case fields (with `outputs`)."""
    if model.logit_scale is None:
        raise ValueError(f"config.cases: {cfg.checkpoint!r} has no logit_scale, so no probabilities to aggregate")
    onto, row = model.ontology, {p: i for i, p in enumerate(kept)}
    linker = note_linker(onto, model.obo_path, cfg.note_link, cfg.note_encoder, out_dir) if any(
        c.note for c in cases) else None
    profiles = []
    for case in cases:
        mine = [p for p in case.images if p in row]  # unreadable images were skipped (and named) already
        cos, probs = image_probabilities(emb[[row[p] for p in mine]], phen_emb, model.logit_scale, temperature)
        profiles.append(profile_case(onto, case.case_id, ids, probs, cos,
                                     images=[os.path.relpath(p, cfg.images) for p in mine], note=case.note,
                                     linker=linker, aggregate=cfg.aggregate, top_k=int(cfg.top_k),
                                     min_probability=float(cfg.case_min_probability)))
    identity = dict(phenopacket.model_identity(model), path=model.path)
    outputs = [os.path.join(out_dir, "cases.jsonl")]
    with open(outputs[0], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in profiles)
    context = [f"Model {identity['id']}; HPO release {onto.release or '?'}",
               f"Cases: {'one sub-folder of the images per case' if cfg.cases == FOLDERS else cfg.cases}",
               f"Probability: the {cfg.aggregate} over a case's images of each image's probability (softmax over "
               f"{len(ids)} candidates, T={temperature:.4g}); terms in the top {int(cfg.top_k)} at "
               f">= {float(cfg.case_min_probability):g}; an implied ancestor is listed under its descendant"]
    outputs.append(case_report.write_case_report(out_dir, profiles, cfg.images, context))
    if "phenopacket" in tuple(cfg.formats):
        outputs += phenopacket.write_phenopackets(out_dir, profiles, hpo_release=onto.release, model=identity)
    in_case = {p for c in cases for p in c.images}
    return dict(cases=len(profiles), images_in_no_case=sum(p not in in_case for p in kept),
                case_terms=sum(len(p["present"]) for p in profiles),
                case_excluded=sum(len(p["excluded"]) for p in profiles), model_id=identity["id"], outputs=outputs)
