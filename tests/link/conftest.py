"""A miniature HPO (names, typed synonyms, UMLS xrefs, four organ systems) and linkers built on it."""
from __future__ import annotations

import pytest

from phenolip_jax import config_lib
from phenolip_jax.link import obo_terms, spans
from phenolip_jax.link.linker import Linker, allowed_terms
from phenolip_jax.link.run import make_lexicon
from phenolip_jax.ontology import load_ontology

MINI_OBO = """\
format-version: 1.2
data-version: mini/releases/2000-01-01
synonymtypedef: abbreviation "abbreviation"
synonymtypedef: layperson "layperson term"
synonymtypedef: obsolete_synonym "discarded/obsoleted synonym"

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001 ! All

[Term]
id: HP:0000006
name: Autosomal dominant inheritance
is_a: HP:0000005 ! Mode of inheritance

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000707
name: Abnormality of the nervous system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000238
name: Hydrocephalus
synonym: "Water on the brain" EXACT layperson []
xref: UMLS:C0020255
is_a: HP:0000707 ! Abnormality of the nervous system

[Term]
id: HP:0001626
name: Abnormality of the cardiovascular system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001627
name: Abnormal heart morphology
is_a: HP:0001626 ! Abnormality of the cardiovascular system

[Term]
id: HP:0001640
name: Cardiomegaly
synonym: "Enlarged heart" EXACT layperson []
xref: UMLS:C0018800
is_a: HP:0001627 ! Abnormal heart morphology

[Term]
id: HP:0001631
name: Atrial septal defect
synonym: "ASD" EXACT abbreviation []
xref: UMLS:C0018817
is_a: HP:0001627 ! Abnormal heart morphology

[Term]
id: HP:0002086
name: Abnormality of the respiratory system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0002202
name: Pleural effusion
synonym: "Fluid around the lungs" EXACT layperson []
xref: UMLS:C0032227
is_a: HP:0002086 ! Abnormality of the respiratory system

[Term]
id: HP:0002107
name: Pneumothorax
synonym: "Collapsed lung" RELATED layperson []
synonym: "Air leak" EXACT obsolete_synonym []
xref: UMLS:C0032326
xref: UMLS:C1111111
is_a: HP:0002086 ! Abnormality of the respiratory system

[Term]
id: HP:0000924
name: Abnormality of the skeletal system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001840
name: Metatarsus adductus
synonym: "Intoe" EXACT layperson []
xref: UMLS:C0025594
is_a: HP:0000924 ! Abnormality of the skeletal system

[Term]
id: HP:0002650
name: Scoliosis
xref: UMLS:C0036439
is_a: HP:0000924 ! Abnormality of the skeletal system
"""
IDS = {"hydrocephalus": "HP:0000238", "cardiomegaly": "HP:0001640", "asd": "HP:0001631",
       "effusion": "HP:0002202", "pneumothorax": "HP:0002107", "metatarsus": "HP:0001840", "scoliosis": "HP:0002650"}


@pytest.fixture(scope="session")
def mini_obo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("mini_hpo") / "mini.obo"
    path.write_text(MINI_OBO, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def mini(mini_obo, tmp_path_factory):
    """(ontology, annotations, allowed term indices) of the miniature HPO."""
    onto = load_ontology(mini_obo, cache_dir=tmp_path_factory.mktemp("mini_cache"))
    return onto, obo_terms.read_annotations(onto, mini_obo), allowed_terms(onto, "HP:0000118")


@pytest.fixture(scope="session")
def lexicon(mini):
    onto, annotations, terms = mini
    return make_lexicon(onto, terms, annotations, config_lib.load_config("link").lexical)


class StubScorer:
    """A span scorer with fixed answers: span text (lower case) -> (HPO id, cosine); anything else scores 0."""

    def __init__(self, onto, table: dict[str, tuple[str, float]]):
        self.onto, self.table, self.seen = onto, table, []

    def score(self, texts):
        self.seen += list(texts)
        out = []
        for t in texts:
            hpo, s = self.table.get(t.lower(), ("HP:0002650", 0.0))
            out.append((self.onto.index(hpo), s))
        return out


@pytest.fixture
def make_linker(mini, lexicon):
    """`make_linker(method, table=None, **knobs)`: a Linker on the miniature HPO (stub scorer from `table`)."""
    onto, annotations, terms = mini

    def make(method="lexical", table=None, span_filter="none", **knobs):
        scorer = StubScorer(onto, table or {}) if method != "lexical" else None
        filt = spans.span_filter(span_filter, onto, terms, annotations)
        return Linker(onto, method, lexicon if method != "encoder" else None, scorer, span_filter=filt,
                      **{"threshold": 0.8, **knobs})

    return make
