"""Pack what the train step eats: images resized and re-encoded as JPEG, captions as token ids.

A 512 px PNG costs the input pipeline ~11 ms of CPU to decode and crop; a 256 px JPEG ~1 ms
(benchmarks/jpeg_decode.py). Tokenising in the pipeline costs again per epoch. So the packer can store, per
record, the image with its shorter side at `image_size` (about 1.15x the training crop) as JPEG, and the
caption's token ids for a tokenizer and max_len. packing.json records both; a run uses stored ids only when they were made by its own tokenizer and max_len
(`check_stored_tokens` refuses others, naming the mismatch).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from phenolip_jax import config_lib
from phenolip_jax.data import images
from phenolip_jax.data.teacher_inputs import vocab_fingerprint

IMAGE_FORMATS = ("keep", "jpeg")


@dataclasses.dataclass(frozen=True)
class StepFormat:
    """What the packer stores per record besides the caption and HPO ids (defaults: the bytes as they came)."""

    image_size: int = 0  # shorter side at pack time (0 = keep the size); never upscales
    image_format: str = "keep"  # 'keep' the encoded bytes (after any resize: JPEG stays JPEG, else PNG) or 'jpeg'
    jpeg_quality: int = 90
    tokenizer: Any = None  # store the caption's ids for this tokenizer, truncated to max_len
    max_len: int = 0
    # Also store the teacher's own ids (stage 2 with teacher.embeddings='on_the_fly' and a teacher whose vocabulary
    # differs from the student's); not stored when the student's ids serve it (same vocabulary and max_len).
    teacher_tokenizer: Any = None
    teacher_max_len: int = 0

    def __post_init__(self):
        if self.image_format not in IMAGE_FORMATS:
            raise config_lib.UserError(f"--image_format={self.image_format!r}: use one of {IMAGE_FORMATS}")
        if self.image_size < 0 or not 1 <= self.jpeg_quality <= 100:
            raise config_lib.UserError(f"--image_size={self.image_size} / --jpeg_quality={self.jpeg_quality}: "
                                       "the size must be >= 0 (0 = keep) and the quality in 1-100")
        if self.tokenizer is not None and self.max_len < 1:
            raise config_lib.UserError("--tokenizer needs --max_len >= 1: the ids are stored for one context length")
        if self.teacher_tokenizer is not None and (self.tokenizer is None or self.teacher_max_len < 1):
            raise config_lib.UserError("--teacher_tokenizer needs --tokenizer and --teacher_max_len >= 1 (the "
                                       "teacher's ids are stored beside the student's)")

    @property
    def stores_teacher_ids(self) -> bool:
        """Whether the teacher's ids differ from the student's and are stored (`teacher_input_ids`)."""
        if self.teacher_tokenizer is None:
            return False
        return token_spec(self.teacher_tokenizer, self.teacher_max_len)["vocab_sha256"] != vocab_fingerprint(
            self.tokenizer) or self.teacher_max_len != self.max_len

    @property
    def changes_images(self) -> bool:
        """Whether images are decoded and re-encoded (else their bytes are copied)."""
        return self.image_size > 0 or self.image_format == "jpeg"

    def image(self, data: bytes) -> bytes:
        """The image as stored: shorter side to image_size and/or JPEG, or the bytes unchanged."""
        if not self.changes_images:
            return data
        rgb = images.decode_rgb(data)[0]  # validated bytes; alpha on white, 16-bit scaled, as training reads them
        if self.image_size:
            rgb = images.shorter_side_to(rgb, self.image_size)
        if self.image_format == "jpeg" or data[:2] == b"\xff\xd8":
            return images.encode_jpeg(rgb, self.jpeg_quality)
        return images.encode_png(rgb)

    def tokens(self, caption: str) -> dict[str, list[int]]:
        """{'input_ids': [...]} (unpadded, truncated to max_len) when a tokenizer is set, plus `teacher_input_ids`
        when the teacher's are stored; else {}."""
        if self.tokenizer is None:
            return {}
        out = {"input_ids": list(self.tokenizer(caption, max_length=self.max_len, truncation=True)["input_ids"])}
        if self.stores_teacher_ids:
            out["teacher_input_ids"] = list(self.teacher_tokenizer(caption, max_length=self.teacher_max_len,
                                                                   truncation=True)["input_ids"])
        return out

    def info(self) -> dict[str, Any]:
        """packing.json's `step_format`: what a run checks before it uses the stored ids."""
        out: dict[str, Any] = {"image_size": self.image_size, "image_format": self.image_format}
        if self.image_format == "jpeg":
            out["jpeg_quality"] = self.jpeg_quality
        if self.tokenizer is not None:
            out["tokens"] = token_spec(self.tokenizer, self.max_len)
        if self.stores_teacher_ids:
            out["teacher_tokens"] = token_spec(self.teacher_tokenizer, self.teacher_max_len)
        return out


def token_spec(tokenizer: Any, max_len: int) -> dict[str, Any]:
    """What stored ids depend on: the vocabulary (and casing), max_len, and the pad id used to pad them."""
    return {"vocab_sha256": vocab_fingerprint(tokenizer), "max_len": int(max_len),
            "pad_id": int(tokenizer.pad_token_id or 0), "name": str(getattr(tokenizer, "name_or_path", ""))}


def check_stored_tokens(info: Mapping[str, Any], where: str, tokenizer: Any, max_len: int,
                        kind: str = "tokens") -> dict[str, Any] | None:
    """The stored ids' spec when they fit this run's tokenizer and max_len, None when none are stored; else a
    UserError naming the mismatch. `kind`: 'tokens' (the caption's ids) or 'teacher_tokens' (the teacher's)."""
    spec = (info.get("step_format") or {}).get(kind)
    if spec is None:
        return None
    want = token_spec(tokenizer, max_len)
    bad = [f"{k} {spec.get(k)!r} (this run: {want[k]!r})" for k in ("vocab_sha256", "max_len") if spec.get(k) != want[k]]
    if bad:
        whose, flag = ("the teacher's token ids", "--teacher_tokenizer and --teacher_max_len") if kind == \
            "teacher_tokens" else ("caption token ids", "--tokenizer and --max_len")
        raise config_lib.UserError(
            f"config.data.packed_dir={where!r} stores {whose} made with another tokenizer or context: "
            f"{'; '.join(bad)} (packed with {spec.get('name')!r}). Pack again with this run's {flag}"
            f"={want['max_len']}, or without them (the pipeline then tokenises)")
    return spec
