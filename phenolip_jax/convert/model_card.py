"""The export's model card (README.md): what the files are, how the model was trained, copy-paste snippets.

The transformers + torch snippet is generated for the exported model (its pooling and head), so it reproduces
the JAX text embedding exactly: BERT -> pooling -> projection head (exact erf GELU for an MLP) -> L2 norm.
The torch image snippet rebuilds the image tower from the PyTorch module shipped in `open_clip/` (a copy of
convert/torch_modules.py) and preprocesses as phenolip_jax's eval transform does; the onnxruntime snippet
embeds both with the ONNX graphs and the same preprocessing. tests/convert/test_export.py and test_onnx.py run
them in a fresh process, without phenolip_jax, on a copy of the export.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from phenolip_jax.convert import onnx_export

TEXT_HEAD_FILE = "text_head.safetensors"
TEXT_META_FILE = "phenolip_text.json"
TORCH_MODULE = "phenolip_torch.py"  # convert/torch_modules.py, copied into the export's open_clip/ folder
_VIT_SIZES = ("patch_size", "width", "depth", "num_heads", "mlp_dim")

# phenolip_jax's eval transform in numpy + Pillow, shared by the torch and onnxruntime image snippets; it reads the
# snippet's `size`, `mean` and `std`.
_PREPROCESS_CODE = '''def preprocess(path):
    """phenolip_jax's eval transform: shorter side to `size` (bicubic), centre crop, (x / 255 - mean) / std; CHW."""
    img = PIL.ImageOps.exif_transpose(PIL.Image.open(path))
    if img.mode in ("RGBA", "LA", "PA", "P"):  # transparency on white, as phenolip_jax does
        rgba = img.convert("RGBA")
        img = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")  # 8-bit images; phenolip_jax scales 16-bit grey (65535 -> 255) where Pillow clips
    s = size / min(img.size)
    w, h = max(size, round(img.width * s)), max(size, round(img.height * s))
    img = img.resize((w, h), PIL.Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    x = np.asarray(img, np.float32)[top:top + size, left:left + size] * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # HWC -> CHW
'''

_POOLING_CODE = {
    "cls": "pooled = hidden[:, 0]  # the [CLS] token's last hidden state",
    "mean": ("m = mask.unsqueeze(-1).float()\n"
             "        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # masked mean over real tokens"),
    "pooler": "pooled = out.pooler_output  # BERT's pooler: tanh(dense([CLS]))",
}


def text_head_state_dict(head_params: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The text projection head in torch Linear layout: fc1/fc2 (mlp) or proj (linear), weight = kernel.T."""
    import numpy as np

    names = {"mlp": ("fc1", "fc2"), "linear": ("proj",), "none": ()}[kind]
    out = {}
    for name in names:
        out[f"{name}.weight"] = np.ascontiguousarray(np.asarray(head_params[name]["kernel"], np.float32).T)
        if "bias" in head_params[name]:
            out[f"{name}.bias"] = np.asarray(head_params[name]["bias"], np.float32).copy()
    return out


def _head_code(kind: str, has_bias: bool) -> str:
    """Torch lines applying the exported head to `pooled` (functional, reading the `head` state dict)."""
    def lin(name: str, x: str) -> str:
        bias = f', head["{name}.bias"]' if has_bias else ""
        return f'F.linear({x}, head["{name}.weight"]{bias})'

    if kind == "mlp":
        return (f"x = F.gelu({lin('fc1', 'pooled')})  # exact (erf) GELU, as in the JAX model\n"
                f"        x = {lin('fc2', 'x')}")
    if kind == "linear":
        return f"x = {lin('proj', 'pooled')}"
    return "x = pooled  # no projection head"


def transformers_snippet(text_meta: Mapping[str, Any]) -> str:
    """Python that embeds texts with transformers + torch from `hf_bert/` exactly as the JAX text tower does."""
    pooling, kind = text_meta["pooling"], text_meta["head"]
    return f'''import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

d = "hf_bert"  # this export's Hugging Face folder (run from the export folder, or give its full path)
tokenizer = AutoTokenizer.from_pretrained(d)
bert = BertModel.from_pretrained(d, add_pooling_layer={pooling == "pooler"}).eval()
head = load_file(f"{{d}}/{TEXT_HEAD_FILE}")


def embed(texts):
    """[N, {text_meta["embed_dim"]}] L2-normalised PhenoLIP text embeddings."""
    batch = tokenizer(list(texts), max_length={text_meta["max_len"]}, truncation=True, padding="max_length",
                      return_tensors="pt")
    mask = batch["attention_mask"]
    with torch.no_grad():
        out = bert(input_ids=batch["input_ids"], attention_mask=mask)
        hidden = out.last_hidden_state
        {_POOLING_CODE[pooling]}
        {_head_code(kind, bool(text_meta["head_bias"]))}
    return F.normalize(x, dim=-1)


emb = embed(["Clinical photograph showing hypertelorism.", "Seizure"])
print(emb.shape)
'''


def open_clip_snippet(hf_model_name: str) -> str:
    """Python that loads the open_clip folder wherever the export lives (the config names it relatively)."""
    return f'''import json
import pathlib

import open_clip
import PIL.Image
import torch

d = pathlib.Path("open_clip").resolve()  # this export's open_clip folder (from the export folder, or a full path)
# text_cfg.hf_model_name is {hf_model_name!r} (relative to this folder: BERT config.json and tokenizer files live
# here); open_clip resolves it from the working directory, so give it the absolute path.
text_cfg = json.loads((d / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(d)
text_cfg.pop("hf_model_config", None)  # the inline BERT config is for phenolip_jax; open_clip reads config.json
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{{d}}", text_cfg=text_cfg)
tokenizer = open_clip.get_tokenizer(f"local-dir:{{d}}")
model.eval()
with torch.no_grad():
    text = model.encode_text(tokenizer(["Clinical photograph showing hypertelorism."]), normalize=True)


def embed_images(paths):
    """[N, E] image embeddings, with open_clip's own preprocessing."""
    with torch.no_grad():
        images = torch.stack([preprocess(PIL.Image.open(p).convert("RGB")) for p in paths])
        return model.encode_image(images, normalize=True)
'''


def torch_image_snippet(vit: Mapping[str, Any], embed_dim: int) -> str:
    """Python that embeds images with torch alone: the shipped module, the open_clip weights, the eval transform."""
    sizes = ", ".join(f"{k}={int(vit[k])}" for k in _VIT_SIZES)
    return f'''import json
import pathlib
import sys

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

d = pathlib.Path("open_clip").resolve()  # this export's open_clip folder (from the export folder, or a full path)
sys.path.insert(0, str(d))
import phenolip_torch  # noqa: E402  (the folder's PyTorch module: torch.nn only, open_clip's key names)

config = json.loads((d / "open_clip_config.json").read_text())
vision, mean, std = config["model_cfg"]["vision_cfg"], config["preprocess_cfg"]["mean"], config["preprocess_cfg"]["std"]
size = vision["image_size"]
trunk = phenolip_torch.TimmViT(size, {sizes}, global_pool=vision["timm_pool"] or "token")
visual = phenolip_torch.TimmTower(trunk, config["model_cfg"]["embed_dim"], vision["timm_proj"], vision["timm_proj_bias"])
state = load_file(str(d / "open_clip_model.safetensors"))
visual.load_state_dict({{k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}})
visual.eval()


{_PREPROCESS_CODE}

def embed_images(paths):
    """[N, {embed_dim}] L2-normalised PhenoLIP image embeddings."""
    with torch.no_grad():
        return F.normalize(visual(torch.stack([torch.from_numpy(preprocess(p)) for p in paths])), dim=-1)


emb = embed_images(["image.png"])  # your images' paths
print(emb.shape, emb[0, :4])
'''


def onnxruntime_snippet(embed_dim: int) -> str:
    """Python that embeds images and texts with onnxruntime (no torch, no JAX) from the export's onnx/ folder."""
    return f'''import json
import pathlib

import numpy as np
import onnxruntime as ort
import PIL.Image
import PIL.ImageOps
from transformers import AutoTokenizer  # the tokenizer only: no torch needed

d = pathlib.Path("onnx").resolve()  # this export's onnx folder (from the export folder, or a full path)
meta = json.loads((d / "{onnx_export.META_FILE}").read_text())
size, mean, std = meta["image"]["image_size"], meta["image"]["mean"], meta["image"]["std"]
image_session = ort.InferenceSession(str(d / meta["image"]["file"]), providers=["CPUExecutionProvider"])
text_session = ort.InferenceSession(str(d / meta["text"]["file"]), providers=["CPUExecutionProvider"])
tokenizer = AutoTokenizer.from_pretrained(str(d))


{_PREPROCESS_CODE}

def embed_images(paths):
    """[N, {embed_dim}] L2-normalised PhenoLIP image embeddings."""
    x = np.stack([preprocess(p) for p in paths])
    return image_session.run(None, {{meta["image"]["input"]: x}})[0]


def embed_texts(texts):
    """[N, {embed_dim}] L2-normalised PhenoLIP text embeddings (padding is masked inside the graph)."""
    ids = tokenizer(list(texts), max_length=meta["text"]["max_len"], truncation=True, padding="max_length",
                    return_tensors="np")["input_ids"]
    return text_session.run(None, {{meta["text"]["input"]: ids.astype(np.int64)}})[0]


texts = embed_texts(["Clinical photograph showing hypertelorism.", "Seizure"])
images = embed_images(["image.png"])  # your images' paths
print(images @ texts.T)  # cosine similarities
'''


def _json_block(obj: Any) -> list[str]:
    return ["```json", json.dumps(obj, indent=2, sort_keys=True, default=str), "```", ""]


def model_card(meta: Mapping[str, Any], summary: Mapping[str, Any], text_meta: Mapping[str, Any],
               run_config: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None,
               hf_model_name: str | None) -> str:
    """README.md for an export directory: files, training config and data, metrics, loading snippets."""
    lines = ["# PhenoLIP (JAX) export", "",
             "A CLIP-style image / text model trained with phenolip_jax (PhenoLIP: Human Phenotype Ontology "
             "knowledge in medical vision-language pretraining), exported to PyTorch formats. Everything needed "
             "to load it is inside this folder; nothing refers to the machine that trained it.", "",
             "## Files", "", "| path | content |", "|---|---|"]
    if "open_clip" in summary:
        lines.append("| `open_clip/` | `open_clip_config.json`, `open_clip_model.safetensors` (CustomTextCLIP keys), "
                     f"the BERT `config.json` and tokenizer files, `{TORCH_MODULE}` (the PyTorch module of the "
                     "image snippet) |")
    if "hf_bert" in summary:
        lines.append(f"| `hf_bert/` | Hugging Face `BertModel` (`config.json`, `model.safetensors`), tokenizer files, "
                     f"`{TEXT_HEAD_FILE}` (text projection head, torch layout), `{TEXT_META_FILE}` |")
    if "onnx" in summary:
        lines.append("| `onnx/` | `image_encoder.onnx`, `text_encoder.onnx` (L2-normalised embeddings, dynamic batch), "
                     f"`{onnx_export.META_FILE}` (input names, image size, mean / std, max_len), tokenizer files |")
    if "safetensors" in summary:
        lines.append("| `params.safetensors` | every Flax parameter under its `/` path, model config in the metadata |")
    lines += ["| `export.json` | what was written, and the measured PyTorch-vs-JAX parity |", ""]
    if summary.get("warning"):
        lines += [f"**Warning:** {summary['warning']}", ""]
    lines += ["## The PhenoLIP text embedding", "",
              f"BERT ({text_meta['pooling']} pooling) -> projection head `{text_meta['head']}`"
              + (" (Linear -> exact erf GELU -> Linear)" if text_meta["head"] == "mlp" else "")
              + f" -> L2 normalisation: a {text_meta['embed_dim']}-d unit vector. Texts are tokenised to "
              f"{text_meta['max_len']} tokens (truncated, padded). Image and text embeddings share the space; "
              f"the trained logit scale is {text_meta.get('logit_scale', 'n/a')}.", ""]
    if "hf_bert" in summary:
        lines += ["### transformers + torch", "",
                  "`hf_bert/` holds " + ("BERT's pooler, so load it as below."
                                         if text_meta["pooling"] == "pooler" else
                                         "no pooler weights (the model never used BERT's pooler): load it with "
                                         "`add_pooling_layer=False`, as below, and transformers reports nothing "
                                         "missing."), "",
                  "```python", transformers_snippet(text_meta).rstrip(), "```", ""]
    if "open_clip" in summary:
        lines += ["### open_clip", "", "```python", open_clip_snippet(hf_model_name or ".").rstrip(), "```", ""]
        vit = meta["image_config"]["vit"]
        lines += ["## The PhenoLIP image embedding", "",
                  f"ViT ({vit.get('pool', 'cls')} pooling, timm layout) -> projection head "
                  f"`{meta['image_config'].get('head', 'linear')}` -> L2 normalisation, in the space of the text "
                  "embedding. Images are read as phenolip_jax's evaluation reads them: the shorter side resized to "
                  "`image_size` (bicubic), the centre crop, then `(x / 255 - mean) / std` with the `preprocess_cfg` "
                  "of `open_clip/open_clip_config.json`.", "",
                  "### torch", "",
                  f"No open_clip needed: `open_clip/{TORCH_MODULE}` is the PyTorch module (torch.nn, open_clip's "
                  "parameter names) that the export's parity check runs; it rebuilds the image tower and loads the "
                  "`visual.*` weights of `open_clip_model.safetensors`. Needs torch, numpy, Pillow and safetensors.",
                  "", "```python", torch_image_snippet(vit, int(meta["image_config"].get("embed_dim", 512))).rstrip(),
                  "```", ""]
    if "onnx" in summary:
        lines += ["## ONNX", "",
                  f"`onnx/{onnx_export.IMAGE_FILE}` takes `{onnx_export.IMAGE_INPUT}` (float32, NCHW, after the "
                  f"preprocessing below) and `onnx/{onnx_export.TEXT_FILE}` takes `{onnx_export.TEXT_INPUT}` (int64, "
                  "padding id 0, masked inside the graph); each returns the L2-normalised embedding. Batch size "
                  "(and text length) are free. Needs onnxruntime, numpy, Pillow and transformers (tokenizer only).",
                  "", "### onnxruntime", "", "```python",
                  onnxruntime_snippet(int(meta["image_config"].get("embed_dim", 512))).rstrip(), "```", ""]
    lines += ["## Training", "", "Model (`model_config.json` of the run):", ""]
    lines += _json_block({k: v for k, v in meta.items() if k != "text_hf_dir"})
    if run_config:
        data = run_config.get("data") if isinstance(run_config, Mapping) else None
        if data:
            lines += ["Data (`data` of the run's config):", ""] + _json_block(data)
        lines += ["Full run config:", ""] + _json_block(run_config)
    else:
        lines += ["Data: the run directory recorded no full config; see the training command's config file.", ""]
    lines += ["## Metrics", ""]
    lines += (["Held-out evaluation of the run (`eval.json`; fractions):", ""] + _json_block(metrics)
              if metrics else ["The run directory holds no `eval.json`.", ""])
    parity = summary.get("parity")
    if isinstance(parity, Mapping):
        lines += ["PyTorch / ONNX Runtime (files in this folder) vs JAX, max abs differences on random inputs:", ""]
        lines += ["| comparison | max abs diff |", "|---|---|"]
        lines += [f"| {k} | {v:.2e} |" for k, v in parity.items()] + [""]
    return "\n".join(lines)
