"""Config validation: every check that runs before anything is loaded or compiled, one line naming the field."""
from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

from phenolip_jax import config_lib


def validate(cfg: ml_collections.ConfigDict, num_devices: int, aot: bool = False) -> None:
    """Checks a config before anything is loaded or compiled; raises ValueError naming the field (one line).

    aot=True (an ahead-of-time compile) reads no data, so a stage-2 config need not name its manifest.
    """
    light = {"eval": _validate_eval, "export": _validate_export, "predict": _validate_predict,
             "ablation": _validate_ablation, "link": _validate_link, "serve": _validate_serve}
    if cfg.stage in light:
        return light[cfg.stage](cfg)
    if cfg.stage not in ("stage1", "stage2"):
        raise ValueError(f"config.stage={cfg.stage!r}: use one of stage1, stage2, {', '.join(light)}")
    for field in ("seed", "total_steps", "log_every", "eval_every", "checkpoint_every"):
        if field not in cfg:
            raise ValueError(f"config.{field} is missing")
    for field in ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps"):
        # Stage 1 may run 0 steps: it then saves its starting encoder (the untrained-teacher baseline).
        if int(cfg[field]) <= 0 and not (field == "total_steps" and cfg.stage == "stage1" and cfg[field] == 0):
            raise ValueError(f"config.{field}={cfg[field]} must be > 0")
    if cfg.eval_every < 0:
        raise ValueError(f"config.eval_every={cfg.eval_every} must be >= 0 (0 = only at the end)")
    if cfg.stage == "stage1" and cfg.eval_every:
        raise ValueError(f"config.eval_every={cfg.eval_every}: stage 1 evaluates before and after training only; "
                         "use 0")
    _positive(cfg, "data", ("max_len", "max_organs", "batch_size", "image_size", "max_hpo",
                            "terms_per_batch", "views_per_term"))
    if cfg.data.get("max_ancestors", 0) < 0:
        raise ValueError(f"config.data.max_ancestors={cfg.data.max_ancestors} must be >= 0 "
                         "(0 = sized from the ontology and loss.hierarchy.max_hops)")
    _positive(cfg, "eval", ("batch_size", "max_len"))
    if cfg.data.workers < 0:
        raise ValueError(f"config.data.workers={cfg.data.workers} must be >= 0 (0 = in-process)")
    fsdp = cfg.mesh.fsdp
    data = cfg.mesh.data if cfg.mesh.data != -1 else num_devices // max(fsdp, 1)
    if fsdp < 1 or data * fsdp != num_devices:
        raise ValueError(f"config.mesh (data={cfg.mesh.data}, fsdp={fsdp}) does not fit {num_devices} devices")
    bs = config_lib.global_batch(cfg)
    accum = cfg.optim.grad_accum_steps
    if bs % num_devices:
        raise ValueError(f"{config_lib.batch_field(cfg)}={bs} is not divisible by the device count {num_devices}")
    if accum < 1 or bs % accum or (bs // accum) % num_devices:
        raise ValueError(
            f"config.optim.grad_accum_steps={accum}: batch {bs} must split into micro-batches divisible by "
            f"{num_devices} devices"
        )
    if cfg.stage == "stage2":
        _validate_stage2(cfg, aot)
    else:
        _one_of(cfg.text.remat, config_lib.REMAT_POLICIES, "config.text.remat")
    if not cfg.text.hf_dir and not aot:  # --aot builds the BERT from config.text.arch's sizes instead
        raise ValueError(f"config.text.hf_dir is empty: point it at a local Hugging Face BERT directory. "
                         f"{config_lib.hf_dir_howto(cfg.text.get('arch', ''))}")
    for field in ("text.hf_dir", "teacher.workdir", "init.checkpoint", "data.manifest", "data.test_csv"):
        section, key = field.split(".")
        value = cfg[section][key] if section in cfg and key in cfg[section] else ""
        # URLs (gs://...) are checked through epath by data.sources.validate_source, not by os.path.
        if value and "://" not in value and not os.path.exists(value):
            raise ValueError(f"config.{field}={value!r} does not exist")
    teacher = cfg.teacher.workdir if "teacher" in cfg else ""
    if teacher and not all(os.path.exists(os.path.join(teacher, f)) for f in ("stage1_config.json", "encoder")):
        raise ValueError(f"config.teacher.workdir={teacher!r} is not a finished stage-1 workdir "
                         "(needs stage1_config.json and encoder/)")
    _validate_hierarchy(cfg.loss.hierarchy)
    kinds = {"stage1": ("infonce", "adasp"), "stage2": ("softmax", "sigmoid")}[cfg.stage]
    _one_of(cfg.loss.kind, kinds, "config.loss.kind")
    if cfg.loss.hierarchy.enabled and cfg.loss.hierarchy.get("mode") == "mask" and cfg.loss.kind != "softmax":
        raise ValueError("config.loss.hierarchy.mode='mask' removes pairs from softmax denominators: it needs "
                         f"config.loss.kind='softmax' (got {cfg.loss.kind!r})")
    _one_of(cfg.optim.schedule, ("cosine", "constant"), "config.optim.schedule")
    if cfg.optim.warmup_steps < 0 or not math.isfinite(cfg.optim.lr) or cfg.optim.lr <= 0:
        raise ValueError(f"config.optim: lr={cfg.optim.lr}, warmup_steps={cfg.optim.warmup_steps} are invalid")


def _validate_hierarchy(h: Any) -> None:
    # The loss keeps only the fewest-hop relation of each pair, which is the heaviest only for decay <= 1.
    if not 0.0 <= float(h.hop_decay) <= 1.0:
        raise ValueError(f"config.loss.hierarchy.hop_decay={h.hop_decay} must lie in [0, 1] "
                         "(a relation h hops away weighs hop_decay**h)")
    if not 0.0 <= float(h.organ_weight) <= 1.0:
        raise ValueError(f"config.loss.hierarchy.organ_weight={h.organ_weight} must lie in [0, 1] "
                         "(a pair sharing only an organ system never outweighs the pair itself)")
    if not 0 <= int(h.max_hops) <= 64 or int(h.max_hops) != h.max_hops:
        raise ValueError(f"config.loss.hierarchy.max_hops={h.max_hops} must be an integer in [0, 64]")
    if "mode" in h:
        _one_of(h.mode, config_lib.HIERARCHY_MODES, "config.loss.hierarchy.mode")
        if not 0.0 <= float(h.own_share) <= 1.0:
            raise ValueError(f"config.loss.hierarchy.own_share={h.own_share} must lie in [0, 1] (the share of its "
                             "target row the pair itself keeps; 0 = uncapped)")
        if not 0.0 < float(h.mask_min_score) <= 1.0:
            raise ValueError(f"config.loss.hierarchy.mask_min_score={h.mask_min_score} must lie in (0, 1]")


def _one_of(value: Any, allowed: tuple, field: str) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r}: use one of {', '.join(map(repr, allowed))}")


def _positive(cfg: Any, section: str, fields: tuple[str, ...]) -> None:
    for key in fields:
        if section in cfg and key in cfg[section] and int(cfg[section][key]) <= 0:
            raise ValueError(f"config.{section}.{key}={cfg[section][key]} must be > 0")


def _validate_stage2(cfg: Any, aot: bool) -> None:
    _one_of(cfg.data.source, config_lib.DATA_SOURCES, "config.data.source")
    if cfg.data.source == "demo" and not aot:
        sizes = cfg.data.demo
        if sizes.num_phenotypes < 8 or min(sizes.train_pairs, sizes.test_pairs) < sizes.num_phenotypes \
                or sizes.val_pairs < 0 or cfg.data.image_size < 16:
            raise ValueError(f"config.data.demo={dict(sizes)} / config.data.image_size={cfg.data.image_size}: the demo "
                             "needs num_phenotypes >= 8, train_pairs and test_pairs >= num_phenotypes, val_pairs >= 0 "
                             "and image_size >= 16")
    if cfg.data.source == "jsonl" and not cfg.data.manifest and not aot:
        raise ValueError("config.data.manifest is empty: config.data.source='jsonl' needs a JSONL manifest path")
    _one_of(cfg.model.remat, config_lib.REMAT_POLICIES, "config.model.remat")
    img, patch = cfg.data.image_size, cfg.model.image.patch_size
    if img % patch:
        raise ValueError(f"config.model.image.patch_size={patch} does not divide config.data.image_size={img}")
    _one_of(cfg.model.image_head, ("linear", "mlp"), "config.model.image_head")
    _one_of(cfg.text.pool, ("cls", "mean"), "config.text.pool")
    if cfg.loss.chunk < 0:
        raise ValueError(f"config.loss.chunk={cfg.loss.chunk} must be >= 0 (0 = plain loss)")
    if cfg.init.get("required") and not cfg.init.checkpoint and not aot:
        raise ValueError("config.init.checkpoint is empty: this variant starts from BiomedCLIP. "
                         f"{config_lib.BIOMEDCLIP_HOWTO}")


def _subset_of(values: Any, allowed: tuple[str, ...], field: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{field} has unknown {', '.join(map(repr, unknown))}: use any of {', '.join(allowed)}")


def _validate_eval(cfg: Any) -> None:
    _subset_of(cfg.evaluators, config_lib.EVALUATORS, "config.evaluators")
    _one_of(cfg.data.kind, config_lib.EVAL_DATA_KINDS, "config.data.kind")
    if not cfg.checkpoint:
        raise ValueError("config.checkpoint is empty: give a stage-1/stage-2 workdir or an open_clip directory")
    if cfg.batch_size <= 0:
        raise ValueError(f"config.batch_size={cfg.batch_size} must be > 0")
    for field in ("checkpoint", "data.manifest", "data.path"):
        value = cfg[field]
        if value and not os.path.exists(value):
            raise ValueError(f"config.{field}={value!r} does not exist")
    if cfg.data.kind == "manifest" and not cfg.data.manifest:
        raise ValueError("config.data.manifest is empty: config.data.kind='manifest' needs a manifest path")
    if cfg.data.kind in ("folder", "medmnist") and not cfg.data.path:
        raise ValueError(f"config.data.path is empty: config.data.kind={cfg.data.kind!r} needs it")


def _validate_export(cfg: Any) -> None:
    _subset_of(cfg.formats, config_lib.EXPORT_FORMATS, "config.formats")
    for field in ("checkpoint", "output"):
        if not cfg[field]:
            raise ValueError(f"config.{field} is empty")
    if not os.path.exists(cfg.checkpoint):
        raise ValueError(f"config.checkpoint={cfg.checkpoint!r} does not exist")


def _validate_image_checkpoint(cfg: Any) -> None:
    """config.checkpoint of the commands that need an image tower (predict, serve)."""
    if not cfg.checkpoint:
        raise ValueError("config.checkpoint is empty: set --config.checkpoint=RUN (a stage-2 workdir or open_clip dir)")
    if not os.path.exists(cfg.checkpoint):
        raise ValueError(f"config.checkpoint={cfg.checkpoint!r} does not exist: give a stage-2 workdir (or a "
                         "checkpoint folder inside one) or an open_clip directory")


def _validate_candidates(cfg: Any) -> None:
    """config.candidates of predict and serve: '', 'all' or a file of HPO ids."""
    if cfg.candidates not in ("", "all") and not os.path.isfile(cfg.candidates):
        raise ValueError(f"config.candidates={cfg.candidates!r} is not a file: give a JSON list or a text file of "
                         "HPO ids, 'all' for every term under HP:0000118, or '' for the default")


def _validate_serve(cfg: Any) -> None:
    """The serve command's fields (organ systems are offered from the run's candidates once it loads)."""
    _validate_image_checkpoint(cfg)
    for field in ("top_k", "batch_size", "max_images", "keep_cases"):
        if int(cfg[field]) < 1 or int(cfg[field]) != cfg[field]:
            raise ValueError(f"config.{field}={cfg[field]!r} must be a positive integer")
    if not 0 <= int(cfg.port) <= 65535 or int(cfg.port) != cfg.port:
        raise ValueError(f"config.port={cfg.port!r} must be an integer in [0, 65535] (0 = any free port)")
    if not cfg.host:
        raise ValueError("config.host is empty: use 127.0.0.1 (this machine only) or an interface address")
    if not math.isfinite(float(cfg.max_upload_mb)) or float(cfg.max_upload_mb) <= 0:
        raise ValueError(f"config.max_upload_mb={cfg.max_upload_mb!r} must be > 0 (megabytes per image)")
    if not isinstance(cfg.temperature, (int, float)) or cfg.temperature < 0:
        raise ValueError(f"config.temperature={cfg.temperature!r} must be >= 0 (0 = the run's calibration.json or 1)")
    if not isinstance(cfg.case_min_probability, (int, float)) or not 0 <= cfg.case_min_probability <= 1:
        raise ValueError(f"config.case_min_probability={cfg.case_min_probability!r} must lie in [0, 1]")
    _validate_candidates(cfg)


def _validate_predict(cfg: Any) -> None:
    _validate_image_checkpoint(cfg)
    if not cfg.images or not os.path.isdir(cfg.images):
        raise ValueError(f"config.images={cfg.images!r} is not a folder: set --config.images=FOLDER of images")
    if int(cfg.top_k) < 1 or int(cfg.batch_size) < 1:
        raise ValueError(f"config.top_k={cfg.top_k}, config.batch_size={cfg.batch_size}: must be positive integers")
    _subset_of(cfg.formats, config_lib.PREDICT_FORMATS, "config.formats")
    if not tuple(cfg.formats):
        raise ValueError(f"config.formats=(): choose a non-empty subset of {config_lib.PREDICT_FORMATS}")
    _validate_candidates(cfg)


def _validate_link(cfg: Any) -> None:
    """The link command's fields (the organ system is checked against the ontology when it loads)."""
    if not cfg.input:
        raise ValueError("config.input is empty: set --config.input=FILE (a JSONL manifest, ROCO's captions.txt "
                         "or one caption per line)")
    if "://" not in cfg.input and not os.path.isfile(cfg.input):
        raise ValueError(f"config.input={cfg.input!r} is not a file")
    _one_of(cfg.input_format, ("auto", "jsonl", "tsv", "text"), "config.input_format")
    if cfg.method:
        _one_of(cfg.method, config_lib.LINK_METHODS, "config.method")
    if cfg.method in ("encoder", "hybrid") and not cfg.encoder:
        raise ValueError(f"config.encoder is empty: config.method={cfg.method!r} needs a stage-1 workdir "
                         "(--config.encoder=RUN)")
    if cfg.encoder and not os.path.exists(cfg.encoder):
        raise ValueError(f"config.encoder={cfg.encoder!r} does not exist: give a stage-1 workdir")
    if not math.isfinite(float(cfg.threshold)) or not -1.0 <= float(cfg.threshold) <= 1.0:
        raise ValueError(f"config.threshold={cfg.threshold} must be a cosine in [-1, 1]")
    for field in ("max_span_words", "negation_window", "batch_size", "chunk"):
        if int(cfg[field]) < 1:
            raise ValueError(f"config.{field}={cfg[field]} must be >= 1")
    if int(cfg.progress_every) < 0:
        raise ValueError(f"config.progress_every={cfg.progress_every} must be >= 0 (0 = no progress lines)")
    _one_of(cfg.existing, ("merge", "replace"), "config.existing")
    _one_of(cfg.span_filter, ("none", "anatomy", "finding"), "config.span_filter")
    _subset_of(cfg.lexical.scopes, ("EXACT", "RELATED", "NARROW", "BROAD"), "config.lexical.scopes")
    if int(cfg.lexical.min_chars) < 1 or int(cfg.lexical.acronym_max_len) < 0:
        raise ValueError(f"config.lexical.min_chars={cfg.lexical.min_chars} must be >= 1 and "
                         f"config.lexical.acronym_max_len={cfg.lexical.acronym_max_len} >= 0")
    if cfg.ontology.obo_path and not os.path.isfile(cfg.ontology.obo_path):
        raise ValueError(f"config.ontology.obo_path={cfg.ontology.obo_path!r} is not a file")


def _validate_ablation(cfg: Any) -> None:
    """The ablation's own fields (each arm's stage-2 config is validated when its run starts)."""
    unknown = sorted(set(cfg.arms) - set(config_lib.ABLATION_ARMS))
    if unknown or not cfg.arms or not cfg.seeds:
        raise ValueError(f"config.arms={tuple(cfg.arms)} / config.seeds={tuple(cfg.seeds)}: arms must be a non-empty "
                         f"subset of {config_lib.ABLATION_ARMS} and seeds non-empty")
    n, demo_cfg = int(cfg.eval_test_pairs), cfg.stage2.data
    if n and (demo_cfg.source != "demo" or n < demo_cfg.demo.num_phenotypes):
        raise ValueError(f"config.eval_test_pairs={n}: needs stage2.data.source='demo' and at least "
                         f"stage2.data.demo.num_phenotypes={demo_cfg.demo.num_phenotypes} pairs (0 = off)")
    if cfg.medpix.dir and not os.path.isdir(cfg.medpix.dir):
        raise ValueError(f"config.medpix.dir={cfg.medpix.dir!r} is not a folder: give MedPix 2.0's MedPix-2-0 folder "
                         "(git clone https://github.com/CHILab1/MedPix-2.0) or '' for no label evaluation")
