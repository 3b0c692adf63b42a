"""HPO ontology: loading (pronto + sha256-keyed cache), term index, closure, organ systems, relation scores."""
from phenolip_jax.ontology.cache import default_cache_dir, file_sha256
from phenolip_jax.ontology.hpo import (
    PHENOTYPIC_ABNORMALITY_ID,
    ROOT_ID,
    ObsoleteHPOIdError,
    Ontology,
    OntologyFormatError,
    UnknownHPOIdError,
    organ_system_index,
)
from phenolip_jax.ontology.loader import (
    OntologyReleaseError,
    check_release,
    default_obo_path,
    load_ontology,
    release_info,
)
from phenolip_jax.ontology.relations import (
    Relation,
    ancestor_table,
    hop_weights,
    hops_up,
    organ_table,
    relation_codes,
    relation_scores,
    set_relation_scores,
    sized_ancestor_table,
)

__all__ = [
    "PHENOTYPIC_ABNORMALITY_ID", "ROOT_ID", "ObsoleteHPOIdError", "Ontology", "OntologyFormatError",
    "UnknownHPOIdError", "organ_system_index", "default_cache_dir", "file_sha256", "default_obo_path",
    "load_ontology",
    "OntologyReleaseError", "check_release", "release_info",
    "Relation", "ancestor_table", "hop_weights", "hops_up", "organ_table", "relation_codes",
    "relation_scores", "set_relation_scores", "sized_ancestor_table",
]
