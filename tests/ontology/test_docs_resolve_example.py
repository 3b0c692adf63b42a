"""docs/data.md's resolve() examples use an id that really is obsolete (or an alt_id) in the shipped hp.obo."""
import os
import re

from phenolip_jax.ontology.loader import default_obo_path

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "data.md")


def _stanza(obo_text: str, hpo_id: str) -> str:
    """The [Term] stanza whose id is hpo_id ('' if none)."""
    for stanza in obo_text.split("\n\n"):
        if stanza.startswith("[Term]") and f"\nid: {hpo_id}\n" in stanza + "\n":
            return stanza
    return ""


def test_documented_obsolete_and_alt_ids_are_what_the_docs_say(hpo):
    with open(DOC) as f:
        examples = re.findall(r'onto\.resolve\("(HP:\d{7})"\)\s+# \'(HP:\d{7})\': (obsolete|an alt_id)', f.read())
    assert {kind for _, _, kind in examples} == {"obsolete", "an alt_id"}, examples
    with open(default_obo_path()) as f:
        obo = f.read()
    for old, new, kind in examples:
        assert hpo.resolve(old) == new
        if kind == "obsolete":
            assert "is_obsolete: true" in _stanza(obo, old), f"{old} is not obsolete in the shipped hp.obo"
        else:
            assert f"alt_id: {old}" in _stanza(obo, new)
