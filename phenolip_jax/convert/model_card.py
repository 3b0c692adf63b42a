"""The export's model card (README.md): what the files are, how the model was trained, copy-paste snippets.

The transformers + torch snippet is generated for the exported model (its pooling and head), so it reproduces
the JAX text embedding exactly: BERT -> pooling -> projection head (exact erf GELU for an MLP) -> L2 norm.
tests/convert/test_export.py runs it in a fresh process on a copy of the export.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TEXT_HEAD_FILE = "text_head.safetensors"
TEXT_META_FILE = "phenolip_text.json"

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
    # image = model.encode_image(preprocess(PIL.Image.open("a.png")).unsqueeze(0), normalize=True)
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
                     "the BERT `config.json` and tokenizer files |")
    if "hf_bert" in summary:
        lines.append(f"| `hf_bert/` | Hugging Face `BertModel` (`config.json`, `model.safetensors`), tokenizer files, "
                     f"`{TEXT_HEAD_FILE}` (text projection head, torch layout), `{TEXT_META_FILE}` |")
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
        lines += ["PyTorch (files in this folder) vs JAX, max abs differences on random inputs:", ""]
        lines += ["| comparison | max abs diff |", "|---|---|"]
        lines += [f"| {k} | {v:.2e} |" for k, v in parity.items()] + [""]
    return "\n".join(lines)
