"""The serve stage's engine: one loaded run answering one case (a few uploaded images) at a time.

Loading, candidates, the phenotype-embedding cache, calibration and scoring are the predict stage's own functions
(evaluate/predict.py), so a case's per-image terms and probabilities equal what `configs/predict.py` writes for the
same images, candidates and organ system; a case's profile (image terms aggregated, the note's present and excluded
terms, the hierarchy made consistent) is predict's too (evaluate/cases.py). What is added here: reading uploads
(bytes, not files; every refusal a message naming the file) and each term's place in the hierarchy.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from phenolip_jax.data import dicom
from phenolip_jax.data import images as img_lib
from phenolip_jax.evaluate import cases, phenopacket, predict

MB = 1_000_000  # upload limits are in decimal megabytes, as browsers and `ls -h --si` show file sizes


class CaseError(ValueError):
    """A case that cannot be answered (no readable image, too many images, an unknown organ system)."""

    def __init__(self, message: str, status: int = 400, files: Sequence[dict[str, str]] = ()):
        super().__init__(message)
        self.status = status  # the HTTP status the API answers with
        self.files = list(files)  # per-file refusals: {'name', 'error'}


@dataclasses.dataclass
class Upload:
    """One uploaded file of a case: its name as the browser sent it, its bytes and its size (bytes may be left
    unread, b'', for a file already known to be over the limit)."""

    name: str
    data: bytes
    size: int = -1  # -1 = len(data)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data)


def hierarchy_path(onto: Any, term: int) -> list[str]:
    """Names from the term's organ system down to the term, along a shortest is-a path (parents of least depth)."""
    organs = {int(o) for o in onto.organ_system_ids}
    path, cur = [int(term)], int(term)
    while cur not in organs:
        parents = onto.parents(cur)
        if not len(parents):
            break  # a term outside HP:0000118's organ systems: its path ends at its top
        cur = int(min(parents, key=lambda p: (int(onto.depth[int(p)]), int(p))))
        if cur not in organs and onto.ids[cur] == predict.PHENOTYPIC_ABNORMALITY:
            break
        path.append(cur)
    return [onto.names[i] for i in reversed(path)]


def read_upload(upload: Upload, max_bytes: int) -> np.ndarray:
    """uint8 [H, W, 3] of an uploaded image; ValueError saying why not (too large, not an image, bad DICOM)."""
    if upload.size > max_bytes:
        raise ValueError(f"{upload.size / MB:.1f} MB is over the limit of {max_bytes / MB:g} MB per image "
                         "(config.max_upload_mb)")
    if not upload.size:
        raise ValueError("empty file (0 bytes)")
    try:
        return img_lib.decode_rgb(upload.data)[0]
    except ValueError as e:  # ImageDecodeError, also for a DICOM file that cannot be shown
        if dicom.is_dicom(upload.data):
            raise ValueError(f"not a readable DICOM image: {e}") from None
        # Pillow names no format for bytes it does not know, only its buffer object: say so in words.
        reason = "no image format recognised" if "cannot identify image file" in str(e) else str(e)
        kinds = ", ".join(x.lstrip(".") for x in img_lib.IMAGE_EXTENSIONS)
        raise ValueError(f"not a readable image ({reason}); images are {kinds}") from None


class Engine:
    """A run loaded once (model, candidates, their cached embeddings, temperature), answering cases."""

    def __init__(self, cfg: Any, workdir: str):
        if cfg.aggregate not in cases.AGGREGATES:  # before the model loads: a case would fail on it
            raise ValueError(f"config.aggregate={cfg.aggregate!r}: use one of {', '.join(cases.AGGREGATES)}")
        cases.check_note_fields(cfg)
        dicom.configure_from(cfg, "config")
        self.workdir = workdir
        self.cfg = cfg
        self.model = predict.load_model(cfg)
        self.model_id = phenopacket.model_identity(self.model)  # names the model in each case's phenopacket
        self.onto = self.model.ontology
        self.ids = predict.candidate_ids(cfg, self.model)
        self.phen, self.cache = predict.cached_phenotype_embeddings(self.model, self.ids, workdir)
        self.temperature, self.calibrated_by = predict.temperature_for(cfg, self.model, len(self.ids))
        self.max_bytes = int(float(cfg.max_upload_mb) * MB)
        self._position = {h: i for i, h in enumerate(self.ids)}
        self._by_organ: dict[str, tuple[list[str], np.ndarray]] = {"": (self.ids, self.phen)}
        self._cases: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()  # one case at a time: JAX calls and the case store are not shared safely

    @functools.cached_property
    def organ_systems(self) -> list[dict[str, Any]]:
        """The organ systems that hold candidates: id, name and how many candidates each holds, by name."""
        counts = collections.Counter(int(o) for h in self.ids for o in self.onto.organ_systems(h))
        return [dict(id=self.onto.ids[o], name=self.onto.names[o], candidates=n)
                for o, n in sorted(counts.items(), key=lambda kv: self.onto.names[kv[0]])]

    def info(self) -> dict[str, Any]:
        """What the page shows before a case: the run, the candidates, the organ systems, the limits."""
        return dict(checkpoint=self.model.path, candidates=len(self.ids), top_k=int(self.cfg.top_k),
                    organ_systems=self.organ_systems, calibrated=self.calibrated_by is not None,
                    temperature=round(self.temperature, 6), max_upload_mb=float(self.cfg.max_upload_mb),
                    max_images=int(self.cfg.max_images), ontology_release=self.onto.release)

    def _candidates(self, organ_system: str) -> tuple[list[str], np.ndarray]:
        """(ids, embeddings) of the candidates under one organ system ('' = all), as predict restricts them."""
        if organ_system not in self._by_organ:
            try:
                ids = predict.select_candidates(self.onto, organ_system=organ_system, default=self.ids)
            except ValueError as e:  # not an organ system, or none of the candidates lies under it
                reason = str(e).split(": use one of")[0].replace("config.organ_system", "organ_system")
                raise CaseError(f"{reason} (organ_system={organ_system!r}): choose one of the organ systems "
                                "GET /api/info lists", status=422) from None
            self._by_organ[organ_system] = (ids, self.phen[[self._position[h] for h in ids]])
        return self._by_organ[organ_system]

    def predict_case(self, uploads: Sequence[Upload], note: str = "", organ_system: str = "") -> dict[str, Any]:
        """Top-k terms per readable image of a case; the unreadable ones are listed with the reason."""
        if not uploads:
            raise CaseError("no image uploaded: choose one or more image files (a case)")
        if len(uploads) > int(self.cfg.max_images):
            raise CaseError(f"{len(uploads)} files: a case holds at most {self.cfg.max_images} images "
                            "(config.max_images)", status=413)
        t0 = time.time()
        ids, phen = self._candidates(organ_system.strip())
        images, skipped = [], []
        for up in uploads:
            try:
                images.append((up.name, read_upload(up, self.max_bytes)))
            except ValueError as e:
                skipped.append(dict(name=up.name, error=str(e)))
        if not images:
            too_large = all("over the limit" in s["error"] for s in skipped)
            raise CaseError("no readable image in this case: " + "; ".join(f"{s['name']}: {s['error']}"
                                                                          for s in skipped),
                            status=413 if too_large else 400, files=skipped)
        with self._lock:
            emb = self.model.encode_images([rgb for _, rgb in images])
            rows = predict.top_k_rows(self.onto, emb, phen, ids, int(self.cfg.top_k), self.model.logit_scale,
                                      self.temperature)
            for preds in rows:
                for p in preds:
                    p["path"] = hierarchy_path(self.onto, self.onto.index(p["hpo_id"]))
            case_id = uuid.uuid4().hex[:12]
            cos, probs = cases.image_probabilities(emb, phen, self.model.logit_scale, self.temperature)
            linker = cases.note_linker(self.onto, self.model.obo_path, self.cfg.note_link, self.cfg.note_encoder,
                                       self.workdir) if note.strip() else None
            profile = cases.profile_case(self.onto, case_id, ids, probs, cos, images=[n for n, _ in images], note=note,
                                         linker=linker, aggregate=self.cfg.aggregate, top_k=int(self.cfg.top_k),
                                         min_probability=float(self.cfg.case_min_probability))
            case = dict(case_id=case_id, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        note=note, organ_system=organ_system.strip(), candidates=len(ids), profile=profile,
                        model=self.model_id,
                        images=[dict(name=name, predictions=preds) for (name, _), preds in zip(images, rows)],
                        skipped=skipped, checkpoint=self.model.path, calibrated=self.calibrated_by is not None,
                        temperature=round(self.temperature, 6), ontology_release=self.onto.release,
                        seconds=round(time.time() - t0, 3))
            self._cases[case["case_id"]] = case
            while len(self._cases) > int(self.cfg.keep_cases):
                self._cases.popitem(last=False)
        return case

    def case(self, case_id: str) -> dict[str, Any]:
        """A recent case by id; CaseError (404) once it has been dropped or never existed."""
        with self._lock:
            found = self._cases.get(case_id)
        if found is None:
            raise CaseError(f"no case {case_id!r}: cases are kept in memory, the last {self.cfg.keep_cases} only "
                            "(config.keep_cases), and not across restarts", status=404)
        return found
