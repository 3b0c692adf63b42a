"""What the frozen stage-1 teacher reads of each caption: its own token ids, or a precomputed embedding.

The teacher was trained with its own tokenizer (stage 1's `text.hf_dir`). When its vocabulary equals the
student's, the student's ids serve both (tokenised once). Otherwise the pipeline adds the teacher's own
`teacher_input_ids` / `teacher_attention_mask` beside the student's, and when the teacher embeddings were
precomputed (`data.teacher_cache`), it adds `teacher_emb` instead and the step runs no teacher at all.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import grain
import numpy as np

from phenolip_jax.data.tokenize import Tokenize


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 of a tokenizer's vocabulary (token -> id) and lower-casing: equal iff the ids mean the same."""
    vocab = sorted(tokenizer.get_vocab().items())
    lower = getattr(tokenizer, "do_lower_case", None)
    return hashlib.sha256(json.dumps([vocab, lower], ensure_ascii=False).encode("utf-8")).hexdigest()


def same_vocabulary(a: Any, b: Any) -> bool:
    """True when two tokenizers map every text to the same ids (same vocabulary and casing)."""
    return a is b or vocab_fingerprint(a) == vocab_fingerprint(b)


def teacher_max_len(max_len: int, teacher_tower: dict[str, Any]) -> int:
    """The teacher's context: the student's `data.max_len` (same caption span), capped by its position table."""
    return min(int(max_len), int(teacher_tower["bert"].get("max_position_embeddings", max_len)))


class TeacherInputs(grain.transforms.Map):
    """Adds the teacher's view of element['caption'] (kept): its own ids/mask and/or its cached embedding."""

    def __init__(self, tokenizer: Any = None, max_len: int = 0, table: Any = None):
        if tokenizer is None and table is None:
            raise ValueError("TeacherInputs needs a teacher tokenizer or an embedding table")
        self.tokenizer, self.max_len, self.table = tokenizer, int(max_len), table

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        return {**element, **{k: v[0] for k, v in self.batch([element["caption"]]).items()}}

    def batch(self, captions: Sequence[str], stored: Sequence[Sequence[int] | None] | None = None
              ) -> dict[str, np.ndarray]:
        """The teacher's inputs for a batch of captions: `teacher_emb` [B,D], or its own ids / mask [B,L'] (from
        `stored`, the ids packed with the data, where given)."""
        if self.table is not None:
            return {"teacher_emb": np.stack([self.table.lookup(c) for c in captions])}
        ids, mask = Tokenize(self.tokenizer, self.max_len).batch(captions, stored or [None] * len(captions))
        return {"teacher_input_ids": ids, "teacher_attention_mask": mask}


def teacher_inputs(student_tokenizer: Any, teacher_tokenizer: Any, max_len: int,
                   table: Any = None) -> TeacherInputs | None:
    """The pipeline transform for the teacher, or None when the student's ids serve it (same vocabulary)."""
    if table is not None:
        return TeacherInputs(table=table)
    if same_vocabulary(student_tokenizer, teacher_tokenizer):
        return None
    return TeacherInputs(teacher_tokenizer, max_len)


def teacher_ids(batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """(ids, mask) the teacher reads in a batch: its own when the pipeline added them, else the student's."""
    if "teacher_input_ids" in batch:
        return batch["teacher_input_ids"], batch["teacher_attention_mask"]
    return batch["input_ids"], batch["attention_mask"]
