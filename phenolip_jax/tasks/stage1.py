"""Stage 1: train the phenotype knowledge encoder on HPO text; evaluate held-out synonym retrieval.

Writes to the workdir: metrics.jsonl, tb/, checkpoints/, eval.json ({"before": .., "after": ..}),
phenotype_table.npz (ids, unit vectors, names) and stage1_config.json (to rebuild the encoder).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import grain
import jax
import numpy as np

from phenolip_jax import artifacts, config_checks
from phenolip_jax.data import term_batches as tb
from phenolip_jax.data import text_views as tv
from phenolip_jax.data.tokenize import tokenize_captions
from phenolip_jax.evaluate.concept_retrieval import related_parent_child, results_table
from phenolip_jax.inference import text_encoder
from phenolip_jax.link import mentions
from phenolip_jax.models import two_tower
from phenolip_jax.ontology import organ_table, release_info, sized_ancestor_table
from phenolip_jax.tasks import common
from phenolip_jax.train import build as build_lib
from phenolip_jax.train import loop, objectives
from phenolip_jax.train import mesh as mesh_lib


class Stage1Features(grain.transforms.Map):
    """N x K text views -> tokenised rows with the terms' ancestor and organ-system tables."""

    def __init__(self, tokenizer: Any, max_len: int, anc: np.ndarray, hops: np.ndarray, organs: np.ndarray):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.anc, self.hops, self.organs = anc, hops, organs

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts, terms = tb.flatten_term_batch(batch)
        ids, mask = tokenize_captions(self.tokenizer, texts, self.max_len)
        return dict(input_ids=ids, attention_mask=mask, hpo=terms[:, None], hpo_anc=self.anc[terms][:, None],
                    hpo_hops=self.hops[terms][:, None], organs=self.organs[terms])


def keep_view_kinds(views: Any, kinds: tuple[str, ...]) -> Any:
    """Drops view kinds not in `kinds` (the name is always kept: it anchors every term)."""
    unknown = set(kinds) - set(tv.VIEW_KINDS)
    if unknown:
        raise ValueError(f"config.data.view_kinds has unknown kinds {sorted(unknown)}; use {tv.VIEW_KINDS}")
    kept = {t: tuple(v for v in vs if v[1] == "name" or v[1] in kinds) for t, vs in views.views.items()}
    return dataclasses.replace(views, views=kept)


def stage1_batches(cfg: Any, views: Any, tokenizer: Any, onto: Any):
    """Checkpointable grain iterator of N terms x K tokenised views (this process's share of terms)."""
    every = np.arange(len(onto))
    anc, hops = sized_ancestor_table(onto, every, cfg.loss.hierarchy.max_hops, cfg.data.max_ancestors,
                                     strict=cfg.data.strict)
    organs = organ_table(onto, every, width=cfg.data.max_organs)
    terms = cfg.data.terms_per_batch // jax.process_count()
    pool = views.terms[jax.process_index()::jax.process_count()]
    group = cfg.data.hard_negative_group
    related = None
    if group > 1:
        relation = cfg.data.get("group_relation", "siblings")
        related = (tb.family_groups(onto, views.terms, cfg.loss.hierarchy.max_hops) if relation == "family"
                   else tb.related_groups(onto, views.terms))
    ds = tb.stage1_dataset(views, num_terms=terms, views_per_term=cfg.data.views_per_term, seed=cfg.seed,
                           term_pool=pool, kind_weights=dict(cfg.data.kind_weights), group=group, related=related,
                           mention_rate=cfg.data.get("mention_rate", 0.0))
    ds = ds.map(Stage1Features(tokenizer, cfg.data.max_len, anc, hops, organs)).to_iter_dataset()
    if cfg.data.workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.data.workers))
    return iter(ds)


def identity_head(head: dict, kind: str) -> dict:
    """Head params that pass the pooled encoder output through unchanged (zero-padded to the embedding width).

    'linear': kernel [I | 0]. 'mlp': fc1 = [I, -I, 0] and fc2 = [I; -I; 0], exact because
    GELU(x) - GELU(-x) = x. Training then starts from the pretrained space instead of a random projection.
    """
    def eye(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.eye(*shape, dtype=dtype)

    head = jax.tree.map(np.zeros_like, jax.device_get(head))  # biases (if any) become zero
    if kind == "linear":
        width, out = head["proj"]["kernel"].shape
        if out < width:
            raise ValueError(f"config.text.head_init='identity' needs embed_dim >= encoder width ({out} < {width})")
        head["proj"]["kernel"] = eye((width, out), head["proj"]["kernel"].dtype)
    elif kind == "mlp":
        width, hidden = head["fc1"]["kernel"].shape
        out = head["fc2"]["kernel"].shape[1]
        if hidden < 2 * width or out < width:
            raise ValueError(f"config.text.head_init='identity' with head='mlp' needs head_hidden >= 2 x encoder "
                             f"width ({hidden} < {2 * width}) and embed_dim >= width ({out} < {width})")
        fc1, fc2 = head["fc1"]["kernel"], head["fc2"]["kernel"]
        fc1[:, :width], fc1[:, width:2 * width] = eye((width, width), fc1.dtype), -eye((width, width), fc1.dtype)
        fc2[:width, :width], fc2[width:2 * width, :width] = eye((width, width), fc2.dtype), -eye((width, width), fc2.dtype)
    elif kind != "none":
        raise ValueError(f"config.text.head={kind!r}: use 'linear', 'mlp' or 'none'")
    return head


def query_sets(views: Any, cfg: Any) -> dict[str, tuple[list[str], np.ndarray]]:
    """Held-out query sets ('synonym', 'layperson', 'abbreviation'): (texts, gold term indices), capped."""
    out = {}
    for name, pairs in views.query_sets.items():
        pairs = pairs[: cfg.eval.max_queries] if cfg.eval.max_queries else pairs
        out[name] = ([t for t, _ in pairs], np.array([i for _, i in pairs], np.int64))
    return out


def _evaluate(encode, onto, candidates: np.ndarray, sets: dict, cfg: Any) -> tuple[dict[str, dict], np.ndarray]:
    """Held-out query -> term-name retrieval per query set; returns the metrics and the names' embeddings."""
    names = encode([onto.names[i] for i in candidates])
    return mentions.encoder_scores(encode, onto, candidates, sets, tuple(cfg.eval.ks),
                                   related_parent_child(onto, candidates), names=names), names


def string_baselines(onto: Any, candidates: np.ndarray, views: Any, sets: dict, cfg: Any) -> dict[str, dict]:
    """Exact and normalised-fuzzy string matching per query set: held-out ontology queries against names and
    training synonyms (their own synonym is held out), real mentions ('mentions:*') against every string of a
    term, as `python -m phenolip_jax.link.mentions` scores them."""
    related, ks = related_parent_child(onto, candidates), tuple(cfg.eval.ks)
    training = [[t for t, kind in views.views[int(c)] if kind in ("name", "synonym")] for c in candidates]
    ontology_sets = {k: v for k, v in sets.items() if not k.startswith("mentions:")}
    out = mentions.string_scores(onto, candidates, ontology_sets, ks, related, strings=training)
    real = mentions.string_scores(onto, candidates, {k: v for k, v in sets.items() if k not in ontology_sets}, ks,
                                  related)
    return {kind: {**out[kind], **real[kind]} for kind in out}


def save_encoder(path: str, text_params: Any) -> None:
    """Writes the trained TextTower params as an orbax checkpoint (the stage-2 teacher)."""
    artifacts.save_params(path, {"text": text_params})


def load_encoder(workdir: str) -> tuple[Any, dict, dict]:
    """(TextTower, params, stage1_config.json) of a finished stage-1 workdir."""
    meta, params = artifacts.read_stage1_encoder(workdir)
    return two_tower.text_tower_from_config(meta["text_tower"]), params, meta


def build_model(cfg: Any, bert_kwargs: dict) -> tuple[Any, Any, dict]:
    """(TextTower, its objective, its fields) from the config: what the run trains and --aot compiles."""
    fields = common.text_tower_fields(cfg.text, bert_kwargs, cfg.text.dtype)
    model = two_tower.text_tower_from_config(fields)
    return model, objectives.stage1_objective(model, cfg), fields


def batch_shapes(cfg: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{key: (global shape, dtype)} of a train batch, as `stage1_batches` yields them (all processes)."""
    rows, length = cfg.data.terms_per_batch * cfg.data.views_per_term, cfg.data.max_len
    i32, width = np.int32, common.ancestor_width(cfg)
    return dict(input_ids=((rows, length), i32), attention_mask=((rows, length), i32), hpo=((rows, 1), i32),
                hpo_anc=((rows, 1, width), i32), hpo_hops=((rows, 1, width), i32),
                organs=((rows, cfg.data.max_organs), i32))


def abstract_step(cfg: Any, mesh: jax.sharding.Mesh) -> tuple[build_lib.ShardedStep, dict]:
    """The run's sharded step and a batch, abstract (no weights or data; BERT sizes from the config)."""
    model, objective, _ = build_model(cfg, common.bert_fields(cfg.text))
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    text = jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]
    params = {"text": text, "logit_scale": jax.ShapeDtypeStruct((), np.float32)}
    return build_lib.build_step(cfg, mesh, objective, params), build_lib.abstract_batch(batch_shapes(cfg), mesh)


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Trains stage 1 from `cfg` into `workdir`; returns the before/after evaluation."""
    config_checks.validate(cfg, jax.device_count())
    if cfg.text.head_init not in ("random", "identity"):
        raise ValueError(f"config.text.head_init={cfg.text.head_init!r}: use 'random' or 'identity'")
    if not 0.0 <= float(cfg.data.get("mention_rate", 0.0)) <= 1.0:
        raise ValueError(f"config.data.mention_rate={cfg.data.mention_rate} must be in [0, 1]")
    weights = dict(cfg.data.kind_weights)
    if (set(weights) - set(tv.VIEW_KINDS[1:]) or not all(w >= 0 for w in weights.values())  # NaN fails too
            or not any(weights.values())):
        raise ValueError(f"config.data.kind_weights={weights}: non-negative weights, not all 0, of the kinds "
                         f"{tv.VIEW_KINDS[1:]}")
    if cfg.data.get("group_relation", "siblings") not in ("siblings", "family"):
        raise ValueError(f"config.data.group_relation={cfg.data.group_relation!r}: use 'siblings' or 'family'")
    if cfg.data.hard_negative_group < 1 or cfg.data.terms_per_batch % cfg.data.hard_negative_group:
        raise ValueError(f"config.data.hard_negative_group={cfg.data.hard_negative_group} must be >= 1 and divide "
                         f"config.data.terms_per_batch={cfg.data.terms_per_batch}")
    t0 = time.time()
    onto = common.load_ontology_from_config(cfg.ontology)
    pool = np.asarray(onto.subtree(cfg.ontology.root), np.int64)
    typed = (tv.typed_synonyms(onto, cfg.ontology.obo_path or None) if cfg.data.typed_heldout_fraction > 0
             else None)
    views = tv.build_text_views(onto, root=cfg.ontology.root, holdout_fraction=cfg.data.heldout_fraction,
                                seed=cfg.seed, typed_holdout_fraction=cfg.data.typed_heldout_fraction, typed=typed,
                                val_fraction=cfg.data.get("val_query_fraction", 0.0))
    views = keep_view_kinds(views, tuple(cfg.data.view_kinds))
    sets = query_sets(views, cfg)
    real = mentions.read_mention_sets(cfg.eval.get("mention_sets", ""), onto, pool)  # read before training
    for found in real:
        sets[f"mentions:{found.name}"] = (list(found.texts), found.gold)
        print(f"stage 1: mention set {found.name}: {len(found.texts)} mentions, dropped {found.dropped}", flush=True)
    _, tparams, tokenizer, fields = common.load_text_encoder(cfg.text, cfg.text.dtype, cfg.seed)
    model, objective, fields = build_model(cfg, fields["bert"])
    if cfg.text.head_init == "identity" and cfg.text.head != "none":
        tparams["head"] = identity_head(tparams["head"], cfg.text.head)
    print(f"stage 1: {len(pool)} terms under {cfg.ontology.root}, held-out queries "
          f"{ {k: len(v[0]) for k, v in sets.items()} }, encoder {cfg.text.hf_dir} ({time.time() - t0:.1f}s)",
          flush=True)
    params = {"text": tparams, "logit_scale": common.log_scale(cfg.loss.logit_scale_init)}
    encode_with = lambda m, p: text_encoder(  # noqa: E731
        lambda ids, mask: m.apply({"params": p}, ids, mask), tokenizer, cfg.eval.max_len, cfg.eval.batch_size)

    table: dict[str, dict] = {}  # method -> query set -> metrics
    if cfg.eval.baselines:  # the pretrained encoder as published (mean-pooled, no head) and string matching
        raw = two_tower.text_tower_from_config({**fields, "head": "none"})
        table["raw"], _ = _evaluate(encode_with(raw, {"encoder": tparams["encoder"]}), onto, pool, sets, cfg)
        table.update(string_baselines(onto, pool, views, sets, cfg))
        print("raw encoder:     " + loop.format_metrics(table["raw"]["synonym"]), flush=True)
    if cfg.eval.before:
        table["before"], _ = _evaluate(encode_with(model, params["text"]), onto, pool, sets, cfg)
        print("before training: " + loop.format_metrics(table["before"]["synonym"]), flush=True)
    final_text = params["text"]
    if cfg.total_steps:  # 0 steps: the starting encoder is the result (the untrained-teacher baseline)
        state, _ = loop.train(
            cfg, workdir, params=params, objective=objective,
            make_data_iter=lambda: stage1_batches(cfg, views, tokenizer, onto),
            progress_keys=("loss", "logit_scale", "lr"),
        )
        final_text = mesh_lib.host_copy(state.params["text"])
    table["after"], name_emb = _evaluate(encode_with(model, final_text), onto, pool, sets, cfg)
    print("after training:  " + loop.format_metrics(table["after"]["synonym"]), flush=True)
    result = {"before": table.get("before", {}).get("synonym", {}), "after": table["after"]["synonym"],
              "query_sets": {name: {method: table[method][name] for method in table} for name in sets}}
    if "raw" in table:
        result["raw"] = table["raw"]["synonym"]
    print(results_table(result["query_sets"]), flush=True)
    artifacts.write_json(os.path.join(workdir, "eval.json"), result)
    artifacts.write_json(os.path.join(workdir, artifacts.STAGE1_CONFIG),
                      {"text_tower": fields, "max_len": cfg.data.max_len, "hf_dir": cfg.text.hf_dir,
                       "obo_path": cfg.ontology.obo_path, "root": cfg.ontology.root,
                       "ontology": release_info(onto, cfg.ontology.obo_path)})
    save_encoder(os.path.join(workdir, "encoder"), final_text)
    if cfg.export_table and jax.process_index() == 0:
        np.savez(os.path.join(workdir, "phenotype_table.npz"), ids=np.array([onto.ids[i] for i in pool]),
                 vectors=name_emb.astype(np.float32), names=np.array([onto.names[i] for i in pool]))
    print(f"stage 1 done in {time.time() - t0:.0f}s; results in {workdir}", flush=True)
    return result
