"""Objectives composed from the config: stage 1 (ontology text) and stage 2 (image-text + distillation).

Each objective is `(params, teacher, batch, rng) -> (loss, metrics)`, the only thing the shared train
step needs. The formulas are in docs/models.md ("Losses") and `phenolip_jax/losses.py`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from phenolip_jax import losses
from phenolip_jax.data import images


def batch_relation_scores(batch: dict, hierarchy: Any) -> jax.Array:
    """Global-batch [B, B] ontology relation scores from the per-example HPO tables in the batch."""
    return losses.hierarchical_soft_targets(
        batch["hpo"], batch["hpo_anc"], batch["hpo_hops"], batch["organs"],
        batch["hpo"], batch["hpo_anc"], batch["hpo_hops"], batch["organs"],
        hop_decay=hierarchy.hop_decay,
        organ_weight=hierarchy.organ_weight,
    )


def pair_targets(batch: dict, hierarchy: Any) -> jax.Array | None:
    """Soft targets for image-caption pairs: the pair itself plus ontology-related pairs; None = identity."""
    if not hierarchy.enabled:
        return None
    scores = batch_relation_scores(batch, hierarchy)
    return jnp.maximum(scores, jnp.eye(scores.shape[0], dtype=scores.dtype))


def stage1_objective(text_model: Any, cfg: Any):
    """Multi-positive InfoNCE over N terms x K views with hierarchical soft positives (or AdaSP)."""
    loss_cfg = cfg.loss

    def objective(params, teacher, batch, rng):
        del teacher
        emb = text_model.apply(
            {"params": params["text"]}, batch["input_ids"], batch["attention_mask"], train=True, rngs={"dropout": rng}
        )
        scale = jnp.exp(params["logit_scale"]) if loss_cfg.learn_temperature else 1.0 / loss_cfg.temperature
        if loss_cfg.kind == "adasp":
            loss = losses.adasp_loss(emb, batch["hpo"][:, 0], temperature=loss_cfg.temperature)
        elif loss_cfg.kind == "infonce":
            weights = batch_relation_scores(batch, loss_cfg.hierarchy)
            if not loss_cfg.hierarchy.enabled:
                weights = (weights >= 1.0).astype(weights.dtype)  # views of the same term only
            loss = losses.multi_positive_infonce(emb, weights, scale)
        else:
            raise ValueError(f"config.loss.kind={loss_cfg.kind!r}: use 'infonce' or 'adasp'")
        return loss, {"logit_scale": jnp.asarray(scale, jnp.float32)}

    return objective


def contrastive_fn(chunk: int) -> Callable[..., jax.Array]:
    """The softmax contrastive loss to use: plain ([B, B] logits) or chunked (blockwise, same value/grads)."""
    if chunk < 0:
        raise ValueError(f"config.loss.chunk={chunk} must be >= 0 (0 = plain loss)")
    if chunk == 0:
        return losses.softmax_contrastive

    def chunked(a: jax.Array, b: jax.Array, scale: jax.Array, targets: jax.Array | None = None) -> jax.Array:
        return losses.chunked_softmax_contrastive(a, b, scale, targets, chunk=chunk)

    return chunked


def stage2_objective(model: Any, teacher_model: Any | None, cfg: Any):
    """L = (w_it L_it + w_kd L_kd + w_st L_struct) / (w_it + w_kd + w_st), terms chosen by the config.

    With `config.loss.chunk` > 0 the image-text (softmax kind) and text-knowledge terms are computed
    blockwise (`losses.chunked_softmax_contrastive`): the same loss and gradients without [B, B] logits.
    """
    lc = cfg.loss
    use_kd = lc.kd_weight > 0
    use_struct = lc.struct_weight > 0
    if (use_kd or use_struct) and teacher_model is None:
        raise ValueError("config.loss.kd_weight/struct_weight > 0 need a teacher (config.teacher)")
    contrastive = contrastive_fn(int(lc.get("chunk", 0)))

    def objective(params, teacher, batch, rng):
        pixels = images.model_input(batch["image"], cfg.get("data"))  # uint8 -> normalised, on device
        out = model.apply(
            {"params": params}, pixels, batch["input_ids"], batch["attention_mask"],
            train=True, rngs={"dropout": rng},
        )
        v, t = out["image"], out["text"]
        scale = jnp.exp(params["logit_scale"])
        targets = pair_targets(batch, lc.hierarchy)
        if lc.kind == "softmax":
            l_it = contrastive(v, t, scale, targets)
        elif lc.kind == "sigmoid":
            labels = None if targets is None else (targets > 0).astype(jnp.float32)
            l_it = losses.sigmoid_loss(v, t, scale, params["logit_bias"], labels)
        else:
            raise ValueError(f"config.loss.kind={lc.kind!r}: use 'softmax' or 'sigmoid'")
        metrics = {"loss_it": l_it, "logit_scale": scale}
        total, weight = lc.it_weight * l_it, lc.it_weight
        if use_kd or use_struct:
            k = jax.lax.stop_gradient(
                teacher_model.apply({"params": teacher["params"]["text"]}, batch["input_ids"], batch["attention_mask"])
            )
        if use_kd:
            # = losses.knowledge_distillation(t, k, scale) when chunk == 0; the teacher side stays frozen.
            l_kd = contrastive(t, jax.lax.stop_gradient(k), scale)
            metrics["loss_kd"] = l_kd
            total, weight = total + lc.kd_weight * l_kd, weight + lc.kd_weight
        if use_struct:
            phen = teacher["phenotypes"]  # [P, D] teacher phenotype embeddings (fixed anchors)
            tau = lc.struct_temperature
            teacher_logits = k @ phen.T
            l_st = 0.5 * (
                losses.phenotype_structure_kl(t @ phen.T, teacher_logits, tau)
                + losses.phenotype_structure_kl(v @ phen.T, teacher_logits, tau)
            )
            metrics["loss_struct"] = l_st
            total, weight = total + lc.struct_weight * l_st, weight + lc.struct_weight
        return total / weight, metrics

    return objective
