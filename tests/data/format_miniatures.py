"""Miniatures of the field's dataset layouts (webdataset, Parquet, open_clip CSV, ROCO, MedPix 2.0, JSONL), written
by the tests: 12 good pairs each (8 train, the rest held out) plus one of each kind of bad sample the format can hold.

Each builder returns a `Mini`: the --input to give, the options, and the report counts and splits to expect.
"""
import dataclasses
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from phenolip_jax.data.formats import ReadOptions
from phenolip_jax.data.manifest import write_jsonl
from phenolip_jax.data.records import KEEP_REASONS, Record

HPO = ("HP:0001250", "HP:0000478", "HP:0004322", "HP:0001263")
N_GOOD, N_TRAIN = 12, 8
GARBAGE = b"\xff\xd8\xff not an image at all"


@dataclasses.dataclass
class Mini:
    input: str
    counts: dict  # the report's counts per reason (drops and keep notes)
    splits: dict  # kept records per split
    options: ReadOptions = ReadOptions()

    @property
    def total(self) -> int:
        """Samples read: the good ones plus one per drop."""
        return N_GOOD + sum(v for k, v in self.counts.items() if k not in KEEP_REASONS)


def image_bytes(i: int, fmt: str = "PNG", size: int = 16) -> bytes:
    """A distinct small RGB image, encoded."""
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def good(i: int) -> dict:
    """Pair i: its caption, HPO ids (even pairs only) and split (the first N_TRAIN train, then test)."""
    return {"caption": f"finding number {i} with a seizure", "hpo_ids": [HPO[i % 4]] if i % 2 == 0 else [],
            "split": "train" if i < N_TRAIN else "test"}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def webdataset(root: Path) -> Mini:
    """Two shards: even pairs as key.png + key.json (caption, hpo_ids, split), odd ones as key.jpg + key.txt +
    key.json (split); bad: a .jpg without caption, a .txt without image, unreadable image bytes, broken json."""
    (root / "wds").mkdir(parents=True)
    for shard, ids in enumerate((range(0, 6), range(6, N_GOOD))):
        with tarfile.open(root / "wds" / f"shard-{shard:03d}.tar", "w") as tar:
            for i in ids:
                g = good(i)
                if i % 2 == 0:
                    _add(tar, f"s{i:04d}.png", image_bytes(i))
                    _add(tar, f"s{i:04d}.json", json.dumps(g).encode())
                else:
                    _add(tar, f"s{i:04d}.jpg", image_bytes(i, "JPEG"))
                    _add(tar, f"s{i:04d}.txt", g["caption"].encode())
                    _add(tar, f"s{i:04d}.json", json.dumps({"split": g["split"]}).encode())
            if shard == 0:
                _add(tar, "nocaption.jpg", image_bytes(100, "JPEG"))
                _add(tar, "noimage.txt", b"a caption without its image")
            else:
                _add(tar, "corrupt.jpg", GARBAGE)
                _add(tar, "corrupt.txt", b"caption of an unreadable image")
                _add(tar, "badjson.png", image_bytes(101))
                _add(tar, "badjson.json", b"{not json")
    return Mini(str(root / "wds" / "shard-{000..001}.tar"),
                {"empty_caption": 1, "missing_image": 1, "corrupt_image": 1, "malformed_line": 1, "no_hpo": 6,
                 "no_split": 2},  # the two bad samples without json name no split (counted before they drop)
                {"train": 8, "test": 4})


def parquet(root: Path) -> Mini:
    """part-0: a binary image column (3-row row groups); part-1: Hugging Face's struct {bytes, path}, one image by
    path; bad: a null caption, unreadable bytes, a null image, an empty struct, a path to no file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "pq" / "imgs").mkdir(parents=True)
    rows0 = [dict(good(i), image=image_bytes(i)) for i in range(6)]
    rows0 += [dict(good(100), image=image_bytes(100), caption=None), dict(good(101), image=GARBAGE),
              dict(good(102), image=None)]
    pq.write_table(pa.Table.from_pylist(rows0), root / "pq" / "part-0.parquet", row_group_size=3)
    (root / "pq" / "imgs" / "6.png").write_bytes(image_bytes(6))
    rows1 = [dict(good(i), image={"bytes": None if i == 6 else image_bytes(i), "path": "imgs/6.png" if i == 6
                                  else None}) for i in range(6, N_GOOD)]
    rows1 += [dict(good(103), image={"bytes": None, "path": None}),
              dict(good(104), image={"bytes": None, "path": "imgs/gone.png"})]
    pq.write_table(pa.Table.from_pylist(rows1), root / "pq" / "part-1.parquet")
    return Mini(str(root / "pq" / "*.parquet"),
                {"empty_caption": 1, "corrupt_image": 1, "missing_image": 3, "no_hpo": 6}, {"train": 8, "test": 4})


def csv(root: Path) -> Mini:
    """An open_clip TSV (filepath, title, hpo_ids, split) with images beside it; bad: a row of too few cells, a
    blank row, a missing image, an unreadable image, an empty title."""
    (root / "csv" / "images").mkdir(parents=True)
    lines = ["filepath\ttitle\thpo_ids\tsplit"]
    for i in range(N_GOOD):
        g = good(i)
        (root / "csv" / "images" / f"{i}.png").write_bytes(image_bytes(i))
        lines.append(f"images/{i}.png\t{g['caption']}\t{';'.join(g['hpo_ids'])}\t{g['split']}")
    (root / "csv" / "images" / "bad.png").write_bytes(GARBAGE)
    lines += ["images/0.png\ttoo few cells", "", "images/gone.png\tgone\t\ttrain", "images/bad.png\tbad\t\ttrain",
              "images/1.png\t \t\ttrain"]
    (root / "csv" / "pairs.tsv").write_text("\n".join(lines) + "\n")
    return Mini(str(root / "csv" / "pairs.tsv"),
                {"malformed_line": 1, "blank_line": 1, "missing_image": 1, "corrupt_image": 1, "empty_caption": 1,
                 "no_hpo": 6}, {"train": 8, "test": 4})


def roco(root: Path) -> Mini:
    """ROCO's data/{train,validation,test}/radiology/{captions.txt,cuis.txt,images/}; bad: a line without a tab,
    an ID without its image, an unreadable image, an empty caption."""
    where = {i: "train" if i < N_TRAIN else "validation" if i == N_TRAIN else "test" for i in range(N_GOOD)}
    lines: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for split in lines:
        (root / "roco" / "data" / split / "radiology" / "images").mkdir(parents=True)
    for i, split in where.items():
        folder = root / "roco" / "data" / split / "radiology"
        (folder / "images" / f"ROCO_{i:05d}.jpg").write_bytes(image_bytes(i, "JPEG"))
        lines[split].append(f"ROCO_{i:05d}\t {good(i)['caption']} ")
    (root / "roco" / "data" / "test" / "radiology" / "images" / "ROCO_00099.jpg").write_bytes(GARBAGE)
    lines["train"] += ["ROCO_00097 no tab here", "ROCO_00098\tits image is not there"]
    lines["test"] += ["ROCO_00099\tunreadable", "ROCO_00000\t  "]
    for split, text in lines.items():
        folder = root / "roco" / "data" / split / "radiology"
        (folder / "captions.txt").write_text("\n".join(text) + "\n")
        (folder / "cuis.txt").write_text("".join(f"{t.split()[0]}\tC0036572\n" for t in text))  # UMLS: ignored
    return Mini(str(root / "roco" / "data"),
                {"malformed_line": 1, "missing_image": 1, "corrupt_image": 1, "empty_caption": 1, "no_hpo": 12},
                {"train": 8, "val": 1, "test": 3})


def medpix(root: Path) -> Mini:
    """MedPix-2-0/: Descriptions.json, Case_topic.json, splitted_dataset/data_{train,dev,test}.jsonl, images/;
    cases MPX1-4 train, MPX5 dev, MPX6 test, two images each; bad: an item without 'image', a case in no split,
    a missing png, an unreadable png, a null caption."""
    base = root / "medpix" / "MedPix-2-0"
    (base / "images").mkdir(parents=True)
    (base / "splitted_dataset").mkdir()
    items = []
    for i in range(N_GOOD):
        stem = f"MPX{i // 2 + 1}_synpic{i}"
        (base / "images" / f"{stem}.png").write_bytes(image_bytes(i))
        items.append({"Type": "CT" if i % 2 else "MR", "U_id": f"MPX{i // 2 + 1}", "image": stem,
                      "Description": {"Caption": good(i)["caption"], "Modality": "CT", "Plane": "Axial"}})
    (base / "images" / "MPX1_synpic98.png").write_bytes(GARBAGE)
    items += [{"Type": "CT", "U_id": "MPX1", "Description": {"Caption": "no image field"}},
              {"Type": "CT", "U_id": "MPX9", "image": "MPX9_synpic0", "Description": {"Caption": "in no split"}},
              {"Type": "CT", "U_id": "MPX1", "image": "MPX1_synpic97", "Description": {"Caption": "png missing"}},
              {"Type": "CT", "U_id": "MPX1", "image": "MPX1_synpic98", "Description": {"Caption": "unreadable"}},
              {"Type": "MR", "U_id": "MPX2", "image": "MPX1_synpic0", "Description": {"Caption": None}}]
    (base / "Descriptions.json").write_text(json.dumps(items, indent=4))
    cases = [{"U_id": f"MPX{c}", "Case": {"Title": f"case {c}", "History": "..."}, "Topic": {"Title": "t"}}
             for c in range(1, 7)]
    (base / "Case_topic.json").write_text(json.dumps(cases, indent=4))
    for name, ids in (("train", (1, 2, 3, 4)), ("dev", (5,)), ("test", (6,)), ("train_1", (1, 2))):
        (base / "splitted_dataset" / f"data_{name}.jsonl").write_text(
            "".join(json.dumps(cases[c - 1]) + "\n" for c in ids))
    return Mini(str(root / "medpix"),
                {"malformed_line": 1, "unknown_split": 1, "missing_image": 1, "corrupt_image": 1, "empty_caption": 1,
                 "no_hpo": 12}, {"train": 8, "val": 2, "test": 2})


def jsonl(root: Path) -> Mini:
    """Two manifests in two folders, each with its own imgs/0..5.png (same names, different images); bad: a line
    that is not JSON, a missing image."""
    for part, ids in (("a", range(0, 6)), ("b", range(6, N_GOOD))):
        folder = root / "jsonl" / part
        (folder / "imgs").mkdir(parents=True)
        records = []
        for j, i in enumerate(ids):
            (folder / "imgs" / f"{j}.png").write_bytes(image_bytes(i))
            g = good(i)
            records.append(Record(f"imgs/{j}.png", g["caption"], tuple(g["hpo_ids"]), split=g["split"]))
        if part == "b":
            records.append(Record("imgs/gone.png", "gone", (), split="train"))
        write_jsonl(records, folder / "m.jsonl")
    with open(root / "jsonl" / "a" / "m.jsonl", "a") as f:
        f.write("{not json\n")
    return Mini(str(root / "jsonl" / "*" / "m.jsonl"), {"malformed_line": 1, "missing_image": 1, "no_hpo": 6},
                {"train": 8, "test": 4})


BUILDERS = {"webdataset": webdataset, "parquet": parquet, "csv": csv, "roco": roco, "medpix": medpix, "jsonl": jsonl}


def build_all(root: Path) -> dict[str, Mini]:
    """Every miniature under `root/<format>`."""
    os.makedirs(root, exist_ok=True)
    return {fmt: build(Path(root)) for fmt, build in BUILDERS.items()}


# Per good image i (0-7 train, 8-9 val, 10-11 test; odd i are CT): plane and location category. Sagittal and
# Abdomen have no test image, Transverse is not one of the three planes, and image 3 has no location. Odd images'
# captions name hydrocephalus instead of a seizure, so the linked pack holds two phenotypes.
PLANES = ["Axial", "Coronal", "Sagittal", "Axial", "Transverse", "Axial", "Coronal", "Axial", "Axial", "Coronal",
          "Axial", "Coronal"]
LOCATIONS = ["Head", "Head", "Thorax", "", "Abdomen", "Head", "Thorax", "Head", "Head", "Thorax", "Head", "Thorax"]


def label_medpix(mini: Mini) -> None:
    """Gives the MedPix miniature's good images the planes and locations above (and odd ones hydrocephalus)."""
    path = os.path.join(mini.input, "MedPix-2-0", "Descriptions.json")
    items = json.load(open(path))
    for item in items[:N_GOOD]:
        i = int(item["image"].split("synpic")[1])
        item["Description"]["Plane"] = PLANES[i]
        if i % 2:
            item["Description"]["Caption"] = f"finding number {i} with hydrocephalus"
        if LOCATIONS[i]:
            item["Location Category"] = LOCATIONS[i]
    with open(path, "w") as f:
        json.dump(items, f, indent=4)
