"""GA4GH Phenopacket v2 out (evaluate/phenopacket.py): built with the schema's classes, read back by its parser."""
import datetime
import json
import types

import numpy as np
import pytest
from google.protobuf import json_format

from phenolip_jax.evaluate import phenopacket

MODEL = dict(id="phenolip:run@sha256:0123", name="run", version="sha256:0123", path="/runs/run")
CREATED = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
PROFILE = dict(
    case_id="patient 7", images=["p7/a.png", "p7/b.png"], aggregate="mean", note_method="lexical",
    present=[dict(hpo_id="HP:0000316", name="Hypertelorism", probability=0.612345, sources=["image", "note"],
                  note_spans=["hypertelorism"], image_probabilities=[0.7, 0.52469]),
             dict(hpo_id="HP:0000252", name="Microcephaly", probability=0.2, sources=["image"])],
    excluded=[dict(hpo_id="HP:0001250", name="Seizure", sources=["note"], note_spans=["seizures"])],
    uncertain=[], dropped=[])


def _features(doc):
    return {f["type"]["id"]: f for f in doc["phenotypicFeatures"]}


def test_round_trips_through_the_schema_parser_and_keeps_excluded_terms():
    doc = phenopacket.to_phenopacket(PROFILE, hpo_release="hp/releases/2025-01-16", model=MODEL, created=CREATED)
    text = json.dumps(doc)
    back = json_format.MessageToDict(phenopacket.parse_phenopacket(text))
    assert back == doc
    feats = _features(back)
    assert list(feats) == ["HP:0000316", "HP:0000252", "HP:0001250"]
    assert feats["HP:0000316"]["type"]["label"] == "Hypertelorism" and "excluded" not in feats["HP:0000316"]
    assert feats["HP:0001250"]["excluded"] is True and feats["HP:0001250"]["type"]["label"] == "Seizure"
    image_ev, note_ev = feats["HP:0000316"]["evidence"]
    assert image_ev["evidenceCode"]["id"] == "ECO:0007669"
    assert image_ev["reference"] == {"id": MODEL["id"], "description": "image model probability 0.6123 (mean over 2 "
                                                                      "images)"}
    assert note_ev["reference"]["description"] == 'case note "hypertelorism"'
    assert feats["HP:0001250"]["evidence"][0]["reference"]["id"] == "phenolip:link/lexical"
    meta = back["metaData"]
    hp = next(r for r in meta["resources"] if r["id"] == "hp")
    assert hp["version"] == "2025-01-16" and hp["namespacePrefix"] == "HP"
    assert meta["externalReferences"][0]["description"] == "PhenoLIP model run, version sha256:0123"
    assert meta["created"] == "2026-01-02T03:04:05Z" and meta["phenopacketSchemaVersion"] == "2.0"
    assert back["id"] == back["subject"]["id"] == "patient 7"


def test_the_parser_refuses_what_is_not_a_phenopacket():
    doc = phenopacket.to_phenopacket(PROFILE, hpo_release="hp/releases/2025-01-16", model=MODEL)
    doc["phenotypicFeatures"][0]["probability"] = 0.6  # not a schema field: the score belongs in the evidence
    with pytest.raises(json_format.ParseError, match="probability"):
        phenopacket.parse_phenopacket(json.dumps(doc))


def test_written_per_case_and_clashing_names_refused(tmp_path):
    other = dict(PROFILE, case_id="patient/8", present=[], excluded=[])
    paths = phenopacket.write_phenopackets(str(tmp_path), [PROFILE, other], hpo_release="", model=MODEL)
    assert [p.rsplit("/", 2)[-2:] for p in paths] == [["phenopackets", "patient_7.json"],
                                                      ["phenopackets", "patient_8.json"]]
    assert phenopacket.parse_phenopacket(open(paths[1]).read()).id == "patient/8"
    with pytest.raises(ValueError, match=r"case ids \['patient_7.json'\] map to the same"):
        phenopacket.write_phenopackets(str(tmp_path), [PROFILE, dict(PROFILE, case_id="patient_7")],
                                       hpo_release="", model=MODEL)


def test_model_version_follows_the_weights():
    params = {"text": {"w": np.ones((2, 2), np.float32)}, "image": {"w": np.zeros(3, np.float32)}}
    model = types.SimpleNamespace(params=params, path="/runs/stage2/", kind="stage2")
    first = phenopacket.model_identity(model)
    assert first["name"] == "stage2" and first["id"] == f"phenolip:stage2@{first['version']}"
    params["image"]["w"] = np.full(3, 1e-3, np.float32)  # an image-tower change alone is a new version
    assert phenopacket.model_identity(model)["version"] != first["version"]
