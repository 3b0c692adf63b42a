"""Does the ontology help, and how should stage 2 use the hierarchy? Stage 2 on the embedded demo (or on MedPix
2.0: variant `medpix`), several objectives x several seeds, one table.

`python -m phenolip_jax.main --config=configs/ablation.py --workdir=workdirs/ablation`
`python -m phenolip_jax.main --config=configs/ablation.py:medpix --config.stage2.data.packed_dir=PACK
    --config.medpix.dir=MedPix-2.0/MedPix-2-0 --workdir=workdirs/ablation_medpix`  (docs/stages.md)

Arms (names in `arms`; `phenolip_jax/tasks/ablation.py:ARMS` says what each switches on):
  clip                    image-text contrastive only
  paper_kd                the paper's objective: + distillation from the trained stage-1 teacher
  paper_kd_hier_share     paper_kd + hierarchical soft positives, the pair itself keeping >= own_share of its
                          target row and column at any batch size (this project's addition)
  paper_kd_hier_mask      paper_kd + KEP-style masking: same-phenotype pairs leave the softmax denominators
  paper_kd_hier_uncapped  paper_kd + uncapped soft positives (the former default; drowns the pair at large batch)
  clip_hier_share         clip + hierarchical soft positives (own share kept), no distillation
  paper_kd_raw_teacher    paper_kd with an untrained teacher (the raw encoder): does stage 1 matter?
Each (arm, seed) trains `stage2` with `seed` (the demo dataset, init and data order all follow the seed;
arms of one seed share the dataset). Finished runs are reused only when their config.json is the arm's config
(a mismatch is refused, naming the fields), so an interrupted ablation resumes and a changed one cannot
report stale runs. Writes ablation.json (every run + mean/sd + paired differences against `clip` and
`paper_kd`) and ablation.md (the tables) in the workdir.
"""
import ml_collections

from phenolip_jax import config_lib

ARMS = ("clip", "paper_kd", "paper_kd_hier_share", "paper_kd_hier_mask")  # the default set; see above for the rest


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Ablation config; `arg`: '' (full, ~1 h on an idle 2-core CPU), 'quick' (one seed, 30 steps: a smoke run) or
    'medpix' (the same arms on MedPix 2.0)."""
    c = ml_collections.ConfigDict()
    c.stage = "ablation"
    c.arms = ARMS  # which arms to run (any of those listed above)
    c.seeds = (0, 1, 2)  # one stage-2 run per arm and seed
    c.kd_weight = 0.3  # distillation weight of the arms that distil (stage 2's default)
    c.own_share = 0.5  # the '_hier_share' arms: share of its target row the pair itself keeps
    # N > 0: also evaluate every finished run on its demo regenerated with N test pairs (same train split:
    # the generator draws each split from its own seeds), e.g. 6000 for ~880 unseen-phenotype images per seed
    # instead of ~88; writes <run>/eval_testN.json and ablation_testN.{json,md} (ablation.md is kept).
    c.eval_test_pairs = 0
    c.teacher_workdir = ""  # a finished stage-1 workdir for the trained teacher ('' = train `teacher` below)
    # MedPix 2.0's own labels (configs/eval.py:medpix's section): with medpix.dir (its MedPix-2-0 folder) set, every
    # finished run is also evaluated on zero-shot and linear-probe modality / plane / body location, cached in the run.
    c.medpix = config_lib.load_config("eval", "medpix").medpix
    # The trained teacher: what stage 2 makes for itself by default (configs/stage1.py:teacher).
    c.teacher = config_lib.load_config("stage1", "teacher")
    # The base stage-2 run of every arm: the embedded default, shortened so 15 runs fit in about an hour.
    c.stage2 = config_lib.load_config("stage2")
    c.stage2.total_steps = 150
    c.stage2.eval_every = 0  # evaluate at the end only
    c.stage2.checkpoint_every = 150
    if arg == "medpix":
        # Stage 2 on MedPix 2.0 (configs/stage2.py:medpix; set stage2.data.packed_dir to a linked pack), the same
        # arms and steps as the demo ablation: 7.5-23 min per run on the 2-core CPU at load 1-6 (RESULTS.md).
        c.stage2 = config_lib.load_config("stage2", "medpix")
        c.stage2.total_steps = 150
        c.stage2.eval_every = 0
        c.stage2.checkpoint_every = 150
    elif arg == "quick":
        c.seeds = (0,)
        c.stage2.total_steps = 30
        c.stage2.checkpoint_every = 30
        c.teacher.total_steps = 30
        c.teacher.checkpoint_every = 30
    elif arg:
        raise ValueError(f"unknown ablation variant {arg!r}: use '' (full), 'quick' or 'medpix'")
    return c
