"""Stage 2's view of the frozen teacher: which tokenizer reads the captions, and its precomputed embeddings."""
from __future__ import annotations

import os
from typing import Any

import jax

from phenolip_jax import artifacts
from phenolip_jax.data import teacher_cache
from phenolip_jax.data.sources import use_stored_teacher_ids
from phenolip_jax.data.records import Record
from phenolip_jax.data.teacher_inputs import (TeacherInputs, same_vocabulary, teacher_inputs, teacher_max_len,
                                              vocab_fingerprint)
from phenolip_jax.inference import text_encoder

EMBEDDING_MODES = ("precompute", "on_the_fly")


def teacher_tokenizer(meta: dict[str, Any]) -> Any:
    """The tokenizer the stage-1 teacher was trained with (its stage1_config.json `hf_dir`)."""
    path = meta.get("hf_dir") or ""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"the teacher's tokenizer dir {path!r} (hf_dir in the stage-1 run's stage1_config.json, "
                                "set by config.teacher.workdir) is not a directory on this machine")
    return artifacts.load_tokenizer(path)


def train_captions(train: Any) -> list[str]:
    """Caption texts of the training split (validated Records, or any source yielding examples)."""
    if isinstance(train, (list, tuple)) and (not train or isinstance(train[0], Record)):
        return [r.caption for r in train]
    return [train[i]["caption"] for i in range(len(train))]


def teacher_transform(cfg: Any, teacher_model: Any, tparams: Any, meta: dict[str, Any], tokenizer: Any,
                      train: Any, workdir: str) -> TeacherInputs | None:
    """The pipeline transform giving the teacher its own ids or cached embedding; None = the student's ids serve.

    The teacher reads the same caption span as the student (`data.max_len`, capped by its position table).
    `config.teacher.embeddings`: 'precompute' embeds every training caption once, before training, into
    <workdir>/teacher_cache/<teacher identity>/ (resumable); 'on_the_fly' runs the teacher in every step.
    """
    mode = cfg.teacher.get("embeddings", "on_the_fly")
    if mode not in EMBEDDING_MODES:
        raise ValueError(f"config.teacher.embeddings={mode!r}: use one of {EMBEDDING_MODES}")
    ttok = teacher_tokenizer(meta)
    max_len = teacher_max_len(cfg.data.max_len, meta["text_tower"])
    if max_len == cfg.data.max_len and same_vocabulary(tokenizer, ttok):
        ttok = tokenizer  # tokenised once: the student's ids are the teacher's
    if mode == "on_the_fly":
        transform = teacher_inputs(tokenizer, ttok, max_len)
        if transform is not None and use_stored_teacher_ids(train, ttok, max_len):
            print("teacher: its own token ids come from the packed shards (packed with --teacher_tokenizer)")
        return transform
    ident = teacher_cache.teacher_identity(tparams, meta["text_tower"], vocab_fingerprint(ttok), max_len)
    encode = text_encoder(lambda i, m: teacher_model.apply({"params": tparams}, i, m), ttok, max_len,
                          cfg.eval.batch_size)
    table = teacher_cache.build_table(os.path.join(workdir, "teacher_cache", ident), train_captions(train), encode,
                                      write=jax.process_index() == 0)
    return teacher_inputs(tokenizer, ttok, max_len, table=table)
