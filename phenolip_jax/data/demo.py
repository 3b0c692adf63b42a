"""Embedded demo dataset: synthetic, procedurally rendered images paired with captions built from real HPO text.

The images are NOT medical images. Each phenotype gets a visual motif (shape, count, colour, position,
texture) drawn over a background that encodes its organ system; a child phenotype inherits its parent's motif
plus a change, so related phenotypes look related. The data exist so that every stage of the library runs
offline on a CPU and so that learning can be measured (held-out retrieval far above chance).
"""
from __future__ import annotations

import argparse
import colorsys
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from phenolip_jax.ontology import Ontology, default_obo_path, file_sha256, load_ontology

GENERATOR_VERSION = 3  # 2: held-out (unseen) phenotypes; 3: no held-out phenotype is a visual parent
SOURCE = "phenolip-demo"
# Organ systems (children of HP:0000118) used by the demo: ones a photograph could plausibly show, with few
# shared descendants, so that each chosen phenotype has exactly one of them.
DEMO_ORGAN_SYSTEMS = (
    "HP:0000478",  # eye
    "HP:0000598",  # ear
    "HP:0000152",  # head or neck
    "HP:0040064",  # limbs
    "HP:0001574",  # integument
    "HP:0001626",  # cardiovascular system
    "HP:0000707",  # nervous system
    "HP:0000119",  # genitourinary system
)
MIN_DEPTH, MAX_DEPTH = 3, 6  # HP:0000001 is depth 0, so organ systems sit at depth 2
PAIR_FRACTION = 0.2  # share of captions/images that carry two phenotypes
UNSEEN_FRACTION = 0.15  # default share of phenotypes held out of train/val (they appear only at test time)

TRAIN_TEMPLATES = (
    "Clinical photograph showing {a}.",
    "Image of a patient with {a}.",
    "Photograph of a patient with {a}; {d}",
    "{A} is visible in this image.",
    "This image shows {a}. {d}",
    "Medical image demonstrating {a}.",
    "Figure: a case of {a}.",
    "Findings consistent with {a}.",
)
TRAIN_PAIR_TEMPLATES = (
    "Findings consistent with {a} and {b}.",
    "Clinical photograph showing {a} together with {b}.",
    "Image of a patient with {a}; also note {b}.",
)
# Held out: only the test split uses these, so test captions are new sentences around known phenotypes.
TEST_TEMPLATES = (
    "Representative picture of an individual presenting with {a}.",
    "Note the {a} in this patient. {d}",
    "Case illustration: {a}.",
)
TEST_PAIR_TEMPLATES = (
    "Representative picture of an individual presenting with {a} and {b}.",
    "Case illustration: {a}, accompanied by {b}.",
)
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


@dataclasses.dataclass(frozen=True)
class Motif:
    """Visual signature of one phenotype, in image-relative units."""

    shape: int  # index into the signed-distance shapes of `_shape_sdf`
    count: int  # copies drawn around the anchor
    colour: tuple[float, float, float]
    size: float
    anchor: tuple[float, float]
    spread_angle: float  # direction along which the copies are laid out
    texture_freq: float  # stripes per unit inside the shapes; 0 = flat fill
    texture_angle: float
    accent: int  # -1 = none, else the shape of a small dark mark next to the motif
    accent_offset: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class DemoPhenotype:
    """One chosen HPO term with its organ system, its nearest chosen ancestor and its motif."""

    index: int
    hpo_id: str
    name: str
    system: int  # position in the chosen organ systems
    visual_parent: int  # position in the chosen phenotypes, -1 when none
    motif: Motif


def default_demo_dir() -> Path:
    """Default dataset folder: $PHENOLIP_CACHE_DIR/demo, else ~/.cache/phenolip_jax/demo."""
    root = os.environ.get("PHENOLIP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "phenolip_jax") / "demo"


# ----------------------------------------------------------------------------------------------------------
# Choosing phenotypes
# ----------------------------------------------------------------------------------------------------------
def demo_organ_systems(onto: Ontology) -> list[int]:
    """Indices of the demo's organ systems that this ontology has (all eight for current HPO releases)."""
    present = {onto.ids[int(i)] for i in onto.organ_system_ids}
    return [onto.index(s) for s in DEMO_ORGAN_SYSTEMS if s in present]


def _quality(onto: Ontology, i: int) -> int:
    return int(bool(onto.definitions[i])) + int(bool(onto.exact_synonyms[i] or onto.other_synonyms[i]))


def choose_phenotypes(onto: Ontology, num_phenotypes: int, seed: int) -> tuple[list[int], list[int]]:
    """Pick (term indices, organ-system indices per term): small families (a term and a few children) per system."""
    systems = demo_organ_systems(onto)
    system_set = set(systems)
    rng = np.random.default_rng([seed, 0x5E1EC7])
    chosen: list[int] = []
    chosen_system: list[int] = []
    quotas = [num_phenotypes // len(systems) + (k < num_phenotypes % len(systems)) for k in range(len(systems))]
    for k, (sys_idx, quota) in enumerate(zip(systems, quotas)):
        # Only terms under exactly one demo system, so the background (organ system) of an image is unambiguous.
        eligible = {
            int(i) for i in onto.subtree(sys_idx)
            if MIN_DEPTH <= onto.depth[i] <= MAX_DEPTH and onto.names[i]
            and set(int(s) for s in onto.organ_systems(int(i))) & system_set == {sys_idx}
        }
        good = {i for i in eligible if _quality(onto, i) == 2}
        pool = good if len(good) >= 2 * quota else eligible
        heads = sorted(i for i in pool if onto.depth[i] < MAX_DEPTH
                       and sum(int(c) in pool for c in onto.children(i)) >= 2)
        keys = rng.random(len(heads)) - np.array([_quality(onto, h) for h in heads])
        picked: list[int] = []
        for h in (heads[j] for j in np.argsort(keys, kind="stable")):
            if len(picked) >= quota:
                break
            kids = sorted(int(c) for c in onto.children(h) if int(c) in pool and int(c) not in picked)
            family = ([h] if h not in picked else []) + [
                kids[j] for j in rng.permutation(len(kids))[: int(rng.integers(2, 4))]]
            picked.extend(family[: quota - len(picked)])
        if len(picked) < quota:  # tiny systems: top up with any eligible term
            rest = sorted(pool - set(picked)) or sorted(eligible - set(picked))
            picked.extend(rest[j] for j in rng.permutation(len(rest))[: quota - len(picked)])
        if len(picked) < quota:
            raise ValueError(f"organ system {onto.ids[sys_idx]} has too few eligible terms for {quota}")
        chosen.extend(picked)
        chosen_system.extend([k] * len(picked))
    return chosen, chosen_system


def _random_motif(rng: np.random.Generator) -> Motif:
    hue = rng.random()
    return Motif(
        shape=int(rng.integers(8)), count=int(rng.integers(1, 4)),
        colour=tuple(float(c) for c in colorsys.hsv_to_rgb(hue, 0.55 + 0.4 * rng.random(), 0.6 + 0.4 * rng.random())),
        size=float(rng.uniform(0.07, 0.12)), anchor=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))),
        spread_angle=float(rng.uniform(0, np.pi)),
        texture_freq=float(rng.choice([0.0, rng.uniform(10, 22)])), texture_angle=float(rng.uniform(0, np.pi)),
        accent=-1, accent_offset=(0.0, 0.0))


def _child_motif(parent: Motif, rng: np.random.Generator) -> Motif:
    """Parent's motif, in place, with one change and a new accent mark (which also tells siblings apart)."""
    changes: dict[str, Any] = {
        "accent": int(rng.integers(8)),
        "accent_offset": tuple(float(v) for v in rng.uniform(0.1, 0.2, 2) * rng.choice([-1, 1], 2)),
    }
    what = rng.choice(["count", "texture", "colour", "size"])
    if what == "count":  # copies are laid out so that the parent's copies stay where they were
        changes["count"] = parent.count % 3 + 1
    elif what == "texture":
        changes["texture_freq"] = float(rng.uniform(10, 22))
        changes["texture_angle"] = float(parent.texture_angle + rng.uniform(np.pi / 4, 3 * np.pi / 4))
    elif what == "colour":
        h, s, v = colorsys.rgb_to_hsv(*parent.colour)
        changes["colour"] = tuple(float(c) for c in colorsys.hsv_to_rgb((h + rng.uniform(0.1, 0.2)) % 1, s, v))
    else:
        changes["size"] = float(np.clip(parent.size * rng.choice([0.7, 1.35]), 0.05, 0.16))
    return dataclasses.replace(parent, **changes)


def build_phenotypes(onto: Ontology, num_phenotypes: int, seed: int) -> list[DemoPhenotype]:
    """Choose phenotypes and give each a motif derived from its nearest chosen ancestor's."""
    terms, systems = choose_phenotypes(onto, num_phenotypes, seed)
    position = {t: k for k, t in enumerate(terms)}
    parents = []
    for t in terms:
        ancestors = [int(a) for a in onto.ancestors(t) if int(a) in position]
        parents.append(position[max(ancestors, key=lambda a: (onto.depth[a], -a))] if ancestors else -1)
    motifs: dict[int, Motif] = {}
    # Ancestors first: an ancestor's ancestor set is a strict subset (depth alone misorders multi-parent terms).
    for k in sorted(range(len(terms)), key=lambda k: len(onto.ancestors(terms[k]))):
        rng = np.random.default_rng([seed, 0x3071F, k])
        motifs[k] = _random_motif(rng) if parents[k] < 0 else _child_motif(motifs[parents[k]], rng)
    return [DemoPhenotype(k, onto.ids[t], onto.names[t], systems[k], parents[k], motifs[k])
            for k, t in enumerate(terms)]


def choose_unseen(phenos: Sequence[DemoPhenotype], fraction: float, seed: int) -> set[int]:
    """Positions of held-out phenotypes: each has a visual parent (a seen phenotype) and is no phenotype's visual parent.

    Only children can be held out, so every unseen phenotype has a parent (and usually siblings) that training
    sees, and its look is that parent's motif plus one change: what an ontology-aware model can exploit.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"unseen_fraction={fraction!r} must lie in [0, 1)")
    want = int(round(fraction * len(phenos)))
    rng = np.random.default_rng([seed, 0x0A5EE])
    # A visual parent is never held out: its motif is what its seen children are drawn from, so training on them
    # would show the held-out look (generator v2 checked only the parents of held-out terms, and leaked).
    visual_parents = {p.visual_parent for p in phenos if p.visual_parent >= 0}
    unseen: set[int] = set()
    for k in rng.permutation(len(phenos)):
        if len(unseen) >= want:
            break
        if phenos[k].visual_parent < 0 or int(k) in visual_parents:
            continue  # a root has no seen relative; a parent's look would leak through its children
        unseen.add(int(k))
    return unseen


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def _shape_sdf(shape: int, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (negative inside) to one of eight shapes centred at the origin."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == 0:  # disc
        return np.hypot(x, y) - r
    if shape == 1:  # square
        return np.maximum(ax, ay) - 0.85 * r
    if shape == 2:  # diamond
        return (ax + ay - 1.2 * r) * 0.7071
    if shape == 3:  # ring
        return np.abs(np.hypot(x, y) - 0.75 * r) - 0.25 * r
    if shape == 4:  # cross
        return np.minimum(np.maximum(ax - r, ay - r / 3), np.maximum(ax - r / 3, ay - r))
    if shape == 5:  # bar
        return np.maximum(ax - 1.3 * r, ay - 0.4 * r)
    if shape == 6:  # triangle
        return np.maximum(ax * 0.866 + y * 0.5, -y) - 0.5 * r
    return (np.hypot(x, 2.0 * y) - r) * 0.5  # flat ellipse


def _system_style(system: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Two background colours and a structure type: what makes the organ system visible."""
    hue = (system * 0.61803) % 1.0
    light = np.array(colorsys.hsv_to_rgb(hue, 0.25, 0.92))
    dark = np.array(colorsys.hsv_to_rgb((hue + 0.08) % 1, 0.5, 0.45))
    return light, dark, system % 4 + 4 * (system // 4 % 2)


def _background(system: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    light, dark, kind = _system_style(system)
    phase = rng.uniform(-0.08, 0.08)
    base = kind % 4
    if base == 0:
        t = yy + phase
    elif base == 1:
        t = xx + phase
    elif base == 2:
        t = np.hypot(xx - 0.5 - phase, yy - 0.5) * 1.4
    else:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * (xx + yy) + 10 * phase)
    if kind >= 4:  # the second four systems add a dark frame, so eight layouts stay distinct
        edge = np.minimum(np.minimum(xx, 1 - xx), np.minimum(yy, 1 - yy))
        t = np.maximum(t, (edge < 0.08 + phase / 4).astype(np.float32))
    t = np.clip(t, 0, 1)[..., None]
    img = light * (1 - t) + dark * t
    return img * rng.uniform(0.9, 1.1) + rng.normal(0, 0.03, 3)


def _draw(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    img *= 1 - alpha[..., None]
    img += alpha[..., None] * colour


def _draw_motif(img: np.ndarray, motif: Motif, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> None:
    pixel = 1.0 / img.shape[0]
    scale = rng.uniform(0.85, 1.15)
    r = motif.size * scale
    cx, cy = np.asarray(motif.anchor) + rng.normal(0, 0.025, 2)
    colour = np.clip(np.asarray(motif.colour) + rng.normal(0, 0.04, 3), 0, 1)
    direction = np.array([np.cos(motif.spread_angle), np.sin(motif.spread_angle)]) * 2.4 * r
    offsets = {1: [0.0], 2: [0.0, 1.0], 3: [-1.0, 0.0, 1.0]}[motif.count]
    tex_angle = motif.texture_angle + rng.normal(0, 0.1)
    for o in offsets:
        x, y = xx - (cx + o * direction[0]), yy - (cy + o * direction[1])
        alpha = np.clip(0.5 - _shape_sdf(motif.shape, x, y, r) / pixel, 0, 1)
        if motif.texture_freq > 0:
            stripes = np.sin(2 * np.pi * motif.texture_freq * (x * np.cos(tex_angle) + y * np.sin(tex_angle)))
            alpha = alpha * (0.55 + 0.45 * (stripes > 0))
        _draw(img, alpha, colour)
    if motif.accent >= 0:
        x = xx - (cx + motif.accent_offset[0])
        y = yy - (cy + motif.accent_offset[1])
        alpha = np.clip(0.5 - _shape_sdf(motif.accent, x, y, 0.05 * scale) / pixel, 0, 1)
        _draw(img, alpha, np.array([0.08, 0.06, 0.1]))


def render_image(phenos: Sequence[DemoPhenotype], size: int, rng: np.random.Generator) -> Image.Image:
    """Render one image: the first phenotype's organ-system background, then every phenotype's motif."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(coords, coords)
    img = _background(phenos[0].system, xx, yy, rng)
    for p in phenos:
        _draw_motif(img, p.motif, xx, yy, rng)
    img += rng.normal(0, 0.025, img.shape)
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.5:  # mild blur on half the images: the model must not rely on crisp edges
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9)) * size / 64))
    return out


# ----------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------
def _mid_sentence(text: str) -> str:
    # Lower-case the first letter unless the first word is an acronym ("GDD", "MRI").
    return text[:1].lower() + text[1:] if len(text) > 1 and not text[1].isupper() else text


def _first_sentence(text: str) -> str:
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _surface_form(onto: Ontology, term: int, rng: np.random.Generator) -> str:
    """The name, or (40% of the time) one of its exact synonyms: captions are not always canonical."""
    synonyms = onto.exact_synonyms[term]
    if synonyms and rng.random() < 0.4:
        return synonyms[int(rng.integers(len(synonyms)))]
    return onto.names[term]


def make_caption(onto: Ontology, terms: Sequence[int], split: str, rng: np.random.Generator) -> str:
    """Compose a caption for one or two phenotypes; the test split uses held-out templates."""
    held_out = split == "test"
    if len(terms) == 1:
        templates = TEST_TEMPLATES if held_out else TRAIN_TEMPLATES
        definition = _first_sentence(onto.definitions[terms[0]])
        if not definition:
            templates = tuple(t for t in templates if "{d}" not in t)
        template = templates[int(rng.integers(len(templates)))]
        name = _surface_form(onto, terms[0], rng)
        return template.format(a=_mid_sentence(name), A=name[:1].upper() + name[1:], d=definition)
    templates = TEST_PAIR_TEMPLATES if held_out else TRAIN_PAIR_TEMPLATES
    template = templates[int(rng.integers(len(templates)))]
    return template.format(a=_mid_sentence(_surface_form(onto, terms[0], rng)),
                           b=_mid_sentence(_surface_form(onto, terms[1], rng)))


# ----------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------
def _params(seed: int, num_phenotypes: int, train_pairs: int, val_pairs: int, test_pairs: int,
            image_size: int, unseen_fraction: float, ontology: Ontology | None) -> dict[str, Any]:
    # Identify the ontology by its source file without parsing it, so a cache hit returns at once.
    onto_tag = (file_sha256(default_obo_path()) if ontology is None else ontology.source_sha256)[:16]
    return dict(generator_version=GENERATOR_VERSION, seed=seed, num_phenotypes=num_phenotypes,
                train_pairs=train_pairs, val_pairs=val_pairs, test_pairs=test_pairs, image_size=image_size,
                unseen_fraction=unseen_fraction, ontology=onto_tag)


def _params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _existing_hash(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / "params.json").read_text())["hash"]
    except (OSError, ValueError, KeyError):
        return None


def _split_records(onto: Ontology, phenos: list[DemoPhenotype], split: str, num_pairs: int, seed: int,
                   image_size: int, folder: Path, log: Callable[[str], None],
                   unseen: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Render one split; primary phenotypes cycle through seeded permutations so every one appears.

    Unseen phenotypes appear in the test split only, and alone (never as a second finding), so that an
    image either shows only seen phenotypes or exactly one unseen one.
    """
    code = _SPLIT_CODES[split]
    order_rng = np.random.default_rng([seed, code, 0x0D])
    pool = np.array([p.index for p in phenos if split == "test" or p.index not in unseen])
    reps = max(1, -(-num_pairs // len(pool)))
    primaries = pool[np.concatenate([order_rng.permutation(len(pool)) for _ in range(reps)])[:num_pairs]]
    by_system: dict[int, list[int]] = {}
    for p in phenos:
        if p.index not in unseen:
            by_system.setdefault(p.system, []).append(p.index)
    (folder / "images" / split).mkdir(parents=True)
    records = []
    for k, first in enumerate(primaries):
        rng = np.random.default_rng([seed, code, k])  # per image: independent of render order
        chosen = [phenos[first]]
        if rng.random() < PAIR_FRACTION and first not in unseen:  # a second finding of the same organ system, not of the same lineage
            lineage = {first, phenos[first].visual_parent}
            others = [j for j in by_system[phenos[first].system]
                      if j not in lineage and phenos[j].visual_parent != first]
            if others:
                chosen.append(phenos[others[int(rng.integers(len(others)))]])
        path = f"images/{split}/{k:06d}.png"
        render_image(chosen, image_size, rng).save(folder / path, optimize=False)
        records.append({"image": path, "caption": make_caption(onto, [onto.index(p.hpo_id) for p in chosen], split, rng),
                        "hpo_ids": [p.hpo_id for p in chosen], "split": split, "source": SOURCE,
                        "image_id": f"demo-{split}-{k:06d}"})
        if (k + 1) % 1000 == 0 or k + 1 == num_pairs:
            log(f"demo: {split} {k + 1}/{num_pairs} images")
    return records


_README = """PhenoLIP demo dataset (SYNTHETIC)
=================================
Everything here was generated by phenolip_jax.data.demo. The images are procedurally drawn shapes, not
medical images; the captions are built from real Human Phenotype Ontology (HPO) names, synonyms and
definitions. Use it to run and test the PhenoLIP pipeline offline (stage 1, stage 2, evaluation), and to see
that training learns something. Do not use it to judge medical performance.

How the images encode the labels: the background colour and layout encode the organ system (a child of
HP:0000118); each phenotype adds a motif (shape, count, colour, position, texture); a child phenotype reuses
its parent's motif with changes. Pairs with two phenotypes show both motifs.

Files
- manifest.jsonl: one record per pair: image (path relative to this folder), caption, hpo_ids, split
  (train / val / test), source, image_id.
- testdata.csv: the test split in PhenoBench's layout: image_path, caption, full_matches, where
  full_matches is a ';'-separated list of HPO ids (e.g. "HP:0000501;HP:0000505").
- phenotypes.json: the chosen HPO terms, their organ systems and their nearest chosen ancestor.
- params.json: the generation parameters and their hash (regeneration is skipped when they match).
- The test split uses caption templates that train and val never use.
- Unseen phenotypes ("unseen": true in phenotypes.json) appear only in the test split, each alone in its
  images; each is the child of a seen phenotype and looks like it with one change.
"""


def generate_demo_dataset(out_dir: str | os.PathLike | None = None, *, seed: int = 0, num_phenotypes: int = 150,
                          train_pairs: int = 3000, val_pairs: int = 300, test_pairs: int = 600,
                          image_size: int = 64, unseen_fraction: float = UNSEEN_FRACTION,
                          ontology: Ontology | None = None, overwrite: bool = False, verbose: bool = True) -> Path:
    """Generate the synthetic demo dataset into out_dir and return its path.

    Without out_dir, each parameter set gets its own folder under `default_demo_dir()`, so runs with other
    seeds or sizes, or a newer generator, never collide with (or are refused by) a cached dataset.

    `unseen_fraction` of the phenotypes (children of other chosen phenotypes only) are held out of train and val.
    """
    if min(train_pairs, test_pairs) < num_phenotypes:
        raise ValueError(f"train_pairs and test_pairs must be >= num_phenotypes ({num_phenotypes}) "
                         "so that every phenotype appears in both")
    if num_phenotypes < len(DEMO_ORGAN_SYSTEMS) or image_size < 16 or val_pairs < 0:
        raise ValueError("need num_phenotypes >= 8, image_size >= 16 and val_pairs >= 0")
    if not 0.0 <= unseen_fraction < 1.0:
        raise ValueError(f"unseen_fraction={unseen_fraction!r} must lie in [0, 1) (0 = no held-out phenotypes)")
    params = _params(seed, num_phenotypes, train_pairs, val_pairs, test_pairs, image_size, unseen_fraction, ontology)
    digest = _params_hash(params)
    out = Path(out_dir) if out_dir is not None else default_demo_dir() / f"v{GENERATOR_VERSION}-{digest[:12]}"
    if _existing_hash(out) == digest and (out / "manifest.jsonl").exists():
        return out
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} holds something other than this demo dataset; pass overwrite=True")

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    if ontology is None:
        ontology = load_ontology()
    start = time.perf_counter()
    phenos = build_phenotypes(ontology, num_phenotypes, seed)
    unseen = choose_unseen(phenos, unseen_fraction, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        records = []
        for split, n in (("train", train_pairs), ("val", val_pairs), ("test", test_pairs)):
            records += _split_records(ontology, phenos, split, n, seed, image_size, tmp, log, unseen)
        with open(tmp / "manifest.jsonl", "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
        with open(tmp / "testdata.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_path", "caption", "full_matches"])
            writer.writerows([r["image"], r["caption"], ";".join(r["hpo_ids"])] for r in records if r["split"] == "test")
        organ_ids = [ontology.ids[i] for i in demo_organ_systems(ontology)]
        (tmp / "phenotypes.json").write_text(json.dumps([{
            "hpo_id": p.hpo_id, "name": p.name, "organ_system": organ_ids[p.system],
            "organ_system_name": ontology.names[ontology.index(organ_ids[p.system])],
            "visual_parent": phenos[p.visual_parent].hpo_id if p.visual_parent >= 0 else None,
            "unseen": p.index in unseen,
        } for p in phenos], indent=1))
        (tmp / "README.txt").write_text(_README)
        (tmp / "params.json").write_text(json.dumps({"params": params, "hash": digest}, indent=1, sort_keys=True))
        # Swap in atomically: readers see the old dataset or the new one, never a half-written folder.
        trash = None
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
        os.replace(tmp, out)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"demo: wrote {len(records)} pairs, {len(phenos)} phenotypes ({len(unseen)} unseen: test only) to {out} "
        f"in {time.perf_counter() - start:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------------------
# Learnability check
# ----------------------------------------------------------------------------------------------------------
def _pixels(folder: Path, records: list[dict[str, Any]], size: int) -> np.ndarray:
    feats = [np.asarray(Image.open(folder / r["image"]).convert("RGB").resize((size, size), Image.BILINEAR),
                        np.float32).reshape(-1) / 255 for r in records]
    x = np.stack(feats)
    return x - x.mean(axis=1, keepdims=True)


def pixel_baseline(dataset_dir: str | os.PathLike, *, size: int = 16) -> dict[str, float]:
    """Nearest-centroid accuracy on downsampled raw pixels (train -> test): a floor on what a model can learn."""
    folder = Path(dataset_dir)
    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    phenos = json.loads((folder / "phenotypes.json").read_text())
    pheno_pos = {p["hpo_id"]: k for k, p in enumerate(phenos)}
    systems = sorted({p["organ_system"] for p in phenos})
    system_of = np.array([systems.index(p["organ_system"]) for p in phenos])
    out: dict[str, float] = {}
    split = {s: [r for r in records if r["split"] == s] for s in ("train", "test")}
    seen = {r["hpo_ids"][0] for r in split["train"]}  # unseen phenotypes have no centroid: seen test images only
    split["test"] = [r for r in split["test"] if r["hpo_ids"][0] in seen]
    x = {s: _pixels(folder, rs, size) for s, rs in split.items()}
    y = {s: np.array([pheno_pos[r["hpo_ids"][0]] for r in rs]) for s, rs in split.items()}
    for task, labels, n in (("phenotype", lambda v: v, len(phenos)), ("organ_system", lambda v: system_of[v], len(systems))):
        ytr, yte = labels(y["train"]), labels(y["test"])
        present = np.bincount(ytr, minlength=n) > 0
        centroids = np.stack([x["train"][ytr == c].mean(axis=0) if present[c] else x["train"][0] * 0
                              for c in range(n)])
        dist = (x["test"] ** 2).sum(1)[:, None] - 2 * x["test"] @ centroids.T + (centroids ** 2).sum(1)[None]
        dist[:, ~present] = np.inf  # a class without training images cannot be predicted
        out[f"{task}_accuracy"] = float((dist.argmin(axis=1) == yte).mean())
        out[f"{task}_chance"] = float(np.bincount(yte, minlength=n).max() / len(yte))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: generate the demo dataset (if needed), then print its pixel-baseline learnability figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help=f"dataset folder (default: one folder per parameter set under {default_demo_dir()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_phenotypes", type=int, default=150)
    parser.add_argument("--train_pairs", type=int, default=3000)
    parser.add_argument("--val_pairs", type=int, default=300)
    parser.add_argument("--test_pairs", type=int, default=600)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--unseen_fraction", type=float, default=UNSEEN_FRACTION, help="held-out phenotypes")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever out holds")
    parser.add_argument("--skip_check", action="store_true", help="do not run the pixel baseline")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = generate_demo_dataset(args.out, seed=args.seed, num_phenotypes=args.num_phenotypes,
                                 train_pairs=args.train_pairs, val_pairs=args.val_pairs, test_pairs=args.test_pairs,
                                 image_size=args.image_size, unseen_fraction=args.unseen_fraction,
                                 overwrite=args.overwrite)
    print(f"demo dataset ready at {path} ({time.perf_counter() - start:.1f} s)")
    if not args.skip_check:
        figures = pixel_baseline(path)
        for task in ("organ_system", "phenotype"):
            print(f"nearest-centroid on 16x16 pixels, test {task} accuracy: {figures[task + '_accuracy']:.3f} "
                  f"(chance {figures[task + '_chance']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
