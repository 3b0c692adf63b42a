"""Export a stage-2 run to PyTorch formats (open_clip layout, Hugging Face BERT dir, flat safetensors) or ONNX.

`python -m phenolip_jax.main --config=configs/export.py --config.checkpoint=WORKDIR --workdir=OUTDIR`
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Export config; there are no variants (`arg` is accepted for the common signature and must be empty)."""
    if arg:
        raise ValueError(f"configs/export.py has no variant {arg!r}")
    c = ml_collections.ConfigDict()
    c.stage = "export"
    c.checkpoint = ""  # stage-2 run directory (model_config.json + params/ or checkpoints/)
    c.output = ""  # output directory (created); '' = the --workdir given to main.py
    c.formats = ("open_clip", "hf_bert", "safetensors")  # any subset of these and 'onnx' (needs torch, onnxscript)
    # 'onnx' writes onnx/image_encoder.onnx + text_encoder.onnx; not a default: its exporter is an optional extra
    c.hf_model_name = ""  # text_cfg.hf_model_name / hf_tokenizer_name in open_clip_config.json ('' = '.': the
    # open_clip folder, which holds the BERT config.json and the tokenizer; a hub id such as
    # 'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract' makes open_clip fetch the config from the hub)
    c.open_clip_bin = False  # also write open_clip_pytorch_model.bin (torch pickle) for older open_clip
    c.verify = True  # rebuild the PyTorch models from the exported files and print max abs diffs vs Flax
    return c
