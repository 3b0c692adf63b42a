"""Does the ontology help? Stage 2 on the embedded demo, five ways x several seeds, one table.

`python -m phenolip_jax.main --config=configs/ablation.py --workdir=workdirs/ablation`

Arms (names in `arms`):
  clip                  image-text contrastive only (kd_weight=0, hierarchy off)
  kd                    + distillation from the trained stage-1 teacher
  hier                  + hierarchical soft positives (no distillation)
  phenolip              + both (the PhenoLIP recipe)
  phenolip_raw_teacher  PhenoLIP with an untrained teacher: the raw pretrained encoder (mean-pooled, identity
                        head), which asks whether stage 1 matters
Each (arm, seed) trains `stage2` with `seed` (the demo dataset, init and data order all follow the seed;
arms of one seed share the dataset). Finished runs are reused, so an interrupted ablation resumes.
Writes ablation.json (every run + mean/sd) and ablation.md (the table) in the workdir.
"""
import ml_collections

from phenolip_jax import config_lib

ARMS = ("clip", "kd", "hier", "phenolip", "phenolip_raw_teacher")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Ablation config; `arg`: '' (full, ~1 h on an idle 2-core CPU) or 'quick' (one seed, 30 steps: a smoke run)."""
    c = ml_collections.ConfigDict()
    c.stage = "ablation"
    c.arms = ARMS  # which arms to run (subset of the five above)
    c.seeds = (0, 1, 2)  # one stage-2 run per arm and seed
    c.kd_weight = 0.3  # distillation weight of the arms that distil (stage 2's default)
    # N > 0: also evaluate every finished run on its demo regenerated with N test pairs (same train split:
    # the generator draws each split from its own seeds), e.g. 6000 for ~880 unseen-phenotype images per seed
    # instead of ~88; writes <run>/eval_testN.json and ablation_testN.{json,md} (ablation.md is kept).
    c.eval_test_pairs = 0
    c.teacher_workdir = ""  # a finished stage-1 workdir for the trained teacher ('' = train `teacher` below)
    # The trained teacher: what stage 2 makes for itself by default (configs/stage1.py:teacher).
    c.teacher = config_lib.load_config("stage1", "teacher")
    # The base stage-2 run of every arm: the embedded default, shortened so 15 runs fit in about an hour.
    c.stage2 = config_lib.load_config("stage2")
    c.stage2.total_steps = 150
    c.stage2.eval_every = 0  # evaluate at the end only
    c.stage2.checkpoint_every = 150
    if arg == "quick":
        c.seeds = (0,)
        c.stage2.total_steps = 30
        c.stage2.checkpoint_every = 30
        c.teacher.total_steps = 30
        c.teacher.checkpoint_every = 30
    elif arg:
        raise ValueError(f"unknown ablation variant {arg!r}: use '' (full) or 'quick'")
    return c
