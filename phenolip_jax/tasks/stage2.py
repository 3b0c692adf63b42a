"""Stage 2: PhenoLIP pretraining (image-text contrastive + distillation from the frozen stage-1 teacher).

Writes to the workdir: metrics.jsonl, tb/, checkpoints/ (train state, for resuming), params/ (final
TwoTower params), model_config.json (to rebuild the model), eval.json (held-out retrieval with chance
levels) and, when it had to make one, teacher/ (a stage-1 run).
"""
from __future__ import annotations

import copy
import json
import os
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import artifacts, config_checks, config_lib
from phenolip_jax.convert import export, open_clip
from phenolip_jax.data import demo, dicom, images, paths, pipeline, sources
from phenolip_jax.data.manifest import read_and_validate
from phenolip_jax.evaluate import retrieval
from phenolip_jax.evaluate.unseen import related_phenotypes, unseen_report
from phenolip_jax.inference import ensemble_prompts, text_encoder
from phenolip_jax.models import layers, two_tower
from phenolip_jax.ontology import release_info
from phenolip_jax.tasks import common, stage1
from phenolip_jax.tasks import teacher as teacher_lib
from phenolip_jax.train import build as build_lib
from phenolip_jax.train import loop, objectives, optimizer
from phenolip_jax.train import mesh as mesh_lib

PIPELINE_KEYS = ("image_size", "mean", "std", "crop_scale", "max_len", "length_buckets", "length_group_window",
                 "max_hpo", "max_ancestors", "max_organs", "workers", "prefetch", "strict")


def pipeline_config(cfg: Any) -> dict[str, Any]:
    """The data pipeline's fields from `config.data` (+ the hop limit of the hierarchy)."""
    out = {k: cfg.data[k] for k in PIPELINE_KEYS}
    out["per_host_batch_size"] = cfg.data.batch_size // jax.process_count()
    out["max_hops"] = cfg.loss.hierarchy.max_hops
    return out


def load_records(cfg: Any, onto: Any, tokenizer: Any) -> tuple[dict[str, Any], str | None]:
    """Splits of validated Records and their image root (demo, jsonl), or lazily read splits (arrayrecord, tfds)."""
    sources.validate_source(cfg.data)
    if cfg.data.source in sources.LAZY_SOURCES:
        lazy, report = sources.load_lazy_splits(cfg.data, onto, tokenizer)
        print(f"data: {report}", flush=True)
        return lazy, None
    if cfg.data.source == "demo":
        root = str(demo.generate_demo_dataset(cfg.data.demo_dir or None, image_size=cfg.data.image_size,
                                              ontology=onto, seed=cfg.seed, **dict(cfg.data.demo)))
        manifest, image_root = os.path.join(root, "manifest.jsonl"), root
    else:  # 'jsonl' (validate_source checked the name and the manifest)
        manifest, image_root = cfg.data.manifest, cfg.data.image_root or paths.parent(cfg.data.manifest)
    manifests = [manifest] + ([cfg.data.test_csv] if cfg.data.test_csv else [])
    kept, report = read_and_validate(manifests, onto, image_root, strict=cfg.data.strict, tokenizer=tokenizer,
                                     max_len=cfg.data.max_len, max_hpo=cfg.data.max_hpo, max_hpo_splits=("train",),
                                     allow_absolute=cfg.data.allow_absolute_paths)
    print(f"data: {report.summary() if hasattr(report, 'summary') else report}", flush=True)
    splits: dict[str, list] = {}
    for r in kept:
        splits.setdefault(r.split, []).append(r)
    if "train" not in splits:
        hint = (" A PhenoBench CSV is a test set (every row is split 'test'): train from a manifest and pass the "
                "CSV as config.data.test_csv." if manifest.endswith(".csv") else "")
        raise ValueError(f"config.data: no usable train records in {manifest} (splits found: {split_counts(splits)})."
                         f"{hint}")
    return splits, image_root


def split_counts(splits: dict[str, Any]) -> str:
    """'train: 3000, test: 600' (or 'none') for messages that name the splits a dataset has."""
    return ", ".join(f"{name}: {len(records)}" for name, records in splits.items()) or "none"


def teacher_params(cfg: Any, workdir: str) -> tuple[Any, dict, dict]:
    """(teacher TextTower, its params, its stage-1 config) from config.teacher, running stage 1 if needed."""
    tdir = cfg.teacher.workdir
    if not tdir:
        tdir = os.path.join(workdir, "teacher")
        if not os.path.exists(os.path.join(tdir, "encoder")):
            print(f"no config.teacher.workdir: training a stage-1 teacher into {tdir}", flush=True)
            if not cfg.text.hf_dir:
                raise ValueError("config.text.hf_dir is empty: the stage-1 teacher made when config.teacher.workdir "
                                 "is empty starts from the student's text encoder; set one of the two")
            scfg = config_lib.load_config("stage1", cfg.teacher.stage1_variant)
            scfg.text.hf_dir = cfg.text.hf_dir  # the teacher reads captions with the student's vocabulary
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
    if os.path.exists(os.path.join(path, artifacts.MODEL_CONFIG)):
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
                   onto: Any, train_hpo: set[str]):
    """A `state -> metrics` function: held-out retrieval (`retrieval.retrieval_metrics`, as the eval command)
    and zero-shot on phenotypes seen / not in `train_hpo` (`evaluate.unseen`)."""
    pcfg = pipeline_config(cfg)
    pcfg["per_host_batch_size"] = cfg.eval.batch_size
    # Every process evaluates the whole held-out split on its own devices (it is small), so each one
    # holds all rows that the metrics index.
    batches = list(pipeline.make_eval_batches(pcfg, records, tokenizer, onto, image_root=image_root,
                                              process_index=0, process_count=1))
    pheno_ids = sorted({h for r in records for h in r.hpo_ids})
    if not pheno_ids:
        print("stage 2: the held-out split has no HPO ids: evaluating image-text retrieval only (link the captions "
              "to HPO for the phenotype figures)", flush=True)
    names = [onto.names[onto.index(h)] for h in pheno_ids]
    seen, related = np.array([h in train_hpo for h in pheno_ids]), related_phenotypes(onto, pheno_ids)
    enc_img = jax.jit(lambda p, x: model.apply({"params": p}, images.model_input(x, cfg.data),
                                               method=model.encode_image))
    enc_txt = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, method=model.encode_text))

    def evaluate(state) -> dict[str, float]:
        params = mesh_lib.host_copy(state.params)  # every process scores the whole split on its own devices
        imgs, txts, img_ids, cap_ids = [], [], [], []
        for b in batches:
            keep = np.asarray(b["valid"], bool)
            imgs.append(np.asarray(enc_img(params, b["image"]))[keep])
            txts.append(np.asarray(enc_txt(params, b["input_ids"], b["attention_mask"]))[keep])
            img_ids.append(np.asarray(b["image_id"])[keep])
            cap_ids.append(np.asarray(b["caption_id"])[keep])  # equal exactly when the caption texts are
        enc_names = text_encoder(lambda i, m: enc_txt(params, i, m), tokenizer, cfg.data.max_len, cfg.eval.batch_size)
        img, ids = np.concatenate(imgs), np.concatenate(img_ids)
        # Held-out captions with no HPO ids (ROCO, MedPix before linking) score image-text retrieval only.
        phen = ensemble_prompts(enc_names, names, tuple(cfg.eval.templates)) if pheno_ids else None
        result = retrieval.retrieval_metrics(
            img, np.concatenate(txts), ids.tolist(), np.concatenate(cap_ids).tolist(), [r.hpo_ids for r in records],
            phen, pheno_ids, ks=tuple(cfg.eval.ks))
        out = retrieval.eval_json(result, tuple(cfg.eval.ks))
        if pheno_ids:
            pos = {h: i for i, h in enumerate(pheno_ids)}
            row_phen = [[pos[h] for h in r.hpo_ids] for r in records]
            out.update(unseen_report(img, ids, phen, row_phen, seen, related))
        return out

    return evaluate


def build_model(cfg: Any, bert_kwargs: dict, teacher_model: Any) -> tuple[two_tower.TwoTower, Any, dict, dict]:
    """(TwoTower, its objective, image fields, text fields) from the config: what the run trains and --aot compiles."""
    model, image_fields, text_fields = two_tower_model(cfg, bert_kwargs)
    return model, objectives.stage2_objective(model, teacher_model, cfg), image_fields, text_fields


def two_tower_model(cfg: Any, bert_kwargs: dict) -> tuple[two_tower.TwoTower, dict, dict]:
    """(TwoTower, image fields, text fields) from the config, without the objective (evaluation needs none)."""
    mc = cfg.model
    image_fields = dict(vit=dict(mc.image, attention=mc.attention, remat=mc.remat), head=mc.image_head,
                        embed_dim=mc.embed_dim, head_hidden_dim=mc.image_head_hidden, head_bias=False)
    text_fields = common.text_tower_fields(cfg.text, bert_kwargs, mc.dtype, attention=mc.attention,
                                           remat=mc.remat)
    text_fields = {k: v for k, v in text_fields.items() if k != "dtype"}
    text_fields["embed_dim"] = mc.embed_dim
    if not cfg.text.head_hidden:  # open_clip's hf_proj_type='mlp' width, so the model exports 1:1
        text_fields["head_hidden_dim"] = (text_fields["bert"]["width"] + mc.embed_dim) // 2
    model = two_tower.TwoTower(
        image_config=image_fields, text_config=text_fields, logit_scale_init=float(np.log(mc.logit_scale_init)),
        logit_bias_init=mc.logit_bias_init if cfg.loss.kind == "sigmoid" else None,
        dtype=layers.canonical_dtype(mc.dtype),
    )
    return model, image_fields, text_fields


def batch_shapes(cfg: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{key: (global shape, dtype)} of a train batch, as `pipeline.make_train_iterator` yields them."""
    d, i32 = cfg.data, np.int32
    b, m, a = d.batch_size, d.max_hpo, common.ancestor_width(cfg)
    return dict(image=((b, d.image_size, d.image_size, 3), np.uint8), input_ids=((b, d.max_len), i32),
                attention_mask=((b, d.max_len), i32), hpo=((b, m), i32), hpo_anc=((b, m, a), i32),
                hpo_hops=((b, m, a), i32), organs=((b, d.max_organs), i32), image_id=((b,), i32),
                caption_id=((b,), i32))


def abstract_teacher(cfg: Any) -> tuple[Any, Any]:
    """(teacher TextTower, abstract teacher pytree) without weights: config.teacher's stage-1 text tower."""
    if cfg.loss.struct_weight > 0:
        raise ValueError("--aot does not model config.loss.struct_weight > 0 (its phenotype table is sized by the data)")
    if cfg.teacher.workdir:
        with open(os.path.join(cfg.teacher.workdir, "stage1_config.json")) as f:
            fields = json.load(f)["text_tower"]
    else:
        scfg = config_lib.load_config("stage1", cfg.teacher.stage1_variant)
        scfg.text.hf_dir = scfg.text.hf_dir or cfg.text.hf_dir
        fields = common.text_tower_fields(scfg.text, common.bert_fields(scfg.text), scfg.text.dtype,
                                          attention=cfg.model.attention)
    model = two_tower.text_tower_from_config(fields)
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    return model, {"params": {"text": jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]}}


def abstract_step(cfg: Any, mesh: jax.sharding.Mesh) -> tuple[build_lib.ShardedStep, dict]:
    """The run's sharded step and a batch, abstract (no weights, data or teacher run; BERT sizes from the config)."""
    teacher_model, teacher = None, None
    if cfg.loss.kd_weight > 0 or cfg.loss.struct_weight > 0:
        teacher_model, teacher = abstract_teacher(cfg)
    model, objective, _, _ = build_model(cfg, common.bert_fields(cfg.text), teacher_model)
    img = jax.ShapeDtypeStruct((1, cfg.data.image_size, cfg.data.image_size, 3), np.float32)
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), img, ids, ids)["params"]
    shapes = batch_shapes(cfg)
    if teacher is not None and cfg.loss.struct_weight == 0 and cfg.teacher.get("embeddings") == "precompute":
        # As the run does: the batch carries each caption's precomputed teacher embedding, no teacher weights.
        dim = jax.eval_shape(teacher_model.apply, {"params": teacher["params"]["text"]}, ids, ids).shape[-1]
        shapes["teacher_emb"] = ((cfg.data.batch_size, dim), np.float32)
        teacher = {}
    step = build_lib.build_step(cfg, mesh, objective, params, teacher)
    return step, build_lib.abstract_batch(shapes, mesh)


def run(cfg: Any, workdir: str) -> dict[str, Any]:
    """Trains stage 2 from `cfg` into `workdir`; returns the final held-out evaluation."""
    config_checks.validate(cfg, jax.device_count())
    sources.validate_source(cfg.data)  # before the ontology and the text encoder load
    dicom.configure_from(cfg.data, "config.data")
    if warning := common.teacher_family_warning(cfg):
        print(f"WARNING: {warning}", flush=True)
    t0 = time.time()
    onto = common.load_ontology_from_config(cfg.ontology)
    _, text_params, tokenizer, text_fields = common.load_text_encoder(cfg.text, cfg.model.dtype, cfg.seed)
    splits, image_root = load_records(cfg, onto, tokenizer)
    test = splits.get("test") or splits.get("val")
    if not test:
        raise ValueError(f"config.data: no 'test' or 'val' split to evaluate on (splits found: {split_counts(splits)}): give "
                         "some records \"split\": \"test\" (held out by patient: docs/data.md)")
    teacher = None
    teacher_model = None
    teacher_view = None
    if cfg.loss.kd_weight > 0 or cfg.loss.struct_weight > 0:
        teacher_model, tparams, tmeta = teacher_params(cfg, workdir)
        teacher_view = teacher_lib.teacher_transform(cfg, teacher_model, tparams, tmeta, tokenizer, splits["train"],
                                                     workdir)
        # With precomputed embeddings the step never runs the teacher: its params stay off the device.
        teacher = {} if getattr(teacher_view, "table", None) is not None else {"params": {"text": tparams}}
        if cfg.loss.struct_weight > 0:
            ttok = artifacts.load_tokenizer(tmeta["hf_dir"])
            phen = sources.split_terms(splits["train"])
            enc = text_encoder(lambda i, m: teacher_model.apply({"params": tparams}, i, m), ttok, tmeta["max_len"])
            teacher["phenotypes"] = enc([onto.names[onto.index(h)] for h in phen])
    model, objective, image_fields, text_fields = build_model(cfg, text_fields["bert"], teacher_model)
    params = init_params(cfg, model, text_params)
    if cfg.init.checkpoint:
        params = load_init_checkpoint(cfg.init.checkpoint, params)
        print(f"initialised from {cfg.init.checkpoint}", flush=True)
    else:  # only the text encoder came from pretrained weights: nothing else may be frozen
        optimizer.check_frozen_are_pretrained(params, cfg.optim, pretrained=r"^text/encoder/")
    artifacts.write_json(os.path.join(workdir, artifacts.MODEL_CONFIG), {
        "image_config": image_fields, "text_config": text_fields, "dtype": cfg.model.dtype,
        "text_hf_dir": cfg.text.hf_dir, "max_len": cfg.data.max_len, "image_size": cfg.data.image_size,
        "mean": list(cfg.data.mean), "std": list(cfg.data.std), "obo_path": cfg.ontology.obo_path,
        # the HPO release the run's phenotypes mean: predict / eval / export refuse another unless told
        "ontology": release_info(onto, cfg.ontology.obo_path)})
    print(f"stage 2: {len(splits['train'])} train / {len(test)} test pairs ({time.time() - t0:.0f}s)", flush=True)
    evaluate = make_evaluator(cfg, model, test, image_root, tokenizer, onto,
                              {h for r in splits["train"] for h in r.hpo_ids})
    state, last = loop.train(
        cfg, workdir, params=params, teacher=teacher,
        objective=objective,
        make_data_iter=lambda: pipeline.make_train_iterator(pipeline_config(cfg), splits["train"], tokenizer, onto,
                                                            cfg.seed, image_root=image_root, teacher=teacher_view),
        evaluate=evaluate, progress_keys=("loss", "loss_it", "loss_kd", "logit_scale"),
        eval_keys=tuple(f"{t}_r@10" for t in ("i2t", "t2i", "i2p", "p2i")) + ("chance_r@10",),
    )
    final = last or evaluate(state)
    # Every process takes part: a params tree sharded across processes is saved as one collective write.
    artifacts.save_params(os.path.join(workdir, "params"), state.params)
    artifacts.write_json(os.path.join(workdir, "eval.json"), final)
    k = 10 if 10 in cfg.eval.ks else cfg.eval.ks[0]
    print(json.dumps({key: round(final[key], 4) for key in
                      (f"i2t_r@{k}", f"t2i_r@{k}", f"i2p_r@{k}", f"p2i_r@{k}", f"chance_r@{k}",
                       f"i2p_chance_r@{k}", f"p2i_chance_r@{k}", "zs_seen_top1", "zs_unseen_top1", "zs_unseen_r@10",
                       "zs_unseen_hier_top1") if key in final}), flush=True)
    print(f"stage 2 done in {time.time() - t0:.0f}s; results in {workdir}", flush=True)
    return final


def _train_key(records: list) -> list[tuple]:
    return [(r.image_id, r.caption, tuple(r.hpo_ids)) for r in records]


def evaluate_on_more_test_pairs(cfg: Any, workdir: str, test_pairs: int, demo_dir: str) -> dict[str, float]:
    """Evaluates a finished demo run (`workdir/params`) on its demo regenerated with `test_pairs` test pairs.

    The generator draws each split from its own seeds, so the larger dataset (written to `demo_dir`) has the
    run's train and val records; that is checked, so seen / unseen phenotypes are those the run trained on.
    Returns the keys of eval.json, measured on the larger test split.
    """
    if cfg.data.source != "demo":
        raise ValueError(f"config.data.source={cfg.data.source!r}: only a demo run can be re-evaluated on more "
                         "test pairs (its generator makes them)")
    onto = common.load_ontology_from_config(cfg.ontology)
    _, _, tokenizer, text_fields = common.load_text_encoder(cfg.text, cfg.model.dtype, cfg.seed)
    own, _ = load_records(cfg, onto, tokenizer)
    bigger = copy.deepcopy(cfg)
    bigger.data.demo_dir, bigger.data.demo.test_pairs = demo_dir, int(test_pairs)
    splits, image_root = load_records(bigger, onto, tokenizer)
    if _train_key(splits["train"]) != _train_key(own["train"]):
        raise ValueError(f"{demo_dir}: the regenerated train split differs from the run's; cannot re-evaluate")
    model, _, _ = two_tower_model(cfg, text_fields["bert"])
    params = artifacts.load_params(os.path.join(workdir, "params"))
    evaluate = make_evaluator(cfg, model, splits["test"], image_root, tokenizer, onto,
                              {h for r in splits["train"] for h in r.hpo_ids})
    return evaluate(types.SimpleNamespace(params=params))
