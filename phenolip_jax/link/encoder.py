"""Encoder scoring of candidate spans: best cosine between a span and every candidate HPO term's name.

The encoder is a stage-1 workdir (the knowledge encoder, as stage 1 evaluates it: a term is its bare name), a
stage-2 workdir (its text tower), or a Hugging Face BERT directory: the raw encoder, mean-pooled with no head,
as stage 1's 'raw' baseline. Term names are embedded once per model and cached in the run like predict's
phenotype embeddings (`evaluate.phenotype_cache`, same fingerprint); span texts are embedded once per linker.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from phenolip_jax import artifacts, inference
from phenolip_jax.convert import hf_bert
from phenolip_jax.evaluate import phenotype_cache
from phenolip_jax.models import two_tower

NAME_TEMPLATES = inference.NAME_TEMPLATES  # a term is its bare name, as stage 1's evaluation embeds it
RAW_MAX_LEN = 16  # tokens per span for a raw Hugging Face encoder (six words fit; stage-1 runs use their own)
SCORE_CHUNK = 4096  # spans per similarity block: [4096, 18K] float32 is 300 MB


def is_hf_dir(path: str) -> bool:
    """A Hugging Face BERT directory (config.json and a tokenizer) that is not a phenolip_jax workdir."""
    return (os.path.isfile(os.path.join(path, "config.json"))
            and any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.txt"))
            and not any(os.path.exists(os.path.join(path, m))
                        for m in (artifacts.STAGE1_CONFIG, artifacts.MODEL_CONFIG)))


def raw_encoder(hf_dir: str, batch_size: int = 256, max_len: int = RAW_MAX_LEN) -> inference.Model:
    """The pretrained encoder of a Hugging Face BERT directory, mean-pooled, no head (stage 1's 'raw')."""
    bert_kwargs, bert_params = hf_bert.load_hf_bert(hf_dir, pooling="mean")
    module = two_tower.text_tower_from_config(dict(bert=bert_kwargs, head="none"))
    return inference.Model("stage1", module, {"encoder": bert_params}, artifacts.load_tokenizer(hf_dir), max_len,
                           templates=NAME_TEMPLATES, path=os.path.abspath(hf_dir), batch_size=batch_size)


def load_encoder(path: str, ontology_cfg: Any, batch_size: int = 256) -> inference.Model:
    """A text encoder from a stage-1 / stage-2 workdir or a Hugging Face BERT directory (config.encoder)."""
    if not os.path.exists(path):
        raise ValueError(f"config.encoder={path!r} does not exist: give a stage-1 workdir (or a Hugging Face BERT "
                         "directory for the raw encoder)")
    if is_hf_dir(path):
        model = raw_encoder(path, batch_size)
    else:
        try:
            model = inference.load(path, batch_size=batch_size, templates=NAME_TEMPLATES)
        except FileNotFoundError as e:
            raise ValueError(f"config.encoder={path!r}: {e}") from None
    inference.use_ontology(model, ontology_cfg)
    return model


def term_matrix(model: inference.Model, ids: Sequence[str], cache_dirs: Sequence[str]) -> np.ndarray:
    """[P, D] unit-norm name embeddings of `ids`, read from / written to the phenotype cache."""
    emb, _ = phenotype_cache.phenotype_embeddings(model, ids, cache_dirs, templates=NAME_TEMPLATES)
    return emb


@jax.jit
def _best(spans: jax.Array, terms: jax.Array) -> tuple[jax.Array, jax.Array]:
    sims = spans @ terms.T
    return jnp.argmax(sims, axis=1), jnp.max(sims, axis=1)


class SpanScorer:
    """Span text -> (best term index, cosine) against a fixed term set, memoised per text."""

    def __init__(self, model: inference.Model, terms: np.ndarray, matrix: np.ndarray, verbose: bool = False):
        self.model, self.terms, self.verbose = model, np.asarray(terms, np.int64), verbose
        self.matrix = jnp.asarray(matrix, jnp.float32)
        self.memo: dict[str, tuple[int, float]] = {}
        self.encoded = 0  # span texts embedded so far (the cost; the memo answers the rest)

    def score(self, texts: Sequence[str]) -> list[tuple[int, float]]:
        """(term index, cosine) of each text's best term; new texts are embedded in model batches."""
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        start = time.time()
        for lo in range(0, len(new), SCORE_CHUNK):
            chunk = new[lo:lo + SCORE_CHUNK]
            emb = self.model.encode_texts(chunk)
            col, sim = (np.asarray(a) for a in _best(jnp.asarray(_pad(emb, SCORE_CHUNK)), self.matrix))
            for t, c, s in zip(chunk, col[:len(chunk)], sim[:len(chunk)]):
                self.memo[t] = (int(self.terms[c]), float(s))
            self.encoded += len(chunk)
            if self.verbose and len(new) > SCORE_CHUNK:
                rate = (lo + len(chunk)) / max(time.time() - start, 1e-9)
                print(f"link: embedded {lo + len(chunk)}/{len(new)} spans ({rate:.0f}/s)", file=sys.stderr, flush=True)
        return [self.memo[t] for t in texts]


def memo_path(cache_dir: str, scorer: SpanScorer) -> str:
    """The span-score file of this model and term set in `cache_dir` (another model or term set: another file)."""
    h = hashlib.sha256(phenotype_cache.fingerprint(scorer.model, NAME_TEMPLATES).encode())
    h.update(np.ascontiguousarray(scorer.terms).tobytes())
    h.update(str(scorer.model.ontology.source_sha256).encode())  # term indices mean other terms in another release
    return os.path.join(cache_dir, f"spans-{h.hexdigest()[:24]}.npz")


def load_memo(path: str, scorer: SpanScorer) -> int:
    """Adds the span scores saved at `path` (if any) to the scorer's memo; returns how many were read."""
    if not os.path.exists(path):
        return 0
    with np.load(path, allow_pickle=False) as f:
        scorer.memo.update(zip(f["texts"].tolist(), zip(f["terms"].tolist(), f["scores"].tolist())))
        return len(f["texts"])


def save_memo(path: str, scorer: SpanScorer) -> None:
    """Writes the scorer's memo (span text -> best term, cosine) to `path` (atomically)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    texts = list(scorer.memo)
    tmp = path + ".tmp.npz"
    np.savez(tmp, texts=np.asarray(texts, dtype=str), terms=np.asarray([scorer.memo[t][0] for t in texts], np.int64),
             scores=np.asarray([scorer.memo[t][1] for t in texts], np.float32))
    os.replace(tmp, path)


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    """Rows padded with zeros to `rows` (one shape: `_best` compiles once)."""
    return np.concatenate([x, np.zeros((rows - len(x), x.shape[1]), x.dtype)]) if len(x) < rows else x
