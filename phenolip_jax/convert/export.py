"""Export a trained stage-2 run to PyTorch: open_clip layout, a Hugging Face BERT directory, flat safetensors.

`python -m phenolip_jax.main --config=configs/export.py --config.checkpoint=WORKDIR --config.output=OUTDIR`

The export is self-contained: nothing it needs to load points outside it (the model card shows the run's
local paths by base name only), tokenizer files travel with the weights, and every file gets the same
permissions (safetensors alone would write 0600).

OUTDIR/README.md    model card: files, training config and data, metrics, copy-paste loading snippets
OUTDIR/open_clip/   open_clip_config.json + open_clip_model.safetensors (CustomTextCLIP keys: visual.trunk.*,
                    visual.head.*, text.transformer.*, text.proj.*, logit_scale[, logit_bias]) + the BERT
                    config.json and tokenizer files; text_cfg.hf_model_name / hf_tokenizer_name are '.' (this folder);
                    phenolip_torch.py (convert/torch_modules.py: the model card's torch image snippet imports it)
OUTDIR/hf_bert/     config.json + model.safetensors (BertModel.from_pretrained layout) + tokenizer files +
                    text_head.safetensors (the projection head, torch layout) + phenolip_text.json (pooling,
                    head, max_len); no pooler unless the run trained one: load with add_pooling_layer=False
OUTDIR/params.safetensors   every Flax parameter under its '/'-joined path (e.g. image/encoder/cls)
OUTDIR/onnx/        image_encoder.onnx + text_encoder.onnx (L2-normalised embeddings, dynamic batch) +
                    phenolip_onnx.json + tokenizer files (convert/onnx_export.py; needs torch, onnx, onnxscript)
OUTDIR/export.json  what was written and, with verify on, the measured Flax-vs-PyTorch max abs differences
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import artifacts
from phenolip_jax.convert import hf_bert, model_card, onnx_export
from phenolip_jax.convert import open_clip as oc
from phenolip_jax.data import images as img_lib
from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import two_tower

FORMATS = ("open_clip", "hf_bert", "safetensors", "onnx")
# open_clip_config.json names the text model and tokenizer relative to its own folder, never by an absolute path.
LOCAL_HF_NAME = "."
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def load_run_params(workdir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_config.json content, TwoTower params as NumPy) of a stage-2 run directory.

    Reads `params/` (StandardCheckpointer save of the params dict); without it, the newest step of the
    training `checkpoints/` (its 'state' item's params).
    """
    workdir = Path(workdir).resolve()
    config_file = workdir / "model_config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"no model_config.json in {workdir}: is it a finished stage-2 run directory?")
    meta = json.loads(config_file.read_text())
    if (workdir / "params").exists():
        params = artifacts.load_params(str(workdir / "params"))
    elif (workdir / "checkpoints").exists():
        params = artifacts.restore_state_params(artifacts.latest_step_dir(str(workdir / "checkpoints")))
    else:
        raise FileNotFoundError(f"neither params/ nor checkpoints/ in {workdir}")
    if set(params) == {"params"}:
        params = params["params"]
    return meta, jax.tree.map(np.asarray, params)


def two_tower_fields(meta: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """TwoTower fields (fp32, for export and verification) from model_config.json and the params."""
    fields: dict[str, Any] = dict(image_config=dict(meta["image_config"]), text_config=dict(meta["text_config"]))
    for tower in ("image_config", "text_config"):
        fields[tower].pop("dtype", None)
        fields[tower].pop("param_dtype", None)
    if "logit_bias" in params:
        fields["logit_bias_init"] = float(params["logit_bias"])
    return fields


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{'a/b/c': array} for a nested params dict."""
    out = {}
    for name, value in params.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{name}/"))
        else:
            # Not np.ascontiguousarray: it turns 0-d arrays (logit_scale) into shape [1].
            out[f"{prefix}{name}"] = np.asarray(value).copy(order="C")
    return out


def export_safetensors(params: Mapping[str, Any], path: str | Path, meta: Mapping[str, Any] | None = None) -> int:
    """Write every parameter under its flat Flax path to one safetensors file; returns the tensor count."""
    from safetensors.numpy import save_file

    flat = flatten(params)
    # safetensors metadata values must be strings; the model config lets a reader rebuild the module.
    save_file(flat, str(path), metadata={"format": "flax", "model_config": json.dumps(meta or {})})
    return len(flat)


def copy_tokenizer(source_dir: str | Path | None, out_dir: str | Path) -> list[str]:
    """Copies the tokenizer files of `source_dir` (the run's text_hf_dir) into out_dir; returns their names."""
    copied = []
    if source_dir and Path(source_dir).is_dir():
        for name in TOKENIZER_FILES:
            if (Path(source_dir) / name).exists():
                shutil.copyfile(Path(source_dir) / name, Path(out_dir) / name)  # content only: not the source's mode
                copied.append(name)
    return copied


def text_tower_meta(text_fields: Mapping[str, Any], max_len: int, logit_scale: float | None) -> dict[str, Any]:
    """What turns BERT's hidden states into the PhenoLIP text embedding (phenolip_text.json)."""
    return dict(pooling=text_fields["bert"].get("pooling", "cls"), head=text_fields.get("head", "mlp"),
                head_bias=bool(text_fields.get("head_bias", False)), embed_dim=int(text_fields["embed_dim"]),
                max_len=int(max_len), normalize="l2", gelu="exact (erf)",
                logit_scale=None if logit_scale is None else round(float(logit_scale), 4))


def export_hf_bert(text_fields: Mapping[str, Any], encoder_params: Mapping[str, Any], out_dir: str | Path,
                   source_dir: str | Path | None = None, dtype: Any = np.float32,
                   head_params: Mapping[str, Any] | None = None,
                   text_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the text encoder as a Hugging Face BertModel directory (+ head and its meta); returns what was written."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = None
    if source_dir and (Path(source_dir) / "config.json").exists():
        base = json.loads((Path(source_dir) / "config.json").read_text())
    config = oc.bert_config_from_fields(text_fields["bert"], base)
    state = {k: np.asarray(v, dtype) for k, v in hf_bert.bert_params_to_hf_state_dict(encoder_params).items()}
    # transformers reads the 'format' metadata to pick its loader; 'pt' is what save_pretrained writes.
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if head_params is not None and text_meta is not None:
        head = model_card.text_head_state_dict(head_params, text_meta["head"])
        if head:
            save_file(head, str(out_dir / model_card.TEXT_HEAD_FILE), metadata={"format": "pt"})
        (out_dir / model_card.TEXT_META_FILE).write_text(json.dumps(dict(text_meta), indent=2))
    return dict(config=config, tensors=len(state), tokenizer_files=copy_tokenizer(source_dir, out_dir))


def export_open_clip(fields: Mapping[str, Any], params: Mapping[str, Any], out_dir: str | Path,
                     bert_config: Mapping[str, Any], *, mean: Any = None, std: Any = None,
                     context_length: int = 256, hf_model_name: str = LOCAL_HF_NAME,
                     write_bin: bool = False, source_dir: str | Path | None = None) -> dict[str, Any]:
    """Write open_clip_config.json + open_clip_model.safetensors (+ .bin), the BERT config.json and the tokenizer."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = oc.two_tower_to_state_dict(fields, params)
    config = oc.open_clip_config(fields, bert_config, mean=mean, std=std, context_length=context_length,
                                 hf_model_name=hf_model_name, has_logit_bias="logit_bias" in state)
    save_file(state, str(out_dir / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out_dir / oc.CONFIG_NAME).write_text(json.dumps(config, indent=2))
    # open_clip builds the text tower with AutoConfig.from_pretrained(hf_model_name) and its tokenizer from
    # the folder: both live here, so the folder loads on any machine.
    (out_dir / "config.json").write_text(json.dumps(dict(bert_config), indent=2, sort_keys=True))
    copied = copy_tokenizer(source_dir, out_dir)
    if write_bin:  # for open_clip versions that only read the torch pickle
        import torch

        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, out_dir / "open_clip_pytorch_model.bin")
    return dict(config=config, tensors=len(state), tokenizer_files=copied)


def match_permissions(out: Path, reference: Path) -> None:
    """Gives every file under `out` the permission bits of `reference` (a file written the ordinary way)."""
    mode = reference.stat().st_mode & 0o777
    for root, _, files in os.walk(out):
        for name in files:
            os.chmod(os.path.join(root, name), mode)


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when absent."""
    return json.loads(path.read_text()) if path.exists() else None


def scrub_paths(obj: Any) -> Any:
    """Absolute paths (of the training machine) in a config replaced by '<local>/' + their base name."""
    if isinstance(obj, Mapping):
        return {k: scrub_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_paths(v) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        return "<local>/" + os.path.basename(obj.rstrip("/"))
    return obj


def _flax_outputs(fields: Mapping[str, Any], params: Mapping[str, Any], images: np.ndarray,
                  ids: np.ndarray) -> dict[str, np.ndarray]:
    """Image / text embeddings, logits and BERT hidden states of the Flax model in fp32."""
    model = two_tower.from_config(dict(fields))
    mask = (ids != 0).astype(np.int32)
    out = model.apply({"params": params}, jnp.asarray(images), jnp.asarray(ids), jnp.asarray(mask))
    logits = out["logit_scale"] * out["image"] @ out["text"].T
    if out["logit_bias"] is not None:
        logits = logits + out["logit_bias"]
    bert = bert_lib.from_config(dict(fields["text_config"]["bert"]))
    hidden, _ = bert.apply({"params": params["text"]["encoder"]}, jnp.asarray(ids), jnp.asarray(mask))
    return {k: np.asarray(jax.device_get(v)) for k, v in
            dict(image=out["image"], text=out["text"], logits=logits, hidden=hidden).items()}


def verify(fields: Mapping[str, Any], params: Mapping[str, Any], open_clip_dir: Path | None,
           hf_dir: Path | None, batch: int = 2, seq_len: int = 16, seed: int = 0,
           onnx_dir: Path | None = None) -> dict[str, float]:
    """Max abs differences between the Flax model and the exported PyTorch (and ONNX) models on random inputs."""
    import torch

    rng = np.random.default_rng(seed)
    vit, bert = fields["image_config"]["vit"], fields["text_config"]["bert"]
    size = int(vit["image_size"]) if not isinstance(vit["image_size"], (list, tuple)) else int(vit["image_size"][0])
    images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    seq_len = min(seq_len, int(bert.get("max_position_embeddings", 512)))
    ids = rng.integers(1, int(bert["vocab_size"]), (batch, seq_len))
    ids[0, seq_len // 2:] = 0  # padding (id 0), masked as open_clip masks it: ids != pad_token_id
    flax_out = _flax_outputs(fields, params, images, ids)
    diffs: dict[str, float] = {}
    with torch.no_grad():
        if open_clip_dir is not None:
            from safetensors.torch import load_file

            from phenolip_jax.convert import torch_reference

            config = json.loads((open_clip_dir / oc.CONFIG_NAME).read_text())
            model = torch_reference.build_from_open_clip_config(config).eval()
            model.load_state_dict(load_file(str(open_clip_dir / "open_clip_model.safetensors")), strict=True)
            timg, tids = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(ids)
            diffs["open_clip_image_max_abs"] = float(np.abs(model.encode_image(timg).numpy() - flax_out["image"]).max())
            diffs["open_clip_text_max_abs"] = float(np.abs(model.encode_text(tids).numpy() - flax_out["text"]).max())
            diffs["open_clip_logits_max_abs"] = float(np.abs(model.get_logits(timg, tids).numpy()
                                                             - flax_out["logits"]).max())
        if hf_dir is not None:
            from transformers import BertModel

            hf = BertModel.from_pretrained(str(hf_dir), add_pooling_layer=bool(bert.get("use_pooler"))).eval()
            mask = torch.from_numpy((ids != 0).astype(np.int64))
            hidden = hf(input_ids=torch.from_numpy(ids), attention_mask=mask).last_hidden_state.numpy()
            keep = (ids != 0)[..., None]  # padded positions' states are unused and differ in how they are masked
            diffs["hf_bert_hidden_max_abs"] = float(np.abs(np.where(keep, hidden - flax_out["hidden"], 0)).max())
    if onnx_dir is not None:
        diffs.update(onnx_export.max_abs_diffs(onnx_dir, images, ids, flax_out["image"], flax_out["text"]))
    return diffs


def run(cfg: Any) -> dict[str, Any]:
    """Export the run at cfg.checkpoint into cfg.output in cfg.formats; returns (and writes) a summary."""
    formats = tuple(cfg.formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"config.formats={formats}: choose from {FORMATS}")
    if not cfg.checkpoint or not cfg.output:
        raise ValueError("set --config.checkpoint=WORKDIR (a stage-2 run) and --config.output=OUTDIR")
    t0 = time.time()
    meta, params = load_run_params(cfg.checkpoint)
    fields = two_tower_fields(meta, params)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    source = meta.get("text_hf_dir") or None
    base = None
    if source and (Path(source) / "config.json").exists():
        base = json.loads((Path(source) / "config.json").read_text())
    bert_config = oc.bert_config_from_fields(fields["text_config"]["bert"], base)
    summary: dict[str, Any] = dict(checkpoint=str(cfg.checkpoint), output=str(out), formats=list(formats))
    oc_dir = hf_dir = onnx_dir = None
    if "open_clip" in formats:
        oc_dir = out / "open_clip"
        written = export_open_clip(fields, params, oc_dir, bert_config, mean=meta.get("mean"), std=meta.get("std"),
                                   context_length=int(meta.get("max_len", 256)),
                                   hf_model_name=cfg.hf_model_name or LOCAL_HF_NAME,
                                   write_bin=bool(cfg.open_clip_bin), source_dir=source)
        summary["open_clip"] = dict(dir=str(oc_dir), tensors=written["tensors"],
                                    tokenizer_files=written["tokenizer_files"])
        # The module the parity check uses travels with the weights: the card's image snippet needs only torch.
        shutil.copyfile(Path(__file__).with_name("torch_modules.py"), oc_dir / model_card.TORCH_MODULE)
    scale = float(np.exp(params["logit_scale"])) if "logit_scale" in params else None
    text_meta = text_tower_meta(fields["text_config"], int(meta.get("max_len", 256)), scale)
    if "hf_bert" in formats:
        hf_dir = out / "hf_bert"
        written = export_hf_bert(fields["text_config"], params["text"]["encoder"], hf_dir, source,
                                 head_params=params["text"].get("head", {}), text_meta=text_meta)
        summary["hf_bert"] = dict(dir=str(hf_dir), tensors=written["tensors"],
                                  tokenizer_files=written["tokenizer_files"])
    if "onnx" in formats:
        onnx_dir = out / "onnx"
        summary["onnx"] = onnx_export.export_onnx(
            fields, params, onnx_dir, bert_config, mean=meta.get("mean") or img_lib.CLIP_MEAN,
            std=meta.get("std") or img_lib.CLIP_STD, max_len=int(meta.get("max_len", 256)), logit_scale=scale)
        summary["onnx"]["tokenizer_files"] = copy_tokenizer(source, onnx_dir)
    if {"open_clip", "hf_bert", "onnx"} & set(formats) and not any(
            summary.get(f, {}).get("tokenizer_files") for f in ("open_clip", "hf_bert", "onnx")):
        summary["warning"] = (f"no tokenizer files: the run's text_hf_dir {source!r} is not a local folder with "
                              "tokenizer.json / vocab.txt; copy them into the export's folders by hand")
    if "safetensors" in formats:
        path = out / "params.safetensors"
        summary["safetensors"] = dict(path=str(path), tensors=export_safetensors(params, path, meta))
    if cfg.verify and (oc_dir or hf_dir or onnx_dir):
        try:
            import torch  # noqa: F401  (the reference models are PyTorch)
        except ImportError:
            summary["parity"] = "skipped: torch is not installed"
        else:
            summary["parity"] = verify(fields, params, oc_dir, hf_dir, onnx_dir=onnx_dir)
    summary["seconds"] = round(time.time() - t0, 1)
    run_dir = Path(cfg.checkpoint)
    (out / "README.md").write_text(model_card.model_card(
        scrub_paths(meta), summary, text_meta, scrub_paths(_read_json(run_dir / "config.json")),
        _read_json(run_dir / "eval.json"),
        cfg.hf_model_name or LOCAL_HF_NAME))
    (out / "export.json").write_text(json.dumps(summary, indent=2))
    match_permissions(out, out / "export.json")
    print(json.dumps(summary), flush=True)
    return summary
