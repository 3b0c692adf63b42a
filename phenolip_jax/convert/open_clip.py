"""open_clip CustomTextCLIP (BiomedCLIP layout) <-> TwoTower fields and params.

open_clip state-dict keys (BiomedCLIP: timm vit_base_patch16_224 + PubMedBERT, embed_dim 512):

    visual.trunk.*              timm ViT (map in convert/timm_vit.py)        -> image/encoder/...
    visual.head.proj.{weight[,bias]}   timm_proj 'linear'                    -> image/head/proj/{kernel[, bias]}
    visual.head.mlp.fc1/fc2.*   timm_proj 'mlp' (hidden 2 * embed_dim, fc1 always has a bias)
                                                                             -> image/head/fc1, fc2
    text.transformer.*          HF BertModel, no pooler unless hf_pooler_type 'cls_pooler'
                                (map in convert/hf_bert.py)                  -> text/encoder/...
    text.proj.0.weight, text.proj.2.weight   hf_proj_type 'mlp', hidden (width + embed_dim) // 2, no biases
                                                                             -> text/head/fc1/kernel, fc2/kernel
    text.proj.weight            hf_proj_type 'linear', no bias              -> text/head/proj/kernel
    logit_scale [] (log), logit_bias [] (optional)                           -> logit_scale, logit_bias

Pooling: hf_pooler_type 'cls_last_hidden_state_pooler' -> BERT pooling 'cls'; 'cls_pooler' -> 'pooler'
(HF dense + tanh); 'mean_pooler' -> 'mean'. timm_pool '' / 'token' -> ViT pool 'cls'; 'avg' -> 'mean'.

The BERT sizes are not in open_clip_config.json (open_clip fetches them from the hub by hf_model_name).
`import_open_clip` takes them, first found first: the `bert_config` argument; text_cfg.hf_model_config;
`text_config.json` or a BERT `config.json` next to the checkpoint; else the tensor shapes (heads assumed
width // 64, as in every BERT-base/large; pad_token_id 0).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from phenolip_jax.convert import hf_bert, timm_vit
from phenolip_jax.models import bert as bert_lib

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
BIOMEDCLIP_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
_POOLERS = {"cls_last_hidden_state_pooler": "cls", "cls_pooler": "pooler", "mean_pooler": "mean"}
_TIMM_POOLS = {"": "cls", "token": "cls", "avg": "mean"}
# Buffers some transformers versions saved into state dicts; they carry no weights.
_BUFFERS = ("text.transformer.embeddings.position_ids", "text.transformer.embeddings.token_type_ids")


# ----------------------------------------------------------------------------------------------- reading
def read_open_clip_config(path: str | Path) -> dict[str, Any]:
    """{'model_cfg': ..., 'preprocess_cfg': ...} from an open_clip_config.json (hub wrapper or bare model config)."""
    raw = json.loads(Path(path).read_text())
    if "model_cfg" in raw:
        return {"model_cfg": raw["model_cfg"], "preprocess_cfg": raw.get("preprocess_cfg", {})}
    if {"embed_dim", "vision_cfg", "text_cfg"} <= set(raw):
        return {"model_cfg": raw, "preprocess_cfg": {}}
    raise ValueError(f"{path} is neither an open_clip model config nor a {{'model_cfg': ...}} wrapper")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of an open_clip checkpoint (.safetensors or a torch pickle) as NumPy, 'module.' prefixes stripped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        state = dict(load_file(str(path)))
    else:
        try:
            import torch
        except ImportError as err:
            raise ImportError(f"{path} is a torch pickle; install torch or convert it to safetensors") from err
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(raw, dict) and "state_dict" in raw:  # open_clip training checkpoints
            raw = raw["state_dict"]
        # bf16/fp16 tensors have no direct .numpy(); fp32 holds them exactly.
        state = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in raw.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _BUFFERS}


def _locate(path: str | Path) -> tuple[Path, Path]:
    """(open_clip_config.json, weights file) from a directory or a weights file next to its config."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a folder with {CONFIG_NAME} and weights)")
    folder = path if path.is_dir() else path.parent
    config = folder / CONFIG_NAME
    if not config.exists():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    if path.is_file():
        return config, path
    for name in WEIGHT_NAMES:
        if (folder / name).exists():
            return config, folder / name
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_NAMES)} in {folder}")


def _bert_config_dict(bert_config: Any, text_cfg: Mapping[str, Any], folder: Path | None,
                      state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The HF BERT config dict for the text tower (see the module docstring for the order)."""
    if bert_config is not None:
        if isinstance(bert_config, Mapping):
            return dict(bert_config)
        p = Path(bert_config)
        return json.loads((p / "config.json" if p.is_dir() else p).read_text())
    if text_cfg.get("hf_model_config"):
        return dict(text_cfg["hf_model_config"])
    for name in ("text_config.json", "config.json"):
        candidate = folder / name if folder is not None else None
        if candidate is not None and candidate.exists():
            found = json.loads(candidate.read_text())
            if "hidden_size" in found and found.get("model_type", "bert") == "bert":
                return found
    pre = "text.transformer."
    width = state[pre + "embeddings.word_embeddings.weight"].shape[1]
    log.warning("no BERT config found; sizes read from tensor shapes, num_attention_heads = width // 64")
    return dict(
        model_type="bert", hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0,
        vocab_size=int(state[pre + "embeddings.word_embeddings.weight"].shape[0]), hidden_size=int(width),
        num_hidden_layers=1 + max(int(k.split(".")[4]) for k in state if k.startswith(pre + "encoder.layer.")),
        num_attention_heads=max(1, int(width) // 64),
        intermediate_size=int(state[pre + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state[pre + "embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state[pre + "embeddings.token_type_embeddings.weight"].shape[0]),
    )


def _sub(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Entries under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------------------ fields
def fields_from_open_clip(model_cfg: Mapping[str, Any], bert_config: Mapping[str, Any],
                          vit_sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """TwoTower fields (image_config, text_config, logit_bias_init) for an open_clip model config."""
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    embed = int(model_cfg["embed_dim"])
    pool = vision.get("timm_pool") or ""
    if pool not in _TIMM_POOLS:
        raise ValueError(f"timm_pool {pool!r} is not supported (expected one of {sorted(_TIMM_POOLS)})")
    proj = vision.get("timm_proj", "linear")
    if proj not in ("linear", "mlp"):
        raise ValueError(f"timm_proj {proj!r} is not supported (expected 'linear' or 'mlp')")
    sizes = dict(vit_sizes or timm_vit.sizes_from_open_clip_vision_cfg(vision))
    image = dict(vit=dict(sizes, pool=_TIMM_POOLS[pool]), head=proj, embed_dim=embed,
                 head_hidden_dim=2 * embed if proj == "mlp" else None,
                 head_bias=bool(vision.get("timm_proj_bias", False)))
    pooler = text.get("hf_pooler_type") or "cls_pooler"  # open_clip's default for BERT
    if pooler not in _POOLERS:
        raise ValueError(f"hf_pooler_type {pooler!r} is not supported (expected one of {sorted(_POOLERS)})")
    bert = bert_lib.config_from_hf(bert_config)
    bert.update(pooling=_POOLERS[pooler], use_pooler=pooler == "cls_pooler")
    proj_type = text.get("hf_proj_type") or "linear"
    if proj_type not in ("linear", "mlp"):
        raise ValueError(f"hf_proj_type {proj_type!r} is not supported (expected 'linear' or 'mlp')")
    text_fields = dict(bert=bert, head=proj_type, embed_dim=embed, head_bias=False,
                       head_hidden_dim=(bert["width"] + embed) // 2 if proj_type == "mlp" else None)
    fields: dict[str, Any] = dict(image_config=image, text_config=text_fields)
    if model_cfg.get("init_logit_bias") is not None:
        fields["logit_bias_init"] = float(model_cfg["init_logit_bias"])
    return fields


def _image_head_hidden(fields: Mapping[str, Any]) -> int:
    """Hidden width of an 'mlp' image head (defaults to the encoder width, as layers.ProjectionHead)."""
    img = fields["image_config"]
    return int(img.get("head_hidden_dim") or img["vit"]["width"])


def expected_shapes(fields: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every open_clip state-dict key (torch layout) of the model described by TwoTower fields."""
    img, txt = fields["image_config"], fields["text_config"]
    vit, bert = img["vit"], txt["bert"]
    embed_i, embed_t = int(img.get("embed_dim", 512)), int(txt.get("embed_dim", 512))
    shapes = {f"visual.trunk.{k}": v for k, v in timm_vit.expected_shapes(vit).items()}
    d = int(vit["width"])
    if img.get("head", "linear") == "linear":
        shapes["visual.head.proj.weight"] = (embed_i, d)
        if img.get("head_bias"):
            shapes["visual.head.proj.bias"] = (embed_i,)
    else:
        h = _image_head_hidden(fields)
        shapes.update({"visual.head.mlp.fc1.weight": (h, d), "visual.head.mlp.fc1.bias": (h,),
                       "visual.head.mlp.fc2.weight": (embed_i, h)})
        if img.get("head_bias"):
            shapes["visual.head.mlp.fc2.bias"] = (embed_i,)
    for key, _, _ in hf_bert.key_map(int(bert["depth"]), bool(bert.get("use_pooler", False))):
        shapes[f"text.transformer.{key}"] = tuple(hf_bert._expected_shape(key, bert))
    w = int(bert["width"])
    if txt.get("head", "mlp") == "mlp":
        h = int(txt.get("head_hidden_dim") or w)
        shapes.update({"text.proj.0.weight": (h, w), "text.proj.2.weight": (embed_t, h)})
    else:
        shapes["text.proj.weight"] = (embed_t, w)
    shapes["logit_scale"] = ()
    if fields.get("logit_bias_init") is not None:
        shapes["logit_bias"] = ()
    return shapes


# ----------------------------------------------------------------------------------------------- import
def state_dict_to_two_tower(state: Mapping[str, np.ndarray], fields: Mapping[str, Any],
                            dtype: Any = np.float32) -> dict[str, Any]:
    """open_clip state dict -> TwoTower params; one error lists every missing/unexpected key and bad shape."""
    state = {k: np.asarray(v) for k, v in state.items() if k not in _BUFFERS}
    bert = fields["text_config"]["bert"]
    if not bert.get("use_pooler"):  # an unused HF pooler is dropped, as open_clip's strict load would need
        state = {k: v for k, v in state.items() if not k.startswith("text.transformer.pooler.")}
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(())  # nonscalar_logit_scale saves [1]
    if "logit_bias" in state:
        state["logit_bias"] = state["logit_bias"].reshape(())
    timm_vit.check_keys(state, expected_shapes(fields), "open_clip checkpoint")
    img, txt = fields["image_config"], fields["text_config"]
    f = lambda x: np.asarray(x, dtype=dtype)  # noqa: E731
    kernel = lambda key: np.ascontiguousarray(f(state[key]).T)  # noqa: E731
    if img.get("head", "linear") == "linear":
        image_head = {"proj": {"kernel": kernel("visual.head.proj.weight")}}
        if img.get("head_bias"):
            image_head["proj"]["bias"] = f(state["visual.head.proj.bias"])
    else:
        fc1_bias = f(state["visual.head.mlp.fc1.bias"])
        if not img.get("head_bias") and np.any(fc1_bias != 0):
            raise ValueError("visual.head.mlp.fc1.bias is non-zero but timm_proj_bias is false: a head with a "
                             "bias on fc1 only has no TwoTower equivalent (ProjectionHead has one use_bias)")
        image_head = {"fc1": {"kernel": kernel("visual.head.mlp.fc1.weight")},
                      "fc2": {"kernel": kernel("visual.head.mlp.fc2.weight")}}
        if img.get("head_bias"):
            image_head["fc1"]["bias"] = fc1_bias
            image_head["fc2"]["bias"] = f(state["visual.head.mlp.fc2.bias"])
    if txt.get("head", "mlp") == "mlp":
        text_head = {"fc1": {"kernel": kernel("text.proj.0.weight")}, "fc2": {"kernel": kernel("text.proj.2.weight")}}
    else:
        text_head = {"proj": {"kernel": kernel("text.proj.weight")}}
    params: dict[str, Any] = {
        "image": {"encoder": timm_vit.state_dict_to_vit_params(_sub(state, "visual.trunk."), img["vit"], dtype),
                  "head": image_head},
        "text": {"encoder": hf_bert.state_dict_to_bert_params(_sub(state, "text.transformer."), bert, dtype),
                 "head": text_head},
        # Scalars stay fp32 whatever the param dtype (TwoTower creates them in fp32).
        "logit_scale": np.asarray(state["logit_scale"], np.float32),
    }
    if "logit_bias" in state:
        params["logit_bias"] = np.asarray(state["logit_bias"], np.float32)
    return params


def import_open_clip(path: str | Path, bert_config: Any = None, vit_num_heads: int | None = None,
                     dtype: Any = np.float32) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TwoTower fields, TwoTower params) from a local open_clip checkpoint directory or weights file.

    bert_config: an HF BERT config dict, config.json path or directory (see the module docstring for the
    fallbacks). vit_num_heads: only needed when the timm name is not a plain ViT preset and the config has
    no timm_model_kwargs (heads cannot be read off tensor shapes).
    """
    config_path, weights = _locate(path)
    model_cfg = read_open_clip_config(config_path)["model_cfg"]
    state = read_state_dict(weights)
    try:
        sizes = timm_vit.sizes_from_open_clip_vision_cfg(model_cfg["vision_cfg"])
    except ValueError:
        sizes = timm_vit.sizes_from_state_dict(_sub(state, "visual.trunk."), vit_num_heads)
    bert_dict = _bert_config_dict(bert_config, model_cfg["text_cfg"], config_path.parent, state)
    fields = fields_from_open_clip(model_cfg, bert_dict, sizes)
    if "logit_bias" in state and fields.get("logit_bias_init") is None:  # trained with a bias the config omits
        fields["logit_bias_init"] = float(np.asarray(state["logit_bias"]).reshape(()))
    params = state_dict_to_two_tower(state, fields, dtype)
    fields["logit_scale_init"] = float(params["logit_scale"])
    return fields, params


def open_clip_metadata(path: str | Path) -> dict[str, Any]:
    """Preprocessing and tokenizer facts of an open_clip checkpoint: image_size, mean, std, context_length, ..."""
    config_path, _ = _locate(path)
    cfg = read_open_clip_config(config_path)
    model_cfg, pre = cfg["model_cfg"], cfg["preprocess_cfg"]
    text = model_cfg["text_cfg"]
    return dict(image_size=timm_vit.sizes_from_open_clip_vision_cfg(model_cfg["vision_cfg"])["image_size"],
                mean=list(pre.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                std=list(pre.get("std", (0.26862954, 0.26130258, 0.27577711))),
                context_length=int(text.get("context_length", 77)),
                hf_tokenizer_name=text.get("hf_tokenizer_name", text.get("hf_model_name")),
                preprocess_cfg=dict(pre))


# ----------------------------------------------------------------------------------------------- export
def bert_config_from_fields(bert: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """HF BERT config dict for BERT fields; `base` (e.g. the source config.json) supplies the other entries."""
    out = dict(base or {})
    out.update(
        model_type="bert", architectures=["BertModel"], hidden_act="gelu", position_embedding_type="absolute",
        vocab_size=int(bert["vocab_size"]), hidden_size=int(bert["width"]), num_hidden_layers=int(bert["depth"]),
        num_attention_heads=int(bert["num_heads"]), intermediate_size=int(bert["mlp_dim"]),
        max_position_embeddings=int(bert.get("max_position_embeddings", 512)),
        type_vocab_size=int(bert.get("type_vocab_size", 2)), layer_norm_eps=float(bert.get("layer_norm_eps", 1e-12)),
        initializer_range=float(bert.get("initializer_range", 0.02)),
        hidden_dropout_prob=float(bert.get("hidden_dropout", 0.0)),
        attention_probs_dropout_prob=float(bert.get("attention_dropout", 0.0)),
    )
    out.setdefault("pad_token_id", 0)
    for stale in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        out.pop(stale, None)
    return out


def _check_exportable(fields: Mapping[str, Any]) -> None:
    """Raise when the TwoTower has no exact open_clip equivalent."""
    img, txt = fields["image_config"], fields["text_config"]
    embed_i, embed_t = int(img.get("embed_dim", 512)), int(txt.get("embed_dim", 512))
    if embed_i != embed_t:
        raise ValueError(f"image embed_dim {embed_i} != text embed_dim {embed_t}; open_clip has one embed_dim")
    if img.get("head", "linear") not in ("linear", "mlp"):
        raise ValueError(f"image head {img.get('head')!r} has no open_clip timm_proj equivalent")
    if img.get("head") == "mlp" and _image_head_hidden(fields) != 2 * embed_i:
        raise ValueError(f"image mlp head hidden {_image_head_hidden(fields)} != 2 * embed_dim: open_clip's "
                         "timm_proj 'mlp' is fixed at 2 * embed_dim")
    if txt.get("head", "mlp") not in ("linear", "mlp"):
        raise ValueError(f"text head {txt.get('head')!r} has no open_clip hf_proj_type equivalent")
    if txt.get("head_bias"):
        raise ValueError("text head with biases: open_clip's HFTextEncoder projection has no biases")
    width = int(txt["bert"]["width"])
    if txt.get("head", "mlp") == "mlp" and int(txt.get("head_hidden_dim") or width) != (width + embed_t) // 2:
        raise ValueError(f"text mlp head hidden {txt.get('head_hidden_dim') or width} != (width + embed_dim) // 2 "
                         f"= {(width + embed_t) // 2}, the hidden width open_clip's hf_proj_type 'mlp' builds")
    if txt["bert"].get("pooling", "cls") not in {v for v in _POOLERS.values()}:
        raise ValueError(f"text pooling {txt['bert'].get('pooling')!r} has no open_clip pooler")


def two_tower_to_state_dict(fields: Mapping[str, Any], params: Mapping[str, Any],
                            dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """TwoTower params -> open_clip CustomTextCLIP state dict (NumPy, torch layout), key set checked."""
    _check_exportable(fields)
    if set(params) == {"params"}:
        params = params["params"]
    img = fields["image_config"]
    f = lambda x: np.asarray(x, dtype=dtype)  # noqa: E731
    weight = lambda x: np.ascontiguousarray(f(x).T)  # noqa: E731
    out = {k: f(v) for k, v in timm_vit.vit_params_to_state_dict(
        params["image"]["encoder"], img["vit"].get("pool", "cls"), "visual.trunk.").items()}
    head = params["image"]["head"]
    if img.get("head", "linear") == "linear":
        out["visual.head.proj.weight"] = weight(head["proj"]["kernel"])
        if "bias" in head["proj"]:
            out["visual.head.proj.bias"] = f(head["proj"]["bias"])
    else:
        out["visual.head.mlp.fc1.weight"] = weight(head["fc1"]["kernel"])
        # open_clip's Mlp head always has an fc1 bias; a bias-free head exports it as zeros (same function).
        out["visual.head.mlp.fc1.bias"] = f(head["fc1"].get("bias", np.zeros(head["fc1"]["kernel"].shape[1])))
        out["visual.head.mlp.fc2.weight"] = weight(head["fc2"]["kernel"])
        if "bias" in head["fc2"]:
            out["visual.head.mlp.fc2.bias"] = f(head["fc2"]["bias"])
    out.update({k: f(v) for k, v in hf_bert.bert_params_to_hf_state_dict(
        params["text"]["encoder"], "text.transformer.").items()})
    head = params["text"]["head"]
    if "proj" in head:
        out["text.proj.weight"] = weight(head["proj"]["kernel"])
    else:
        out["text.proj.0.weight"] = weight(head["fc1"]["kernel"])
        out["text.proj.2.weight"] = weight(head["fc2"]["kernel"])
    out["logit_scale"] = np.asarray(params["logit_scale"], np.float32).reshape(())
    if "logit_bias" in params:
        out["logit_bias"] = np.asarray(params["logit_bias"], np.float32).reshape(())
    expected = expected_shapes(dict(fields, logit_bias_init=0.0 if "logit_bias" in params else None))
    timm_vit.check_keys(out, expected, "exported open_clip state dict")
    return out


def open_clip_config(fields: Mapping[str, Any], bert_config: Mapping[str, Any], *, mean: Any = None,
                     std: Any = None, context_length: int = 256, hf_model_name: str = BIOMEDCLIP_TEXT,
                     has_logit_bias: bool = False) -> dict[str, Any]:
    """open_clip_config.json content ({'model_cfg', 'preprocess_cfg'}) for a TwoTower.

    The BERT config is inlined as text_cfg.hf_model_config (with hf_model_pretrained false), so the text
    tower's sizes travel with the checkpoint instead of depending on what hf_model_name resolves to.
    """
    _check_exportable(fields)
    img, txt = fields["image_config"], fields["text_config"]
    vit = img["vit"]
    name, kwargs = timm_vit.open_clip_vision_names(vit)
    vision = dict(timm_model_name=name, timm_model_pretrained=False,
                  timm_pool="" if vit.get("pool", "cls") == "cls" else "avg",
                  timm_proj=img.get("head", "linear"), timm_proj_bias=bool(img.get("head_bias", False)),
                  image_size=int(vit["image_size"]) if not isinstance(vit["image_size"], (list, tuple))
                  else int(vit["image_size"][0]))
    if kwargs:
        vision["timm_model_kwargs"] = kwargs
    pooler = {v: k for k, v in _POOLERS.items()}[txt["bert"].get("pooling", "cls")]
    text = dict(hf_model_name=hf_model_name, hf_tokenizer_name=hf_model_name, hf_model_pretrained=False,
                hf_proj_type=txt.get("head", "mlp"), hf_pooler_type=pooler, context_length=int(context_length),
                hf_model_config=dict(bert_config))
    model_cfg: dict[str, Any] = dict(embed_dim=int(img.get("embed_dim", 512)), vision_cfg=vision, text_cfg=text,
                                     custom_text=True)
    if has_logit_bias:
        model_cfg["init_logit_bias"] = float(fields.get("logit_bias_init") or 0.0)
    pre = dict(mean=list(mean if mean is not None else (0.48145466, 0.4578275, 0.40821073)),
               std=list(std if std is not None else (0.26862954, 0.26130258, 0.27577711)))
    return {"model_cfg": model_cfg, "preprocess_cfg": pre}
