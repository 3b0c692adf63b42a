"""Evaluators on hand-made embeddings, checked against brute-force computations; dataset loaders on tiny files."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from phenolip_jax.evaluate import datasets, evaluators
from phenolip_jax.evaluate.datasets import ClassificationSet, PairSet, Split


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class StubEncoder:
    """Looks embeddings up: images by path / index, texts by string, phenotypes by HPO id; counts calls."""

    def __init__(self, images, texts=None, phenotypes=None, has_images=True):
        self.images, self.texts, self.phenotypes = images, texts or {}, phenotypes or {}
        self.has_images = has_images
        self.image_calls = 0

    def encode_images(self, images):
        self.image_calls += 1
        return unit([self.images[x if isinstance(x, str) else int(x)] for x in images])

    def encode_texts(self, texts):
        return unit([self.texts[t] for t in texts])

    def encode_phenotypes(self, hpo_ids, templates=None):
        return unit([self.phenotypes[h] for h in hpo_ids])


def brute_first_rank(scores, positives):
    """0-based rank of the best positive by sorting each row (scores are distinct)."""
    out = []
    for s, p in zip(scores, positives):
        order = sorted(range(len(s)), key=lambda j: -s[j])
        out.append(min(order.index(j) for j in np.flatnonzero(p)))
    return np.array(out)


# ------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_ensembles_templates_and_matches_brute_force():
    # Three classes along the axes. Template "x {}" alone points class B's prompt almost at class A's axis,
    # so A images (0 and 5) are read as B without ensembling; the average with "y {}" fixes it.
    texts = {"x A": [1, 0, 0], "y A": [1, 0.1, 0], "x B": [1, 0.2, 0], "y B": [-1, 1, 0],
             "x C": [0, 0, 1], "y C": [0, 0.2, 1]}
    imgs = np.array([[1, 0.3, 0], [0.3, 1, 0], [0, 1, 0.1], [0.1, 0, 1], [0, 0.6, 0.8], [0.9, 0.2, 0.1]])
    labels = np.array([0, 1, 1, 2, 2, 0])
    data = ClassificationSet("toy", ["a", "b", "c"], ["A", "B", "C"], [None] * 3,
                             {"test": Split(np.arange(6), labels)})
    enc = StubEncoder(imgs, texts)
    out = evaluators.zero_shot_classification(enc, data, ["x {}", "y {}"])

    # Independent: class vector = renormalised mean of the normalised template vectors; argmax per image.
    w = unit([unit(texts[f"x {c}"]) + unit(texts[f"y {c}"]) for c in "ABC"])
    pred = np.argmax(unit(imgs) @ w.T, axis=1)
    assert out["top1"] == pytest.approx(np.mean(pred == labels))
    per_class = [np.mean(pred[labels == c] == c) for c in range(3)]
    assert out["per_class_recall"] == pytest.approx(dict(zip("abc", per_class)))
    assert out["mean_per_class_recall"] == pytest.approx(np.mean(per_class))
    assert "top5" not in out  # fewer than five classes
    assert out["chance_top1"] == pytest.approx(1 / 3)
    logits = 100 * unit(imgs) @ w.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert out["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))

    assert out["top1"] == 1.0
    single = evaluators.zero_shot_classification(enc, data, ["x {}"])
    assert single["top1"] == pytest.approx(4 / 6)  # without the ensemble both A images become B
    assert single["per_class_recall"]["a"] == 0.0


def test_zero_shot_with_one_class_reports_no_auc():
    # A linked pack whose test split holds one phenotype: top-1 is trivially 1 and the AUC is undefined (None).
    texts = {"x A": [1, 0, 0]}
    data = ClassificationSet("one", ["a"], ["A"], [None], {"test": Split(np.arange(2), np.array([0, 0]))})
    out = evaluators.zero_shot_classification(StubEncoder(np.array([[1, 0.2, 0], [0.5, 1, 0]]), texts), data, ["x {}"])
    assert out["top1"] == 1.0 and out["auc"] is None


def test_zero_shot_multilabel_reports_per_label_auc():
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(12, 4))
    labels = np.array([[1, 0, 1]] * 4 + [[0, 1, 0]] * 4 + [[1, 1, 0]] * 4)
    texts = {f"{c}": v for c, v in zip("PQR", rng.normal(size=(3, 4)))}
    data = ClassificationSet("ml", ["0", "1", "2"], list("PQR"), [None] * 3, {"test": Split(np.arange(12), labels)},
                             task=datasets.MULTI_LABEL)
    out = evaluators.zero_shot_classification(StubEncoder(imgs, texts), data, ["{}"])
    scores = unit(imgs) @ unit([texts[c] for c in "PQR"]).T
    assert out["auc"] == pytest.approx(np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in range(3)]))
    assert "top1" not in out


def test_text_only_encoder_is_skipped_with_a_reason():
    data = ClassificationSet("toy", ["a", "b"], ["A", "B"], [None] * 2, {"test": Split(np.arange(2), np.arange(2))})
    with pytest.raises(evaluators.Skip, match="text-only"):
        evaluators.zero_shot_classification(StubEncoder({}, has_images=False), data, ["{}"])


# ------------------------------------------------------------------------------------------- retrieval
def test_retrieval_counts_every_caption_of_an_image_as_positive():
    # Image "a" has captions c1 and c2; caption c1 also describes image "c". One-hot-like embeddings:
    # image a is closest to c2, so a positional ground truth (a -> c1 only) would call it a miss at R@1.
    imgs = {"a.png": [0, 1, 0.2], "b.png": [0, 0, 1], "c.png": [1, 0, 0]}
    texts = {"c1": [0.9, 0.4, 0], "c2": [0, 1, 0], "c3": [0, 0.1, 1]}
    pairs = PairSet(["a.png", "a.png", "b.png", "c.png"], ["a", "a", "b", "c"], ["c1", "c2", "c3", "c1"],
                    [("HP:1",), ("HP:2",), ("HP:3",), ("HP:1",)], ["test"] * 4)
    phen = {"HP:1": [1, 0.5, 0], "HP:2": [0, 1, 0.3], "HP:3": [0, 0, 1]}
    out = evaluators.cross_modal_retrieval(StubEncoder(imgs, texts, phen), pairs, ks=(1, 2))
    assert out["n_images"] == 3 and out["n_captions"] == 3 and out["n_phenotypes"] == 3
    assert out["image_to_text"]["r@1"] == 1.0  # a -> c2, b -> c3, c -> c1: all positives
    # text queries: c1 -> best image c (positive), c2 -> a, c3 -> b
    assert out["text_to_image"]["r@1"] == 1.0
    # chance: image a has 2 positives of 3 captions -> 2/3 at K=1; b and c 1/3 each
    assert out["image_to_text"]["chance_r@1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    # image a's phenotypes are the union {HP:1, HP:2}
    assert out["image_to_phenotype"]["n_queries"] == 3
    assert out["phenotype_to_image"]["r@1"] == pytest.approx(1.0)


def test_retrieval_matches_brute_force_on_random_embeddings():
    rng = np.random.default_rng(1)
    n_img, d = 9, 6
    imgs = {f"{i}.png": v for i, v in enumerate(rng.normal(size=(n_img, d)))}
    caps = [f"cap{j}" for j in range(12)]
    texts = {c: v for c, v in zip(caps, rng.normal(size=(12, d)))}
    owner = [j % n_img for j in range(12)]  # images 0-2 get two captions each
    terms = [(f"HP:{rng.integers(4)}",) for _ in range(12)]
    phen = {f"HP:{k}": v for k, v in enumerate(rng.normal(size=(4, d)))}
    pairs = PairSet([f"{o}.png" for o in owner], [str(o) for o in owner], caps, terms, ["test"] * 12)
    out = evaluators.cross_modal_retrieval(StubEncoder(imgs, texts, phen), pairs, ks=(1, 3, 5))

    iv = unit([imgs[f"{i}.png"] for i in range(n_img)])
    tv = unit([texts[c] for c in caps])
    pos = np.zeros((n_img, 12), bool)
    pos[owner, np.arange(12)] = True
    for k in (1, 3, 5):
        assert out["image_to_text"][f"r@{k}"] == pytest.approx(np.mean(brute_first_rank(iv @ tv.T, pos) < k))
        assert out["text_to_image"][f"r@{k}"] == pytest.approx(np.mean(brute_first_rank(tv @ iv.T, pos.T) < k))
    cands = sorted(phen)
    pv = unit([phen[h] for h in cands])
    ipos = np.zeros((n_img, len(cands)), bool)
    for o, t in zip(owner, terms):
        ipos[o, cands.index(t[0])] = True
    has = ipos.any(1)
    assert out["image_to_phenotype"]["r@1"] == pytest.approx(np.mean(brute_first_rank((iv @ pv.T)[has], ipos[has]) < 1))
    used = ipos.any(0)
    assert out["phenotype_to_image"]["r@3"] == pytest.approx(
        np.mean(brute_first_rank((pv @ iv.T)[used], ipos.T[used]) < 3))


# -------------------------------------------------------------------------------------------- matching
def test_phenotype_matching_matches_brute_force():
    rng = np.random.default_rng(2)
    n, c, d, k = 10, 7, 5, 2
    imgs = rng.normal(size=(n, d))
    cands = [f"HP:{i}" for i in range(c)]
    phen = {h: v for h, v in zip(cands, rng.normal(size=(c, d)))}
    gold = [tuple(rng.choice(cands, size=rng.integers(1, 4), replace=False)) for _ in range(n)]
    out = evaluators.phenotype_matching(StubEncoder(imgs, {}, phen), np.arange(n), gold, cands, k=k, ks=(1, 3))

    s = unit(imgs) @ unit([phen[h] for h in cands]).T
    tp = n_pred = n_gold = 0
    sample_f1, recall3 = [], []
    for i in range(n):
        order = list(np.argsort(-s[i]))
        pred = {cands[j] for j in order[:k]}
        g = set(gold[i])
        hits = len(pred & g)
        tp, n_pred, n_gold = tp + hits, n_pred + len(pred), n_gold + len(g)
        sample_f1.append(2 * hits / (len(pred) + len(g)))
        recall3.append(len({cands[j] for j in order[:3]} & g) / len(g))
    assert out["micro_precision"] == pytest.approx(tp / n_pred)
    assert out["micro_recall"] == pytest.approx(tp / n_gold)
    assert out["micro_f1"] == pytest.approx(2 * tp / (n_pred + n_gold))
    assert out["sample_f1"] == pytest.approx(np.mean(sample_f1))
    assert out["r@3"] == pytest.approx(np.mean(recall3))
    assert out["predicted_set"] == "top-2"

    thr = evaluators.phenotype_matching(StubEncoder(imgs, {}, phen), np.arange(n), gold, cands, k=None,
                                        threshold=0.0, ks=(1,))
    pred_mask = s >= 0.0
    gold_mask = np.array([[h in g for h in cands] for g in gold])
    assert thr["micro_precision"] == pytest.approx((pred_mask & gold_mask).sum() / pred_mask.sum())


# ------------------------------------------------------------------------------------------- hierarchy
@pytest.fixture(scope="module")
def onto():
    from phenolip_jax.ontology import load_ontology

    return load_ontology()


def _family(onto):
    """A term with a parent, a grandparent and a child, plus an unrelated term in another organ system."""
    for i in range(len(onto)):
        if len(onto.parents(i)) == 1 and len(onto.children(i)) and len(onto.organ_systems(i)) == 1:
            parent = int(onto.parents(i)[0])
            if len(onto.parents(parent)) == 1 and len(onto.organ_systems(parent)):
                grand = int(onto.parents(parent)[0])
                if grand != onto.index("HP:0000118") and len(onto.organ_systems(grand)):
                    child = int(onto.children(i)[0])
                    other = next(j for j in range(len(onto)) if len(onto.organ_systems(j)) and
                                 set(onto.organ_systems(j)).isdisjoint(onto.organ_systems(i)))
                    return [onto.ids[x] for x in (i, parent, child, grand, other)]
    raise AssertionError("no suitable family in the ontology")


def test_hierarchy_credits_parent_and_child_only(onto):
    gold, parent, child, grand, other = _family(onto)
    cands = [gold, parent, child, grand, other]
    phen = {h: np.eye(5)[j] for j, h in enumerate(cands)}
    imgs = np.eye(5)  # image j predicts candidate j; every image's gold term is `gold`
    enc = StubEncoder(imgs, {}, phen)
    out = evaluators.hierarchy_scores(enc, np.arange(5), [[gold]] * 5, cands, onto, max_hops=1)
    assert out["exact"] == pytest.approx(1 / 5)
    assert out["hierarchical"] == pytest.approx(3 / 5)  # gold, parent, child
    two = evaluators.hierarchy_scores(enc, np.arange(5), [[gold]] * 5, cands, onto, max_hops=2)
    assert two["hierarchical"] == pytest.approx(4 / 5)  # + grandparent
    systems = evaluators.organ_system_names(onto, [gold])
    assert set(out["per_organ_system"]) == set(systems)
    for v in out["per_organ_system"].values():
        assert v == {"accuracy": pytest.approx(0.2), "hierarchical": pytest.approx(0.6), "n": 5}


def test_hierarchy_accuracy_per_organ_system(onto):
    gold, parent, child, grand, other = _family(onto)
    cands = [gold, other]
    phen = {gold: [1, 0], other: [0, 1]}
    # two images of `gold` (one right, one wrong), one image of `other` (right)
    enc = StubEncoder(np.array([[1, 0], [0, 1], [0, 1]]), {}, phen)
    out = evaluators.hierarchy_scores(enc, np.arange(3), [[gold], [gold], [other]], cands, onto)
    for g in evaluators.organ_system_names(onto, [gold]):
        assert out["per_organ_system"][g]["accuracy"] == pytest.approx(0.5)
    for g in evaluators.organ_system_names(onto, [other]):
        assert out["per_organ_system"][g]["accuracy"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- linear probe
def test_linear_probe_separates_clusters_and_carves_validation():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 20)
    feats = np.eye(3)[labels] * 3 + rng.normal(scale=0.3, size=(60, 3))
    data = ClassificationSet("clusters", list("abc"), list("abc"), [None] * 3,
                             {"test": Split(np.arange(60), labels)})  # one split: probe carves train/val/test
    sp = evaluators.probe_splits(data)
    idx = [set(np.asarray(sp[k].images).tolist()) for k in ("train", "val", "test")]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    assert sum(map(len, idx)) == 60 and len(idx[2]) == 12 and len(idx[1]) == 12
    for k in ("train", "val", "test"):
        assert sorted(np.unique(sp[k].labels)) == [0, 1, 2]
    out = evaluators.linear_probe_eval(StubEncoder(feats), data, fractions=(0.1, 1.0), seeds=(0, 1), cs=(0.1, 1.0))
    assert out["100%"]["top1_mean"] == 1.0
    assert out["10%"]["n_seeds"] == 2 and out["100%"]["n_seeds"] == 1
    assert out["n_test"] == 12


def test_cached_encoder_encodes_each_image_set_once():
    stub = StubEncoder(np.eye(3))
    enc = evaluators.CachedEncoder(stub)
    x = np.arange(3)
    np.testing.assert_allclose(enc.encode_images(x), enc.encode_images(x))
    assert stub.image_calls == 1


# -------------------------------------------------------------------------------------------- datasets
def test_medmnist_npz_single_and_multi_label(tmp_path, onto):
    rng = np.random.default_rng(4)
    grey = tmp_path / "grey.npz"
    np.savez(grey, **{f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for s, n in
                      (("train", 6), ("val", 3), ("test", 4))},
             **{f"{s}_labels": rng.integers(0, 3, (n, 1)) for s, n in (("train", 6), ("val", 3), ("test", 4))})
    (tmp_path / "map.json").write_text(json.dumps({"label": {"0": "normal", "1": "HP:0001250", "2": "tumour"}}))
    d = datasets.load_medmnist(str(grey), str(tmp_path / "map.json"), onto)
    assert d.task == "multi-class" and d.splits["test"].labels.shape == (4,)
    assert d.class_texts[1] == "Seizure" and d.class_hpo == [None, "HP:0001250", None]
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, test_images=rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8),
             test_labels=rng.integers(0, 2, (5, 4)))
    m = datasets.load_medmnist(str(rgb), ["a", "b", "c", "d"])
    assert m.multi_label and m.splits["test"].labels.shape == (5, 4)
    with pytest.raises(ValueError, match="class map"):
        datasets.load_medmnist(str(rgb))


def test_image_folder_with_class_map(tmp_path, onto):
    for split in ("train", "test"):
        for cls, colour in (("seizure", 40), ("normal_skin", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((20, 24, 3), colour + i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = datasets.load_image_folder(str(tmp_path), {"seizure": "HP:0001250"}, onto)
    assert d.class_names == ["normal_skin", "seizure"]
    assert d.class_texts == ["normal skin", "Seizure"] and d.class_hpo == [None, "HP:0001250"]
    assert set(d.splits) == {"train", "test"} and len(d.splits["test"]) == 4
    assert d.task == "binary-class"


# ------------------------------------------------------------------------------- the eval stage, end to end
def _check_outputs(out_dir, figures):
    with open(out_dir / "eval_results.json") as f:
        saved = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(saved["figures"]) == set(figures)
    for name in saved["figures"].values():
        with open(out_dir / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "report.md").read_text().count("](") == len(figures)
    return saved


def test_eval_run_on_stage2_writes_results_report_and_plots(stage2_workdir, tiny_demo_dir, tmp_path):
    from phenolip_jax.evaluate.run import run
    from tests.evaluate.conftest import tiny_eval_config

    cfg = tiny_eval_config(stage2_workdir, tiny_demo_dir, str(tmp_path / "out"))
    res = run(cfg, str(tmp_path / "unused"))
    assert res["skipped"] == {}
    for direction in ("image_to_text", "text_to_image", "image_to_phenotype", "phenotype_to_image"):
        for k in (1, 5, 10, 50):
            assert 0 <= res["retrieval"][direction][f"r@{k}"] <= 1
            assert 0 <= res["retrieval"][direction][f"chance_r@{k}"] <= 1
    assert res["retrieval"]["n_images"] == 16 and res["retrieval"]["n_phenotypes"] == 8
    assert res["zero_shot"]["n_classes"] <= 8 and 0 <= res["zero_shot"]["top1"] <= 1
    assert set(res["linear_probe"]) >= {"1%", "10%", "100%"}
    assert res["hierarchy"]["hierarchical"] >= res["hierarchy"]["exact"]
    assert res["unseen"]["zs_seen_images"] == 16 and res["unseen"]["zs_unseen_images"] == 0  # 8 roots: none held out
    saved = _check_outputs(tmp_path / "out", {"recall_at_k", "organ_system_accuracy", "phenotype_map"})
    assert saved["retrieval"]["image_to_text"]["r@10"] == pytest.approx(res["retrieval"]["image_to_text"]["r@10"])
    assert not (tmp_path / "unused").exists()


def test_eval_run_on_stage1_skips_image_evaluators(stage1_workdir, tiny_demo_dir, tmp_path):
    from phenolip_jax.evaluate.run import run
    from tests.evaluate.conftest import tiny_eval_config

    cfg = tiny_eval_config(stage1_workdir, tiny_demo_dir, "")
    res = run(cfg, str(tmp_path))
    assert set(res["skipped"]) == {"retrieval", "matching", "zero_shot", "hierarchy", "unseen", "linear_probe"}
    assert all("text-only" in v for v in res["skipped"].values())
    _check_outputs(tmp_path, {"phenotype_map"})
    assert "## Skipped" in (tmp_path / "report.md").read_text()


def test_eval_cli(stage2_workdir, tiny_demo_dir, tmp_path):
    import subprocess
    import sys

    from tests.tasks.conftest import REPO

    with open(os.path.join(REPO, "phenolip_jax", "main.py")) as f:
        if '"eval"' not in f.read():
            pytest.skip("phenolip_jax/main.py does not dispatch config.stage == 'eval' yet")
    demo = [f"--config.data.demo.{k}={v}" for k, v in
            dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16).items()]
    cmd = [sys.executable, "-m", "phenolip_jax.main", "--config=configs/eval.py",
           f"--config.checkpoint={stage2_workdir}",
           f"--config.data.demo_dir={tiny_demo_dir}", "--config.evaluators=('retrieval','hierarchy')",
           f"--workdir={tmp_path}", *demo]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"retrieval/image_to_text/r@10"' in proc.stdout
    saved = _check_outputs(tmp_path, {"recall_at_k", "organ_system_accuracy", "phenotype_map"})
    assert set(saved) >= {"retrieval", "hierarchy"} and "zero_shot" not in saved


def test_eval_run_on_medmnist_npz(stage2_workdir, tmp_path):
    from phenolip_jax.evaluate.run import run
    from tests.tasks.conftest import load_config

    rng = np.random.default_rng(5)
    sizes = dict(train=12, val=6, test=9)
    np.savez(tmp_path / "tiny.npz", **{f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
                                       for s, n in sizes.items()},
             **{f"{s}_labels": (np.arange(n) % 3)[:, None] for s, n in sizes.items()})
    (tmp_path / "classes.json").write_text(json.dumps(["HP:0001250", "HP:0000316", "HP:0000252"]))
    cfg = load_config("eval", "medmnist")
    cfg.checkpoint = stage2_workdir
    cfg.data.path = str(tmp_path / "tiny.npz")
    cfg.data.class_map = str(tmp_path / "classes.json")
    cfg.probe.seeds, cfg.probe.cs = (0,), (1.0,)
    res = run(cfg, str(tmp_path / "out"))
    assert set(res["skipped"]) == {"retrieval", "matching", "unseen"}
    assert res["zero_shot"]["n_images"] == 9 and res["zero_shot"]["task"] == "multi-class"
    assert 0 <= res["zero_shot"]["auc"] <= 1 and res["zero_shot"]["acc_medmnist"] == res["zero_shot"]["top1"]
    assert res["hierarchy"]["n"] == 9
    assert res["linear_probe"]["n_test"] == 9
    _check_outputs(tmp_path / "out", {"organ_system_accuracy", "phenotype_map"})
