"""A run's files on disk: params checkpoints, JSON records (model_config.json, stage1_config.json), tokenizers.

The lowest floor of the package (it imports none of our modules), so that data/, tasks/, inference.py and
convert/ all read and write run artifacts through one implementation. Layout of a workdir:

  stage 1:  stage1_config.json (text tower fields, hf_dir, max_len, obo_path), encoder/ ({'text': params})
  stage 2:  model_config.json (tower fields, text_hf_dir, max_len, image size, mean, std), params/
  both:     checkpoints/<step>/state (orbax train state; its 'params' item is what encoders need)
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from transformers import AutoTokenizer

MODEL_CONFIG = "model_config.json"  # stage 2
STAGE1_CONFIG = "stage1_config.json"


def write_json(path: str, obj: Any) -> None:
    """Writes JSON atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The JSON object stored at `path`."""
    with open(path) as f:
        return json.load(f)


def save_params(path: str, params: Any) -> None:
    """Writes a params pytree as an orbax checkpoint at `path` (overwriting), blocking until done.

    Call it on every process: arrays sharded across processes (FSDP on several hosts) are written as one
    collective save, each process writing its own shards; host NumPy leaves are written once.
    """
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), params, force=True)
    ckptr.wait_until_finished()


def _restore_on_one_device(path: str) -> Any:
    """An orbax pytree restored onto this process's first device, whatever mesh it was saved from."""
    ckptr = ocp.StandardCheckpointer()
    meta = ckptr.metadata(os.path.abspath(path)).item_metadata
    meta = getattr(meta, "tree", meta)
    # A sharded save records its mesh; restoring onto one local device works in any process layout.
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
    return jax.device_get(ckptr.restore(os.path.abspath(path), target))


def load_params(path: str) -> Any:
    """Reads a params pytree written by `save_params` (as host NumPy arrays)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no params checkpoint at {path}")
    return _restore_on_one_device(path)


def restore_state_params(step_dir: str) -> Any:
    """The `params` of a train state saved by train/checkpoint.py in `step_dir` (= checkpoints/<step>)."""
    state_dir = os.path.join(step_dir, "state") if os.path.isdir(os.path.join(step_dir, "state")) else step_dir
    return _restore_on_one_device(state_dir)["params"]


def latest_step_dir(ckpt_dir: str) -> str:
    """checkpoints/<newest step> (only directories whose name is a step number)."""
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit() and os.path.isdir(os.path.join(ckpt_dir, d)))
    if not steps:
        raise FileNotFoundError(f"no checkpoint steps in {ckpt_dir}")
    return os.path.join(ckpt_dir, str(steps[-1]))


def read_stage1_encoder(workdir: str) -> tuple[dict, dict]:
    """(stage1_config.json, TextTower params) of a finished stage-1 workdir (its encoder/ folder)."""
    meta_path = os.path.join(workdir, STAGE1_CONFIG)
    enc_path = os.path.join(workdir, "encoder")
    if not (os.path.exists(meta_path) and os.path.exists(enc_path)):
        raise FileNotFoundError(f"{workdir} is not a finished stage-1 workdir (needs {STAGE1_CONFIG} and encoder/)")
    return read_json(meta_path), load_params(enc_path)["text"]


def check_tokenizer(tokenizer: Any, words: tuple[str, ...] = ("phenotype", "skull")) -> None:
    """Raise if real words tokenize to [UNK] (e.g. transformers 5's 5-token BertTokenizerFast(vocab_file=) trap)."""
    unk = tokenizer.unk_token_id
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids or (unk is not None and unk in ids):
            raise ValueError(f"tokenizer maps {word!r} to [UNK] (vocabulary size {len(tokenizer)}); "
                             "it did not load its vocabulary")


def load_tokenizer(path: str | os.PathLike) -> Any:
    """`AutoTokenizer.from_pretrained(path)` for a local directory, checked to know real words."""
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(tokenizer)
    return tokenizer


def hash_params(h: Any, params: Any) -> Any:
    """Feeds every leaf of a parameter tree (path, dtype, shape, bytes; in path order) into the hashlib object `h`;
    returns it."""
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h


def output_folder(cfg: Any, workdir: str) -> str:
    """A command's output folder (config.output_dir, else --workdir), made and checked writable before anything
    loads (a bad one fails at once)."""
    out_dir = cfg.output_dir or workdir
    field = "config.output_dir" if cfg.output_dir else "--workdir"
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise ValueError(f"config.output: {field}={out_dir!r} is not a writable folder ({err.strerror})") from None
    return out_dir
