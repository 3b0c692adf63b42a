"""Negation and uncertainty (NegEx-style triggers within a clause window) on texts written here."""
import pytest

from phenolip_jax.link.linker import link_texts, linked_ids
from tests.link.conftest import IDS

NEGATED = [
    "No evidence of hydrocephalus.",
    "Hydrocephalus was ruled out.",
    "Negative for hydrocephalus.",
    "Ventricles without hydrocephalus.",
    "Absence of hydrocephalus on follow-up.",
    "No hydrocephalus.",
    "There is not any hydrocephalus.",
    "Free of hydrocephalus after the shunt.",
    "No signs of shift or hydrocephalus.",
]
UNCERTAIN = [
    "Possible hydrocephalus.",
    "Findings suspicious for hydrocephalus.",
    "Cannot exclude hydrocephalus.",
    "The dilated ventricles may represent hydrocephalus.",
    "Hydrocephalus cannot be excluded.",
]
AFFIRMED = [
    "Marked hydrocephalus.",
    "No change in the hydrocephalus.",  # pseudo-trigger
    "No fracture. Hydrocephalus.",  # the clause ends before the mention
    "No fracture but hydrocephalus.",  # termination word
    "No fracture of the left femur was seen on the first films, hydrocephalus",  # beyond the window
]


@pytest.mark.parametrize("caption", NEGATED)
def test_negated_mentions_are_excluded_evidence_not_ids(make_linker, caption):
    ev = link_texts([caption], make_linker())[0]
    assert [e["hpo_id"] for e in ev] == [IDS["hydrocephalus"]]
    assert ev[0]["excluded"] and not ev[0]["linked"] and not ev[0]["uncertain"] and ev[0]["triggers"]
    assert linked_ids(ev) == []


@pytest.mark.parametrize("caption", UNCERTAIN)
def test_uncertain_mentions_are_marked_and_linked_only_on_request(make_linker, caption):
    ev = link_texts([caption], make_linker())[0]
    assert ev[0]["uncertain"] and not ev[0]["excluded"] and not ev[0]["linked"]
    ev = link_texts([caption], make_linker(link_uncertain=True))[0]
    assert ev[0]["uncertain"] and ev[0]["linked"] and linked_ids(ev) == [IDS["hydrocephalus"]]


@pytest.mark.parametrize("caption", AFFIRMED)
def test_affirmed_mentions_are_linked(make_linker, caption):
    ev = link_texts([caption], make_linker())[0]
    assert linked_ids(ev) == [IDS["hydrocephalus"]], ev


def test_negation_reaches_a_list_within_the_clause(make_linker):
    ev = link_texts(["No pleural effusion, pneumothorax or cardiomegaly. Scoliosis."], make_linker())[0]
    assert [(e["name"], e["excluded"]) for e in ev] == [
        ("Pleural effusion", True), ("Pneumothorax", True), ("Cardiomegaly", True), ("Scoliosis", False)]


def test_negation_off_links_everything(make_linker):
    ev = link_texts(["No evidence of hydrocephalus."], make_linker(negation=False))[0]
    assert linked_ids(ev) == [IDS["hydrocephalus"]] and not ev[0]["excluded"]


def test_encoder_mentions_get_the_same_context(make_linker):
    lk = make_linker("encoder", {"dilated heart": ("HP:0001640", 0.95)})
    ev = link_texts(["No dilated heart."], lk)[0]
    assert [(e["method"], e["excluded"]) for e in ev] == [("encoder", True)]
