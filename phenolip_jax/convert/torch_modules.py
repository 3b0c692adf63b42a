"""PyTorch modules with open_clip's CustomTextCLIP (BiomedCLIP) key layout: torch.nn (+ transformers.BertModel).

The classes of convert/torch_reference.py (see its docstring for what each reproduces). This module imports
nothing of phenolip_jax, so an export ships it as `open_clip/phenolip_torch.py` and the model card's torch
snippet rebuilds the image tower from it on a machine that has only torch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """timm Attention: fused qkv Linear (q, k, v order), scaled dot product, output `proj`."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over x [B, T, D]."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """timm Mlp: fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, bias: tuple[bool, bool] = (True, True)):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias[0])
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim, bias=bias[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(gelu(fc1(x)))."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm pre-LN Block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One transformer block."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """timm PatchEmbed: a strided Conv2d named `proj`."""

    def __init__(self, patch: int, channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW images -> tokens [B, N, D]."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """timm VisionTransformer without classifier (num_classes=0); forward returns the pooled vector."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, num_heads: int, mlp_dim: int,
                 global_pool: str = "token", eps: float = 1e-6, channels: int = 3):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool {global_pool!r}: expected 'token' or 'avg'")
        self.global_pool = global_pool
        n = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, channels, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim, eps) for _ in range(depth))
        # timm: with 'avg' pooling the final norm moves after pooling (norm = Identity, fc_norm = LayerNorm).
        self.norm = nn.LayerNorm(width, eps=eps) if global_pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(width, eps=eps) if global_pool == "avg" else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, 1 + N, D] after the final `norm`."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, D] of NCHW images."""
        x = self.forward_features(x)
        return self.fc_norm(x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(dim=1))


class TimmTower(nn.Module):
    """open_clip TimmModel: `trunk` (timm ViT) + `head` (Sequential with 'drop'+'proj' or 'mlp')."""

    def __init__(self, trunk: TimmViT, embed_dim: int, proj: str = "linear", proj_bias: bool = False):
        super().__init__()
        self.trunk = trunk
        width = trunk.cls_token.shape[-1]
        if proj == "linear":
            self.head = nn.Sequential()
            self.head.add_module("drop", nn.Dropout(0.0))
            self.head.add_module("proj", nn.Linear(width, embed_dim, bias=proj_bias))
        elif proj == "mlp":
            self.head = nn.Sequential()
            # open_clip: Mlp(prev_chs, 2 * embed_dim, embed_dim, bias=(True, proj_bias)).
            self.head.add_module("mlp", Mlp(width, 2 * embed_dim, embed_dim, bias=(True, proj_bias)))
        else:
            raise ValueError(f"timm_proj {proj!r}: expected 'linear' or 'mlp'")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features [B, E]."""
        return self.head(self.trunk(images))


class HFTextTower(nn.Module):
    """open_clip HFTextEncoder for BERT: `transformer` (BertModel) + `proj`, CLS / mean / pooler pooling."""

    def __init__(self, bert_config: Any, embed_dim: int, proj_type: str = "mlp",
                 pooler_type: str = "cls_last_hidden_state_pooler"):
        super().__init__()
        from transformers import BertModel

        if pooler_type not in ("cls_last_hidden_state_pooler", "cls_pooler", "mean_pooler"):
            raise ValueError(f"hf_pooler_type {pooler_type!r} is not reproduced here")
        self.pooler_type = pooler_type
        self.pad_token_id = int(bert_config.pad_token_id or 0)
        self.transformer = BertModel(bert_config, add_pooling_layer=pooler_type == "cls_pooler")
        d = bert_config.hidden_size
        if proj_type == "linear":
            self.proj = nn.Linear(d, embed_dim, bias=False)
        elif proj_type == "mlp":
            hidden = (d + embed_dim) // 2
            self.proj = nn.Sequential(nn.Linear(d, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False))
        else:
            raise ValueError(f"hf_proj_type {proj_type!r}: expected 'linear' or 'mlp'")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features [B, E]; padding is wherever ids == pad_token_id (as open_clip)."""
        mask = (ids != self.pad_token_id).long()
        out = self.transformer(input_ids=ids, attention_mask=mask)
        if self.pooler_type == "cls_pooler":
            pooled = out.pooler_output
        elif self.pooler_type == "mean_pooler":
            pooled = (out.last_hidden_state * mask.unsqueeze(-1)).sum(1) / mask.sum(-1, keepdim=True)
        else:
            pooled = out.last_hidden_state[:, 0]
        return self.proj(pooled)


class CustomTextCLIP(nn.Module):
    """open_clip CustomTextCLIP: `visual`, `text`, `logit_scale` and optional `logit_bias`."""

    def __init__(self, visual: TimmTower, text: HFTextTower, logit_scale: float = 2.659260036932778,
                 logit_bias: float | None = None):
        super().__init__()
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias))) if logit_bias is not None else None

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of NCHW images."""
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings of token ids."""
        x = self.text(ids)
        return F.normalize(x, dim=-1) if normalize else x

    def get_logits(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Image-to-text logits scale * v t^T (+ bias)."""
        logits = self.logit_scale.exp() * self.encode_image(images) @ self.encode_text(ids).T
        return logits + self.logit_bias if self.logit_bias is not None else logits
