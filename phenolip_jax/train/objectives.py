"""Objectives composed from the config: stage 1 (ontology text) and stage 2 (image-text + distillation).

Each objective is a `step.SplitObjective`: callable as `(params, teacher, batch, rng) -> (loss, metrics)`,
the only thing the shared train step needs, and split into embeddings and a loss of embeddings, which
exact gradient accumulation needs. The formulas are in docs/models.md ("Losses") and `phenolip_jax/losses.py`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from phenolip_jax import losses
from phenolip_jax.data import images
from phenolip_jax.data.teacher_inputs import teacher_ids
from phenolip_jax.train.step import SplitObjective


def hpo_tables(batch: dict) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The per-example HPO tables (terms, ancestors, hops, organs) that hierarchical targets are built from."""
    return batch["hpo"], batch["hpo_anc"], batch["hpo_hops"], batch["organs"]


def batch_relation_scores(batch: dict, hierarchy: Any) -> jax.Array:
    """Global-batch [B, B] ontology relation scores from the per-example HPO tables in the batch."""
    return losses.hierarchical_soft_targets(
        *hpo_tables(batch), *hpo_tables(batch), hop_decay=hierarchy.hop_decay,
        organ_weight=hierarchy.organ_weight,
    )


def teacher_embedding(teacher_model: Any, teacher: Any, batch: dict) -> jax.Array:
    """The frozen teacher's caption embedding: precomputed (`teacher_emb`), or run on the ids it reads."""
    if "teacher_emb" in batch:
        return jax.lax.stop_gradient(batch["teacher_emb"])
    ids, mask = teacher_ids(batch)
    return jax.lax.stop_gradient(teacher_model.apply({"params": teacher["params"]["text"]}, ids, mask))


def pair_targets(batch: dict, hierarchy: Any, blockwise: bool = False) -> jax.Array | losses.BlockTargets | None:
    """Soft targets for image-caption pairs: the pair itself plus ontology-related pairs; None = identity.

    Mode 'soft' only (mode 'mask' keeps identity targets: `pair_exclusions`); the loss applies `own_share`.
    blockwise=True gives the rule (`losses.BlockTargets`) for a chunked loss to build block by block.
    """
    if not hierarchy.enabled or hierarchy.get("mode", "soft") != "soft":
        return None
    fn = functools.partial(losses.hierarchical_pair_targets, hop_decay=hierarchy.hop_decay,
                           organ_weight=hierarchy.organ_weight)
    return _pair_rule(fn, batch, blockwise)


def _pair_rule(fn: Callable[..., jax.Array], batch: dict, blockwise: bool) -> jax.Array | losses.BlockTargets:
    """A pair rule over the batch's HPO tables: as a `losses.BlockTargets` (blockwise) or evaluated [B, B]."""
    tables = hpo_tables(batch)
    if blockwise:
        return losses.BlockTargets(fn, tables, tables)
    ids = jnp.arange(batch["hpo"].shape[0])
    return fn(tables, tables, ids, ids)


def own_share(hierarchy: Any) -> float:
    """The share of its target row and column the pair itself keeps (0 = uncapped; soft targets only)."""
    soft = hierarchy.enabled and hierarchy.get("mode", "soft") == "soft"
    return float(hierarchy.get("own_share", 0.0)) if soft else 0.0


def excluded_pairs(rows: tuple, cols: tuple, row_ids: jax.Array, col_ids: jax.Array, hop_decay: float,
                   organ_weight: float, min_score: float) -> jax.Array:
    """bool [R, C]: other pairs whose relation score is >= min_score (false negatives to mask), never the pair."""
    scores = losses.hierarchical_soft_targets(*rows, *cols, hop_decay=hop_decay, organ_weight=organ_weight)
    return (scores >= min_score) & (row_ids[:, None] != col_ids[None, :])


def pair_exclusions(batch: dict, hierarchy: Any, blockwise: bool = False) -> jax.Array | losses.BlockTargets | None:
    """Mode 'mask' (KEP-style): the pairs to leave out of the softmax denominators; else None.

    bool [B, B], or (blockwise=True) the rule for a chunked loss to build block by block.
    """
    if not hierarchy.enabled or hierarchy.get("mode", "soft") != "mask":
        return None
    fn = functools.partial(excluded_pairs, hop_decay=float(hierarchy.hop_decay),
                           organ_weight=float(hierarchy.organ_weight), min_score=float(hierarchy.mask_min_score))
    return _pair_rule(fn, batch, blockwise)


def stage1_objective(text_model: Any, cfg: Any) -> SplitObjective:
    """Multi-positive InfoNCE over N terms x K views with hierarchical soft positives (or AdaSP)."""
    loss_cfg = cfg.loss
    if loss_cfg.kind not in ("infonce", "adasp"):
        raise ValueError(f"config.loss.kind={loss_cfg.kind!r}: use 'infonce' or 'adasp'")

    def embed(params, batch, rng):
        return {"text": text_model.apply({"params": params["text"]}, batch["input_ids"], batch["attention_mask"],
                                         train=True, rngs={"dropout": rng})}

    def loss(params, teacher, emb, batch):
        del teacher
        emb = emb["text"]
        scale = jnp.exp(params["logit_scale"]) if loss_cfg.learn_temperature else 1.0 / loss_cfg.temperature
        if loss_cfg.kind == "adasp":
            value = losses.adasp_loss(emb, batch["hpo"][:, 0], temperature=loss_cfg.temperature)
        else:
            weights = batch_relation_scores(batch, loss_cfg.hierarchy)
            if not loss_cfg.hierarchy.enabled:
                weights = (weights >= 1.0).astype(weights.dtype)  # views of the same term only
            value = losses.multi_positive_infonce(emb, weights, scale)
        return value, {"logit_scale": jnp.asarray(scale, jnp.float32)}

    return SplitObjective(embed=embed, frozen_embed=lambda teacher, batch: {}, loss=loss)


def contrastive_fn(chunk: int) -> Callable[..., jax.Array]:
    """The softmax contrastive loss to use: plain ([B, B] logits) or chunked (blockwise, same value/grads)."""
    if chunk < 0:
        raise ValueError(f"config.loss.chunk={chunk} must be >= 0 (0 = plain loss)")
    if chunk == 0:
        return losses.softmax_contrastive

    def chunked(a: jax.Array, b: jax.Array, scale: jax.Array, targets: Any = None, exclude: Any = None,
                own_share: float = 0.0) -> jax.Array:
        return losses.chunked_softmax_contrastive(a, b, scale, targets, chunk=chunk, own_share=own_share,
                                                  exclude=exclude)

    return chunked


def stage2_objective(model: Any, teacher_model: Any | None, cfg: Any) -> SplitObjective:
    """L = (w_it L_it + w_kd L_kd + w_st L_struct) / (w_it + w_kd + w_st), terms chosen by the config.

    With `config.loss.chunk` > 0 the image-text (softmax kind) and text-knowledge terms are computed
    blockwise (`losses.chunked_softmax_contrastive`): the same loss and gradients without [B, B] logits,
    and hierarchical targets built per block from the HPO tables, never as a [B, B] matrix.
    Split into embeddings (v, t; the teacher's k) and a loss of embeddings, for exact accumulation.
    """
    lc = cfg.loss
    use_kd = lc.kd_weight > 0
    use_struct = lc.struct_weight > 0
    if (use_kd or use_struct) and teacher_model is None:
        raise ValueError("config.loss.kd_weight/struct_weight > 0 need a teacher (config.teacher)")
    if lc.kind not in ("softmax", "sigmoid"):
        raise ValueError(f"config.loss.kind={lc.kind!r}: use 'softmax' or 'sigmoid'")
    chunk = int(lc.get("chunk", 0))
    contrastive = contrastive_fn(chunk)

    def embed(params, batch, rng):
        pixels = images.model_input(batch["image"], cfg.get("data"))  # uint8 -> normalised, on device
        out = model.apply(
            {"params": params}, pixels, batch["input_ids"], batch["attention_mask"],
            train=True, rngs={"dropout": rng},
        )
        return {"image": out["image"], "text": out["text"]}

    def frozen_embed(teacher, batch):
        return {"teacher": teacher_embedding(teacher_model, teacher, batch)} if use_kd or use_struct else {}

    def loss(params, teacher, emb, batch):
        v, t = emb["image"], emb["text"]
        scale = jnp.exp(params["logit_scale"])
        # The chunked loss builds the hierarchical targets block by block: O(B * chunk) memory.
        blockwise = chunk > 0 and lc.kind == "softmax"
        targets = pair_targets(batch, lc.hierarchy, blockwise=blockwise)
        exclude = pair_exclusions(batch, lc.hierarchy, blockwise=blockwise)
        if lc.kind == "softmax":
            l_it = contrastive(v, t, scale, targets, exclude=exclude, own_share=own_share(lc.hierarchy))
        else:
            labels = None if targets is None else (targets > 0).astype(jnp.float32)
            l_it = losses.sigmoid_loss(v, t, scale, params["logit_bias"], labels)
        metrics = {"loss_it": l_it, "logit_scale": scale}
        total, weight = lc.it_weight * l_it, lc.it_weight
        if use_kd:
            # = losses.knowledge_distillation(t, k, scale) when chunk == 0; the teacher side stays frozen.
            l_kd = contrastive(t, jax.lax.stop_gradient(emb["teacher"]), scale)
            metrics["loss_kd"] = l_kd
            total, weight = total + lc.kd_weight * l_kd, weight + lc.kd_weight
        if use_struct:
            phen = teacher["phenotypes"]  # [P, D] teacher phenotype embeddings (fixed anchors)
            tau = lc.struct_temperature
            teacher_logits = emb["teacher"] @ phen.T
            l_st = 0.5 * (
                losses.phenotype_structure_kl(t @ phen.T, teacher_logits, tau)
                + losses.phenotype_structure_kl(v @ phen.T, teacher_logits, tau)
            )
            metrics["loss_struct"] = l_st
            total, weight = total + lc.struct_weight * l_st, weight + lc.struct_weight
        return total / weight, metrics

    return SplitObjective(embed=embed, frozen_embed=frozen_embed, loss=loss)
