"""What the page's Download button returns for a case: its GA4GH Phenopacket v2 (evaluate/phenopacket.py).

The case's profile (evaluate/cases.py: image terms aggregated over its images, the note's present and excluded
terms) becomes the phenopacket's phenotypicFeatures; metaData names the HPO release and the model. The whole case
record (per-image top-k terms) stays at GET /api/cases/{id}.
"""
from __future__ import annotations

import json
from typing import Any

from phenolip_jax.evaluate import phenopacket


def case_download(case: dict[str, Any]) -> tuple[str, str, bytes]:
    """(file name, media type, body) of a case's download: its Phenopacket v2 JSON."""
    packet = phenopacket.to_phenopacket(case["profile"], hpo_release=case["ontology_release"], model=case["model"])
    body = json.dumps(packet, indent=2, ensure_ascii=False).encode()
    return f"case-{case['case_id']}.phenopacket.json", "application/json", body
