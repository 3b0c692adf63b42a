"""ONNX export: `image_encoder.onnx` and `text_encoder.onnx`, each giving L2-normalised PhenoLIP embeddings.

Route: the Flax params go into the PyTorch modules of convert/torch_modules.py (the open_clip export's
parity reference), and torch.onnx.export (the torch.export-based exporter, torch's default) writes one graph
per tower with a dynamic batch axis (and a dynamic sequence axis for text). docs/interop.md compares it with
jax2onnx, which converts the Flax model directly but cannot be pinned beside orbax-checkpoint 0.12.8.

OUTDIR/onnx/image_encoder.onnx   pixel_values float32 [batch, 3, S, S] (NCHW, after the eval transform)
                                 -> image_embeds float32 [batch, E]
OUTDIR/onnx/text_encoder.onnx    input_ids int64 [batch, seq] (padding = pad_token_id, masked inside the graph,
                                 as open_clip does) -> text_embeds float32 [batch, E]
OUTDIR/onnx/phenolip_onnx.json   input / output names, image size, mean / std, max_len, pad_token_id, logit scale
Needs torch, onnx and onnxscript to export, onnxruntime to verify (requirements-test.txt pins all four).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from phenolip_jax.convert import open_clip as oc

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
META_FILE = "phenolip_onnx.json"
IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"
TEXT_INPUT, TEXT_OUTPUT = "input_ids", "text_embeds"
OPSET = 18  # onnxruntime >= 1.14 runs it; the exporter's own default moves with torch releases
# A protobuf message holds at most 2 GiB: a larger tower keeps its weights in a '.data' file beside the graph.
_SINGLE_FILE_BYTES = 2**31 - 2**26
INSTALL = "pip install torch==2.13.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0"


def torch_two_tower(fields: Mapping[str, Any], params: Mapping[str, Any], bert_config: Mapping[str, Any]) -> Any:
    """The PyTorch CustomTextCLIP (convert/torch_modules.py) holding the Flax params, in eval mode."""
    import torch

    from phenolip_jax.convert import torch_reference

    model = torch_reference.build_from_open_clip_config(oc.open_clip_config(fields, bert_config)).eval()
    state = oc.two_tower_to_state_dict(fields, params)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    return model


def _export_tower(model: Any, method: str, example: Any, path: Path, input_name: str, output_name: str,
                  dynamic: dict[int, Any]) -> float:
    """Writes one tower's graph (model.<method>, L2-normalised) to path; returns the seconds it took."""
    import torch

    class Encoder(torch.nn.Module):
        """One tower of the CLIP model as its own module: the exporter traces forward()."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """The tower's L2-normalised embedding."""
            return getattr(self.model, method)(x, normalize=True)

    tower = getattr(model, "visual" if method == "encode_image" else "text")
    weight_bytes = sum(p.numel() * p.element_size() for p in tower.parameters())
    # The exporter warns, once per op, that torchvision's detection ops are unregistered: none is used here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    t0 = time.time()
    torch.onnx.export(Encoder().eval(), (example,), str(path), input_names=[input_name], output_names=[output_name],
                      opset_version=OPSET, dynamo=True, dynamic_shapes=(dynamic,), verbose=False,
                      external_data=weight_bytes > _SINGLE_FILE_BYTES)
    return time.time() - t0


def export_onnx(fields: Mapping[str, Any], params: Mapping[str, Any], out_dir: str | Path,
                bert_config: Mapping[str, Any], *, mean: Sequence[float], std: Sequence[float], max_len: int,
                logit_scale: float | None = None) -> dict[str, Any]:
    """Write image_encoder.onnx, text_encoder.onnx and phenolip_onnx.json into out_dir; returns what was written."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) translates with it)
        import torch
    except ImportError as e:
        raise ImportError(f"config.formats has 'onnx', which needs torch, onnx and onnxscript ({e}): {INSTALL}") from e
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = torch_two_tower(fields, params, bert_config)
    vit, bert = fields["image_config"]["vit"], fields["text_config"]["bert"]
    size = int(vit["image_size"]) if not isinstance(vit["image_size"], (list, tuple)) else int(vit["image_size"][0])
    # Traced at batch 2 and 8 tokens (torch.export specialises sizes 0 and 1), one row padded as real batches are.
    images = torch.zeros(2, 3, size, size)
    ids = torch.ones(2, 8, dtype=torch.long)
    ids[0, 4:] = int(bert_config.get("pad_token_id") or 0)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", min=1, max=int(bert.get("max_position_embeddings", 512)))
    seconds = dict(
        image=_export_tower(model, "encode_image", images, out_dir / IMAGE_FILE, IMAGE_INPUT, IMAGE_OUTPUT,
                            {0: batch}),
        text=_export_tower(model, "encode_text", ids, out_dir / TEXT_FILE, TEXT_INPUT, TEXT_OUTPUT,
                           {0: batch, 1: seq}))
    meta = dict(image=dict(file=IMAGE_FILE, input=IMAGE_INPUT, output=IMAGE_OUTPUT, layout="NCHW", image_size=size,
                           mean=[float(m) for m in mean], std=[float(s) for s in std]),
                text=dict(file=TEXT_FILE, input=TEXT_INPUT, output=TEXT_OUTPUT, max_len=int(max_len),
                          pad_token_id=int(bert_config.get("pad_token_id") or 0)),
                embed_dim=int(fields["image_config"].get("embed_dim", 512)), normalize="l2", opset=OPSET,
                logit_scale=None if logit_scale is None else round(float(logit_scale), 4),
                max_position_embeddings=int(bert.get("max_position_embeddings", 512)))
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return dict(dir=str(out_dir), files=[IMAGE_FILE, TEXT_FILE, META_FILE],
                megabytes={f: round((out_dir / f).stat().st_size / 1e6, 1) for f in (IMAGE_FILE, TEXT_FILE)},
                export_seconds={k: round(v, 1) for k, v in seconds.items()})


def run_onnx(onnx_dir: str | Path, images_nhwc: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) embeddings of the exported graphs under onnxruntime's CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"checking the ONNX export needs onnxruntime (or set config.verify=False): {INSTALL}") from e

    onnx_dir = Path(onnx_dir)
    out = []
    for name, inp, x in ((IMAGE_FILE, IMAGE_INPUT, np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))),
                         (TEXT_FILE, TEXT_INPUT, ids.astype(np.int64))):
        session = ort.InferenceSession(str(onnx_dir / name), providers=["CPUExecutionProvider"])
        out.append(session.run(None, {inp: x})[0])
    return out[0], out[1]


def max_abs_diffs(onnx_dir: str | Path, images_nhwc: np.ndarray, ids: np.ndarray, want_image: np.ndarray,
                  want_text: np.ndarray) -> dict[str, float]:
    """Max abs differences between the onnxruntime embeddings and the given (Flax) ones."""
    image, text = run_onnx(onnx_dir, images_nhwc, ids)
    return dict(onnx_image_max_abs=float(np.abs(image - want_image).max()),
                onnx_text_max_abs=float(np.abs(text - want_text).max()))
