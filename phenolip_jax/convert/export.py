"""Export a trained stage-2 run to PyTorch: open_clip layout, a Hugging Face BERT directory, flat safetensors.

`python -m phenolip_jax.main --config=configs/export.py --config.checkpoint=WORKDIR --config.output=OUTDIR`

OUTDIR/open_clip/   open_clip_config.json + open_clip_model.safetensors (CustomTextCLIP keys: visual.trunk.*,
                    visual.head.*, text.transformer.*, text.proj.*, logit_scale[, logit_bias])
OUTDIR/hf_bert/     config.json + model.safetensors (BertModel.from_pretrained layout) + tokenizer files
                    copied from the run's text_hf_dir; no pooler unless the run trained one, so load it
                    with BertModel.from_pretrained(dir, add_pooling_layer=False)
OUTDIR/params.safetensors   every Flax parameter under its '/'-joined path (e.g. image/encoder/cls)
OUTDIR/export.json  what was written and, with verify on, the measured Flax-vs-PyTorch max abs differences
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import artifacts
from phenolip_jax.convert import hf_bert
from phenolip_jax.convert import open_clip as oc
from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import two_tower

FORMATS = ("open_clip", "hf_bert", "safetensors")
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


def export_hf_bert(text_fields: Mapping[str, Any], encoder_params: Mapping[str, Any], out_dir: str | Path,
                   source_dir: str | Path | None = None, dtype: Any = np.float32) -> dict[str, Any]:
    """Write the text encoder as a Hugging Face BertModel directory; returns the config written."""
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
    copied = []
    if source_dir:
        for name in TOKENIZER_FILES:
            if (Path(source_dir) / name).exists():
                shutil.copy2(Path(source_dir) / name, out_dir / name)
                copied.append(name)
    return dict(config=config, tensors=len(state), tokenizer_files=copied)


def export_open_clip(fields: Mapping[str, Any], params: Mapping[str, Any], out_dir: str | Path,
                     bert_config: Mapping[str, Any], *, mean: Any = None, std: Any = None,
                     context_length: int = 256, hf_model_name: str = oc.BIOMEDCLIP_TEXT,
                     write_bin: bool = False) -> dict[str, Any]:
    """Write open_clip_config.json + open_clip_model.safetensors (+ open_clip_pytorch_model.bin)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = oc.two_tower_to_state_dict(fields, params)
    config = oc.open_clip_config(fields, bert_config, mean=mean, std=std, context_length=context_length,
                                 hf_model_name=hf_model_name, has_logit_bias="logit_bias" in state)
    save_file(state, str(out_dir / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out_dir / oc.CONFIG_NAME).write_text(json.dumps(config, indent=2))
    if write_bin:  # for open_clip versions that only read the torch pickle
        import torch

        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, out_dir / "open_clip_pytorch_model.bin")
    return dict(config=config, tensors=len(state))


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
           hf_dir: Path | None, batch: int = 2, seq_len: int = 16, seed: int = 0) -> dict[str, float]:
    """Max abs differences between the Flax model and the exported PyTorch models on random inputs."""
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
    oc_dir = hf_dir = None
    if "open_clip" in formats:
        oc_dir = out / "open_clip"
        written = export_open_clip(fields, params, oc_dir, bert_config, mean=meta.get("mean"), std=meta.get("std"),
                                   context_length=int(meta.get("max_len", 256)),
                                   hf_model_name=cfg.hf_model_name or (source or oc.BIOMEDCLIP_TEXT),
                                   write_bin=bool(cfg.open_clip_bin))
        summary["open_clip"] = dict(dir=str(oc_dir), tensors=written["tensors"])
    if "hf_bert" in formats:
        hf_dir = out / "hf_bert"
        written = export_hf_bert(fields["text_config"], params["text"]["encoder"], hf_dir, source)
        summary["hf_bert"] = dict(dir=str(hf_dir), tensors=written["tensors"],
                                  tokenizer_files=written["tokenizer_files"])
    if "safetensors" in formats:
        path = out / "params.safetensors"
        summary["safetensors"] = dict(path=str(path), tensors=export_safetensors(params, path, meta))
    if cfg.verify and (oc_dir or hf_dir):
        try:
            import torch  # noqa: F401  (the reference models are PyTorch)
        except ImportError:
            summary["parity"] = "skipped: torch is not installed"
        else:
            summary["parity"] = verify(fields, params, oc_dir, hf_dir)
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "export.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    return summary
