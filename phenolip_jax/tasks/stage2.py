"""Stage 2: PhenoLIP pretraining (image-text contrastive + distillation from the frozen stage-1 teacher).

Writes to the workdir: metrics.jsonl, tb/, checkpoints/ (train state, for resuming), params/ (final
TwoTower params), model_config.json (to rebuild the model), eval.json (held-out retrieval with chance
levels) and, when it had to make one, teacher/ (a stage-1 run).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import config_lib
from phenolip_jax.data import images, pipeline
from phenolip_jax.data.manifest import read_manifest
from phenolip_jax.data.records import validate_records
from phenolip_jax.evaluate.retrieval import retrieval_report
from phenolip_jax.inference import text_encoder
from phenolip_jax.convert import hf_bert
from phenolip_jax.models import layers, two_tower
from phenolip_jax.tasks import common
from phenolip_jax.train import loop, objectives

PIPELINE_KEYS = ("image_size", "mean", "std", "crop_scale", "max_len", "max_hpo", "max_ancestors", "max_organs",
                 "workers", "prefetch")


def pipeline_config(cfg: Any) -> dict[str, Any]:
    """The data pipeline's fields from `config.data` (+ the hop limit of the hierarchy)."""
    out = {k: cfg.data[k] for k in PIPELINE_KEYS}
    out["per_host_batch_size"] = cfg.data.batch_size // jax.process_count()
    out["max_hops"] = cfg.loss.hierarchy.max_hops
    return out


def load_records(cfg: Any, onto: Any, tokenizer: Any) -> tuple[dict[str, list], str]:
    """Validated records per split and the image root, from the demo generator or a manifest."""
    if cfg.data.source == "demo":
        from phenolip_jax.data import demo

        root = str(demo.generate_demo_dataset(cfg.data.demo_dir or None, image_size=cfg.data.image_size,
                                              ontology=onto, seed=cfg.seed, **dict(cfg.data.demo)))
        manifest, image_root = os.path.join(root, "manifest.jsonl"), root
    elif cfg.data.source == "jsonl":
        if not cfg.data.manifest:
            raise ValueError("config.data.manifest is empty (config.data.source='jsonl')")
        manifest, image_root = cfg.data.manifest, cfg.data.image_root or os.path.dirname(cfg.data.manifest)
    else:
        raise ValueError(f"config.data.source={cfg.data.source!r}: use 'demo' or 'jsonl'")
    records = read_manifest(manifest)
    if cfg.data.test_csv:
        records += read_manifest(cfg.data.test_csv)
    kept, report = validate_records(records, onto, image_root, tokenizer=tokenizer, max_len=cfg.data.max_len,
                                    strict=cfg.data.strict, max_hpo=cfg.data.max_hpo)
    print(f"data: {report.summary() if hasattr(report, 'summary') else report}", flush=True)
    splits: dict[str, list] = {}
    for r in kept:
        splits.setdefault(r.split, []).append(r)
    if "train" not in splits:
        raise ValueError(f"no usable train records in {manifest}")
    return splits, image_root


def teacher_params(cfg: Any, workdir: str) -> tuple[Any, dict, dict]:
    """(teacher TextTower, its params, its stage-1 config) from config.teacher, running stage 1 if needed."""
    from phenolip_jax.tasks import stage1

    tdir = cfg.teacher.workdir
    if not tdir:
        tdir = os.path.join(workdir, "teacher")
        if not os.path.exists(os.path.join(tdir, "encoder")):
            print(f"no config.teacher.workdir: training a stage-1 teacher into {tdir}", flush=True)
            scfg = config_lib.load_config("stage1", cfg.teacher.stage1_variant)
            scfg.ontology.obo_path = cfg.ontology.obo_path
            scfg.mesh = cfg.mesh
            stage1.run(scfg, tdir)
    return stage1.load_encoder(tdir)


def init_params(cfg: Any, model: two_tower.TwoTower, text_params: dict) -> dict:
    """Random init of the two-tower model with the pretrained text encoder swapped in."""
    img = jnp.zeros((1, cfg.data.image_size, cfg.data.image_size, 3), jnp.float32)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.device_get(jax.jit(model.init)(jax.random.key(cfg.seed), img, ids, jnp.ones_like(ids))["params"])
    params["text"]["encoder"] = text_params["encoder"]
    return params


def load_init_checkpoint(path: str, expected: dict) -> dict:
    """Params from a stage-2 run dir or an open_clip (BiomedCLIP) dir, checked against the model's shapes."""
    from phenolip_jax.convert import export, open_clip

    if os.path.exists(os.path.join(path, "model_config.json")):
        _, params = export.load_run_params(path)
    elif os.path.exists(os.path.join(path, "open_clip_config.json")):
        _, params = open_clip.import_open_clip(path)
    else:
        raise FileNotFoundError(f"config.init.checkpoint={path!r} is neither a stage-2 run dir (model_config.json) "
                                "nor an open_clip dir (open_clip_config.json)")
    want = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if bad:
        detail = ", ".join(f"{k}: model {want.get(k)} vs checkpoint {got.get(k)}" for k in bad[:10])
        raise ValueError(f"config.init.checkpoint={path!r} does not fit config.model ({len(bad)} mismatches): {detail}")
    return jax.tree.map(lambda a, b: np.asarray(a, np.asarray(b).dtype), params, expected)


def make_evaluator(cfg: Any, model: two_tower.TwoTower, records: list, image_root: str, tokenizer: Any,
                   onto: Any):
    """A `state -> metrics` function computing held-out retrieval."""
    pcfg = pipeline_config(cfg)
    pcfg["per_host_batch_size"] = cfg.eval.batch_size
    # Every process evaluates the whole held-out split on its own devices (it is small), so each one
    # holds all rows that the metrics index.
    batches = list(pipeline.make_eval_batches(pcfg, records, tokenizer, onto, image_root=image_root,
                                              process_index=0, process_count=1))
    pheno_ids = sorted({h for r in records for h in r.hpo_ids})
    pos = {h: i for i, h in enumerate(pheno_ids)}
    row_phen = [[pos[h] for h in r.hpo_ids] for r in records]
    names = [onto.names[onto.index(h)] for h in pheno_ids]
    enc_img = jax.jit(lambda p, x: model.apply({"params": p}, images.model_input(x, cfg.data),
                                               method=model.encode_image))
    enc_txt = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, method=model.encode_text))

    def evaluate(state) -> dict[str, float]:
        params = jax.device_get(state.params)
        imgs, txts, img_ids = [], [], []
        for b in batches:
            keep = np.asarray(b["valid"], bool)
            imgs.append(np.asarray(enc_img(params, b["image"]))[keep])
            txts.append(np.asarray(enc_txt(params, b["input_ids"], b["attention_mask"]))[keep])
            img_ids.append(np.asarray(b["image_id"])[keep])
        enc_names = text_encoder(lambda i, m: enc_txt(params, i, m), tokenizer, cfg.data.max_len, cfg.eval.batch_size)
        return retrieval_report(np.concatenate(imgs), np.concatenate(txts), np.concatenate(img_ids),
                                enc_names(names), row_phen, ks=tuple(cfg.eval.ks))

    return evaluate


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Trains stage 2 from `cfg` into `workdir`; returns the final held-out evaluation."""
    config_lib.validate(cfg, jax.device_count())
    t0 = time.time()
    onto = common.load_ontology_from_config(cfg.ontology)
    text_model, text_params, tokenizer, text_fields = common.load_text_encoder(cfg.text, cfg.model.dtype, cfg.seed)
    splits, image_root = load_records(cfg, onto, tokenizer)
    test = splits.get("test") or splits.get("val")
    if not test:
        raise ValueError("no 'test' or 'val' split to evaluate on")
    teacher = None
    teacher_model = None
    if cfg.loss.kd_weight > 0 or cfg.loss.struct_weight > 0:
        teacher_model, tparams, tmeta = teacher_params(cfg, workdir)
        teacher = {"params": {"text": tparams}}
        if cfg.loss.struct_weight > 0:
            ttok = hf_bert.load_tokenizer(tmeta["hf_dir"])
            phen = sorted({h for r in splits["train"] for h in r.hpo_ids})
            enc = text_encoder(lambda i, m: teacher_model.apply({"params": tparams}, i, m), ttok, tmeta["max_len"])
            teacher["phenotypes"] = enc([onto.names[onto.index(h)] for h in phen])
    image_fields = dict(vit=dict(cfg.model.image, remat=cfg.model.remat), head=cfg.model.image_head,
                        embed_dim=cfg.model.embed_dim, head_hidden_dim=cfg.model.image_head_hidden, head_bias=False)
    text_fields = {k: v for k, v in text_fields.items() if k != "dtype"}
    text_fields["bert"] = dict(text_fields["bert"], remat=cfg.model.remat)  # config.model.remat: both towers
    text_fields["embed_dim"] = cfg.model.embed_dim
    if not cfg.text.head_hidden:  # open_clip's hf_proj_type='mlp' width, so the model exports 1:1
        text_fields["head_hidden_dim"] = (text_fields["bert"]["width"] + cfg.model.embed_dim) // 2
    model = two_tower.TwoTower(
        image_config=image_fields, text_config=text_fields, logit_scale_init=float(np.log(cfg.model.logit_scale_init)),
        logit_bias_init=cfg.model.logit_bias_init if cfg.loss.kind == "sigmoid" else None,
        dtype=layers.canonical_dtype(cfg.model.dtype),
    )
    params = init_params(cfg, model, text_params)
    if cfg.init.checkpoint:
        params = load_init_checkpoint(cfg.init.checkpoint, params)
        print(f"initialised from {cfg.init.checkpoint}", flush=True)
    common.write_json(os.path.join(workdir, "model_config.json"), {
        "image_config": image_fields, "text_config": text_fields, "dtype": cfg.model.dtype,
        "text_hf_dir": cfg.text.hf_dir, "max_len": cfg.data.max_len, "image_size": cfg.data.image_size,
        "mean": list(cfg.data.mean), "std": list(cfg.data.std)})
    print(f"stage 2: {len(splits['train'])} train / {len(test)} test pairs ({time.time() - t0:.0f}s)", flush=True)
    evaluate = make_evaluator(cfg, model, test, image_root, tokenizer, onto)
    state, last = loop.train(
        cfg, workdir, params=params, teacher=teacher,
        objective=objectives.stage2_objective(model, teacher_model, cfg),
        make_data_iter=lambda: pipeline.make_train_iterator(pipeline_config(cfg), splits["train"], tokenizer, onto,
                                                            cfg.seed, image_root=image_root),
        evaluate=evaluate, progress_keys=("loss", "loss_it", "loss_kd", "logit_scale"),
        eval_keys=tuple(f"{t}_r@10" for t in ("i2t", "t2i", "i2p", "p2i")) + ("chance_r@10",),
    )
    final = last or evaluate(state)
    common.save_params(os.path.join(workdir, "params"), jax.device_get(state.params))
    common.write_json(os.path.join(workdir, "eval.json"), final)
    k = 10 if 10 in cfg.eval.ks else cfg.eval.ks[0]
    print(json.dumps({key: round(final[key], 4) for key in
                      (f"i2t_r@{k}", f"t2i_r@{k}", f"i2p_r@{k}", f"p2i_r@{k}", f"chance_r@{k}",
                       f"i2p_chance_r@{k}", f"p2i_chance_r@{k}") if key in final}), flush=True)
    print(f"stage 2 done in {time.time() - t0:.0f}s; results in {workdir}", flush=True)
    return final
