"""GA4GH Phenopacket v2 out: one phenopacket per case profile (evaluate/cases.py), built with the schema's own
Python classes (the `phenopackets` package) and written as the schema's JSON (protobuf JSON, camelCase).

Each present or excluded term is a `phenotypicFeature` (HPO id and label, `excluded`); its evidence is ECO's
'computational evidence used in automatic assertion' with a reference naming the model (id, probability,
aggregation) or the note linker (the note's words). `metaData` names the HPO release read from hp.obo's
data-version, ECO, and the model (name and version) as an external reference.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import phenopackets as pp
from google.protobuf import json_format

from phenolip_jax import artifacts

SCHEMA_VERSION = "2.0"
FOLDER = "phenopackets"  # predict writes OUT/phenopackets/<case id>.json
# Every assertion here is made by software: ECO's term for it (ECO:0007669, an 'automatic assertion').
AUTOMATIC = ("ECO:0007669", "computational evidence used in automatic assertion")
HPO_RESOURCE = dict(id="hp", name="human phenotype ontology", url="http://purl.obolibrary.org/obo/hp.owl",
                    namespace_prefix="HP", iri_prefix="http://purl.obolibrary.org/obo/HP_")
# ECO is only named (its one term above), never read: no release of it is known here, so none is claimed.
ECO_RESOURCE = dict(id="eco", name="Evidence and Conclusion Ontology", url="http://purl.obolibrary.org/obo/eco.owl",
                    namespace_prefix="ECO", iri_prefix="http://purl.obolibrary.org/obo/ECO_")


def hpo_version(release: str) -> str:
    """The release date of hp.obo's data-version ('hp/releases/2025-01-16' -> '2025-01-16'); '' stays ''."""
    return release.rstrip("/").rsplit("/", 1)[-1]


def package_version() -> str:
    """phenolip_jax's installed version ('' when run from a tree that was never installed)."""
    try:
        return metadata.version("phenolip_jax")
    except metadata.PackageNotFoundError:
        return ""


def model_identity(model: Any) -> dict[str, str]:
    """{'id', 'name', 'version', 'kind'} of a loaded model: its folder's name, and a sha256 of every parameter
    (both towers) as its version, so two phenopackets name the same model only when the weights are the same."""
    h = artifacts.hash_params(hashlib.sha256(), model.params)
    name = os.path.basename(os.path.normpath(model.path)) if model.path else model.kind
    version = f"sha256:{h.hexdigest()[:16]}"
    return dict(id=f"phenolip:{name}@{version}", name=name, version=version, kind=model.kind)


def _image_evidence(term: Mapping[str, Any], model: Mapping[str, str], aggregate: str, n_images: int
                    ) -> pp.Evidence:
    detail = f"probability {term['probability']:.4f}"
    if n_images > 1:
        detail += f" ({aggregate} over {n_images} images)"
    return pp.Evidence(evidence_code=pp.OntologyClass(id=AUTOMATIC[0], label=AUTOMATIC[1]),
                       reference=pp.ExternalReference(id=model["id"], description=f"image model {detail}"))


def _note_evidence(term: Mapping[str, Any], method: str) -> pp.Evidence:
    spans = "; ".join(f'"{s}"' for s in term.get("note_spans", ()))
    return pp.Evidence(evidence_code=pp.OntologyClass(id=AUTOMATIC[0], label=AUTOMATIC[1]),
                       reference=pp.ExternalReference(id=f"phenolip:link/{method}",
                                                      description=f"case note {spans}"))


def _feature(term: Mapping[str, Any], excluded: bool, profile: Mapping[str, Any],
             model: Mapping[str, str]) -> pp.PhenotypicFeature:
    evidence = []
    if "image" in term.get("sources", ()):
        evidence.append(_image_evidence(term, model, profile.get("aggregate", ""), len(profile.get("images", ()))))
    if "note" in term.get("sources", ()):
        evidence.append(_note_evidence(term, profile.get("note_method", "lexical")))
    return pp.PhenotypicFeature(type=pp.OntologyClass(id=term["hpo_id"], label=term["name"]), excluded=excluded,
                                evidence=evidence)


def phenopacket_message(profile: Mapping[str, Any], *, hpo_release: str, model: Mapping[str, str],
                        created: datetime.datetime | None = None) -> pp.Phenopacket:
    """The Phenopacket v2 message of one case profile (`model`: model_identity's dict; `created`: now, UTC)."""
    meta = pp.MetaData(created_by=f"phenolip_jax {package_version()}".strip(),
                       phenopacket_schema_version=SCHEMA_VERSION,
                       resources=[pp.Resource(version=hpo_version(hpo_release), **HPO_RESOURCE),
                                  pp.Resource(**ECO_RESOURCE)],
                       external_references=[pp.ExternalReference(
                           id=model["id"], reference=model.get("path", ""),
                           description=f"PhenoLIP model {model['name']}, version {model['version']}")])
    meta.created.FromDatetime(created or datetime.datetime.now(datetime.timezone.utc))
    features = [_feature(t, False, profile, model) for t in profile["present"]]
    features += [_feature(t, True, profile, model) for t in profile["excluded"]]
    case_id = str(profile["case_id"])
    return pp.Phenopacket(id=case_id, subject=pp.Individual(id=case_id), phenotypic_features=features,
                          meta_data=meta)


def to_phenopacket(profile: Mapping[str, Any], *, hpo_release: str, model: Mapping[str, str],
                   created: datetime.datetime | None = None) -> dict[str, Any]:
    """The Phenopacket v2 JSON (a dict, camelCase as the schema's JSON) of one case profile."""
    return json_format.MessageToDict(phenopacket_message(profile, hpo_release=hpo_release, model=model,
                                                         created=created))


def parse_phenopacket(text: str) -> pp.Phenopacket:
    """A Phenopacket v2 JSON document parsed by the schema's own parser (unknown fields refused)."""
    return json_format.Parse(text, pp.Phenopacket())


def file_name(case_id: str) -> str:
    """A file name for a case id: characters other than letters, digits, '.', '_' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id).lstrip(".") + ".json"


def write_phenopackets(out_dir: str, profiles: Sequence[Mapping[str, Any]], *, hpo_release: str,
                       model: Mapping[str, str]) -> list[str]:
    """OUT/phenopackets/<case id>.json per profile; two case ids that map to one file name are refused."""
    names = [file_name(str(p["case_id"])) for p in profiles]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"config.cases: case ids {clash} map to the same phenopacket file name: rename them")
    folder = os.path.join(out_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    created = datetime.datetime.now(datetime.timezone.utc)
    written = []
    for profile, name in zip(profiles, names):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            json.dump(to_phenopacket(profile, hpo_release=hpo_release, model=model, created=created), f, indent=1)
            f.write("\n")
        written.append(path)
    return written
