"""Lexical linking on texts written here: names, plurals, synonyms (layperson, abbreviation), longest match."""
import pytest

from phenolip_jax.link import lexical, text
from phenolip_jax.link.linker import link_texts, linked_ids
from tests.link.conftest import IDS


@pytest.mark.parametrize("plural, singular", [
    ("effusions", "effusion"), ("masses", "mass"), ("arteries", "artery"), ("stenoses", "stenosis"),
    ("headaches", "headache"), ("vertebrae", "vertebra"), ("diseases", "disease"), ("eyes", "eye"),
    ("Metastases", "metastasis"), ("abscesses", "abscess")])
def test_plural_and_singular_share_a_normal_form(plural, singular):
    assert text.normal_form(plural) == text.normal_form(singular)


def test_stopwords_never_fold_into_or_out_of():
    assert text.normal_form("into") == "into"
    assert text.normal_form("Intoe") != text.normal_form("into")


def test_words_phrases_and_clauses():
    ws = text.words("No evidence of hydro-cephalus (arrow); 1.5 cm mass")
    assert [w.text for w in ws.words][:5] == ["No", "evidence", "of", "hydro", "cephalus"]
    assert ws.one_phrase(3, 5) and not ws.one_phrase(4, 6)  # a hyphen joins, a bracket breaks
    assert not ws.one_clause(5, 7) and ws.one_clause(6, 8)  # ';' ends a clause, the decimal point does not
    assert ws.span_text(3, 5) == "hydro-cephalus"


def ids(linker, caption):
    return linked_ids(link_texts([caption], linker)[0])


def test_names_plurals_and_case(make_linker):
    lk = make_linker()
    assert ids(lk, "Bilateral PLEURAL EFFUSIONS.") == [IDS["effusion"]]
    assert ids(lk, "Pleural effusion and scoliosis") == [IDS["effusion"], IDS["scoliosis"]]


def test_whole_words_only(make_linker):
    lk = make_linker()
    assert ids(lk, "pleural effusionsx and kyphoscoliosis") == []


def test_layperson_synonyms_with_their_type(make_linker):
    ev = link_texts(["The child has water on the brain and an enlarged heart."], make_linker())[0]
    assert [e["hpo_id"] for e in ev] == [IDS["hydrocephalus"], IDS["cardiomegaly"]]
    assert {e["synonym_type"] for e in ev} == {"layperson"}
    assert ev[0]["span"] == "water on the brain" and ev[0]["matched"] == "Water on the brain"
    caption = "The child has water on the brain and an enlarged heart."
    assert caption[ev[1]["start"]:ev[1]["end"]] == "enlarged heart"


def test_abbreviations_match_only_as_written(make_linker):
    lk = make_linker()
    ev = link_texts(["Echo shows an ASD."], lk)[0]
    assert [(e["hpo_id"], e["synonym_type"]) for e in ev] == [(IDS["asd"], "abbreviation")]
    assert ids(lk, "we asd about it") == [] and ids(lk, "Asd") == []


def test_obsolete_synonyms_are_never_matched(make_linker):
    assert ids(make_linker(), "an air leak") == []


def test_longest_match_first_and_no_overlap(mini, lexicon):
    ws = text.words("air around the lungs and fluid around the lungs")
    found = lexical.lexical_mentions(ws, lexicon)
    assert [(m.start, m.stop) for m in found] == [(5, 9)]
    assert [e.kind for e in found[0].entries] == ["EXACT"]


def test_terms_outside_the_root_are_not_linked(make_linker):
    assert ids(make_linker(), "Autosomal dominant inheritance of intoe") == [IDS["metatarsus"]]


def test_a_stopword_is_not_a_folded_synonym(make_linker):
    assert ids(make_linker(), "contrast flows into the bladder") == []


def test_lexicon_refuses_unknown_scopes(mini):
    onto, annotations, terms = mini
    with pytest.raises(ValueError, match="config.lexical.scopes"):
        lexical.build_lexicon(onto, terms, annotations, scopes=("EXACT", "CLOSE"))


def test_scopes_choose_the_synonyms(mini, make_linker):
    onto, annotations, terms = mini
    exact_only = lexical.build_lexicon(onto, terms, annotations, scopes=("EXACT",))
    ws = text.words("collapsed lung")
    assert lexical.lexical_mentions(ws, exact_only) == []
    assert ids(make_linker(), "collapsed lung") == [IDS["pneumothorax"]]
