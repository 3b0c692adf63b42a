"""PyTorch reference modules with open_clip's CustomTextCLIP (BiomedCLIP) key layout, for parity tests.

open_clip and timm do not import on this machine (both need torchvision, whose PyPI build is CUDA-only),
so these modules reproduce, from torch.nn and transformers.BertModel only, the parameter names, shapes
and math of:

- timm `VisionTransformer` (`visual.trunk.*`): Conv2d patch embedding, cls token, learned position
  embedding, pre-LN blocks with a fused qkv Linear split into q, k, v, LayerNorm eps 1e-6, exact GELU,
  final `norm` then the CLS token (global_pool 'token'), or `fc_norm` on the patch-token mean ('avg');
- open_clip `TimmModel.head` (`visual.head.proj` for timm_proj 'linear', `visual.head.mlp.fc1/fc2` for 'mlp');
- open_clip `HFTextEncoder` (`text.transformer.*` = BertModel without pooler unless hf_pooler_type is
  'cls_pooler', `text.proj.0/2` for hf_proj_type 'mlp' with hidden (width + embed_dim) // 2, `text.proj`
  for 'linear'), attention mask = ids != pad_token_id;
- `logit_scale` (log of the multiplier) and optional `logit_bias`.

The classes live in convert/torch_modules.py (torch only: exports ship it); they are re-exported here.
`build_from_open_clip_config(cfg)` builds the module an exported `open_clip_config.json` describes; a
strict `load_state_dict` of an exported state dict into it is the key-set check the tests use. The timm
part is cross-checked against `transformers.ViTModel` in tests/convert/test_timm_vit.py.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch  # noqa: F401  (torch is this module's optional dependency: tests/test_import_layers.py OPTIONAL)

from phenolip_jax.convert import timm_vit
from phenolip_jax.convert.torch_modules import (  # noqa: F401  (re-exported: the parity tests' names)
    Attention, Block, CustomTextCLIP, HFTextTower, Mlp, PatchEmbed, TimmTower, TimmViT)


def build_from_open_clip_config(cfg: Mapping[str, Any]) -> CustomTextCLIP:
    """The reference model an open_clip_config.json ({'model_cfg': ...} or the bare model config) describes.

    The ViT sizes come from `vision_cfg.timm_model_kwargs` when present, else from the timm preset name;
    the BERT config from `text_cfg.hf_model_config`.
    """
    from transformers import BertConfig

    cfg = cfg.get("model_cfg", cfg)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    sizes = timm_vit.sizes_from_open_clip_vision_cfg(vision)
    pool = vision.get("timm_pool") or "token"
    trunk = TimmViT(sizes["image_size"], sizes["patch_size"], sizes["width"], sizes["depth"], sizes["num_heads"],
                    sizes["mlp_dim"], global_pool=pool)
    visual = TimmTower(trunk, cfg["embed_dim"], vision.get("timm_proj", "linear"), vision.get("timm_proj_bias", False))
    if "hf_model_config" not in text:
        raise ValueError("text_cfg has no hf_model_config: the reference needs the BERT config inline")
    bert_config = BertConfig(**{k: v for k, v in text["hf_model_config"].items() if k != "model_type"})
    text_tower = HFTextTower(bert_config, cfg["embed_dim"], text.get("hf_proj_type", "mlp"),
                             text.get("hf_pooler_type", "cls_last_hidden_state_pooler"))
    return CustomTextCLIP(visual, text_tower, logit_bias=cfg.get("init_logit_bias"))
