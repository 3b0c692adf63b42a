"""Calibrated probabilities (issue 27 item 2): temperature fit on known logits, ECE, the eval command's calibration
step on the tiny demo run, predict's probabilities and abstaining."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from phenolip_jax.evaluate import calibrate, calibration, predict
from phenolip_jax.evaluate.datasets import PairSet
from tests.evaluate.conftest import tiny_eval_config
from tests.tasks.conftest import load_config


def _sample_labels(logits, temperature, rng):
    """One label per row drawn from softmax(logits / temperature)."""
    p = calibration.softmax(logits, temperature)
    return (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)


@pytest.mark.parametrize("t0", [2.5, 0.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(t0):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (20_000, 10))
    positives = np.eye(10, dtype=bool)[_sample_labels(logits, t0, rng)]
    t = calibration.fit_temperature(logits, positives)
    assert t == pytest.approx(t0, rel=0.03)
    assert not calibration.at_bound(t)
    # The fitted T is the NLL's minimum: nudging it either way costs likelihood.
    nll = calibration.gold_nll(logits, positives, t)
    assert nll < calibration.gold_nll(logits, positives, 0.9 * t) and nll < calibration.gold_nll(logits, positives,
                                                                                                 1.1 * t)


def test_fit_counts_a_multi_label_image_by_its_gold_set():
    # Candidates come in pairs that are always gold together: the gold mass of a pair is the likelihood of the
    # drawn pair, so the fit recovers T0; counting only one member of each pair would not.
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (20_000, 12))
    pair = _sample_labels(logits, 2.5, rng) // 2
    positives = np.zeros(logits.shape, bool)
    positives[np.arange(len(pair)), 2 * pair] = positives[np.arange(len(pair)), 2 * pair + 1] = True
    assert calibration.fit_temperature(logits, positives) == pytest.approx(2.5, rel=0.03)
    one_member = positives & (np.arange(12) % 2 == 0)
    assert abs(calibration.fit_temperature(logits, one_member) - 2.5) > 0.1


def test_ece_near_zero_when_calibrated_and_high_when_overconfident():
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.2, 1.0, 50_000)
    calibrated = rng.random(50_000) < conf  # right exactly as often as it claims
    assert calibration.expected_calibration_error(conf, calibrated) < 0.01
    overconfident = rng.random(50_000) < conf - 0.3  # right 30 points less often than it claims
    assert calibration.expected_calibration_error(conf, overconfident) > 0.25
    # Temperature scaling of overconfident logits brings ECE down (T > 1 flattens them).
    logits = rng.normal(0.0, 3.0, (20_000, 10))
    positives = np.eye(10, dtype=bool)[_sample_labels(logits, 2.5, rng)]
    before, after = (calibration.summary(logits, positives, t)["ece"] for t in
                     (1.0, calibration.fit_temperature(logits, positives)))
    assert before > 0.15 and after < 0.02


def test_ece_and_bins_match_a_hand_computed_example():
    conf = np.array([0.9, 0.8, 0.3, 0.35, 0.5])
    correct = np.array([True, False, False, True, True])
    # Bins (0, 0.5] and (0.5, 1]: {0.3, 0.35, 0.5} mean 0.38333, accuracy 2/3; {0.9, 0.8} mean 0.85, accuracy 1/2.
    expected = 3 / 5 * abs(2 / 3 - 0.38333333) + 2 / 5 * abs(0.5 - 0.85)
    assert calibration.expected_calibration_error(conf, correct, bins=2) == pytest.approx(expected)
    b = calibration.reliability_bins(conf, correct, bins=4)
    assert b["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0] and b["count"] == [0, 3, 0, 2]
    assert np.isnan(b["accuracy"][0]) and b["accuracy"][1] == pytest.approx(2 / 3)
    assert b["confidence"][3] == pytest.approx(0.85)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one gold candidate"):
        calibration.fit_temperature(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 0, 0]], bool))
    with pytest.raises(ValueError, match=r"must both be \[N, C\]"):
        calibration.gold_nll(np.zeros((2, 3)), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="bins=0"):
        calibration.reliability_bins(np.ones(3), np.ones(3), bins=0)


def test_calibration_config_is_checked_in_one_line():
    cfg = load_config("eval")
    cfg.calibration.fit = True
    cfg.calibration.split = "test"
    with pytest.raises(ValueError, match=r"^config\.calibration\.split='test' is also config\.data\.split"):
        calibrate.validate(cfg)
    cfg.calibration.split = "val"
    calibrate.validate(cfg)
    pairs = PairSet(["a.png", "b.png"], ["a", "b"], ["x", "y"], [("HP:0000316",), ("HP:0001250",)], ["train", "test"])
    with pytest.raises(ValueError) as err:
        calibrate.fit_and_measure(cfg, _FakeEncoder(), 10.0, pairs, None)
    assert str(err.value) == "config.calibration.split='val': the data has no 'val' split (splits: test, train)"


class _FakeEncoder:
    has_images = True


def test_a_text_only_model_or_one_without_logit_scale_skips_calibration():
    from phenolip_jax.evaluate.evaluators import Skip

    cfg = load_config("eval")
    text_only = type("TextOnly", (), {"has_images": False})()
    with pytest.raises(Skip, match="text-only"):
        calibrate.fit_and_measure(cfg, text_only, None, None, None)
    with pytest.raises(Skip, match="no logit_scale"):
        calibrate.fit_and_measure(cfg, _FakeEncoder(), None, None, None)


@pytest.fixture
def run_copy(stage2_workdir, tmp_path):
    """A copy of the tiny stage-2 run (its params and config), so calibration.json lands in a run of this test."""
    dst = tmp_path / "run"
    shutil.copytree(stage2_workdir, dst, ignore=shutil.ignore_patterns("checkpoints", "teacher*", "phenotype_cache"))
    return str(dst)


def test_eval_fits_on_val_measures_on_test_and_writes_json_report_and_diagram(run_copy, tiny_demo_dir, tmp_path):
    from phenolip_jax.evaluate.run import run

    cfg = tiny_eval_config(run_copy, tiny_demo_dir, str(tmp_path / "out"))
    cfg.evaluators = ("zero_shot",)
    cfg.calibration.fit = True
    res = run(cfg, str(tmp_path / "unused"))
    section = res["calibration"]
    assert section["split"] == "val" and section["test_split"] == "test" and section["candidates"] == 8
    assert section["n"] > 0 and section["n_test"] > 0 and section["in_run"]
    assert section["before"]["accuracy"] == section["after"]["accuracy"]  # T never changes the ranking
    saved = calibration.load(run_copy)
    assert saved.temperature == pytest.approx(section["temperature"]) and saved.split == "val"
    assert saved.ece_after == pytest.approx(section["after"]["ece"]) and saved.n_test == section["n_test"]
    assert section["file"] == os.path.join(run_copy, calibration.CALIBRATION_FILE)
    with open(tmp_path / "out" / "reliability.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Calibration (temperature scaling)" in md and "![reliability](reliability.png)" in md
    assert "fitted on the `val` split" in md and "measured on the `test` split" in md
    with open(tmp_path / "out" / "eval_results.json") as f:
        results = json.load(f)
    assert results["figures"]["reliability"] == "reliability.png"
    assert len(results["calibration"]["before"]["reliability"]["count"]) == 15


def test_eval_falls_back_to_the_output_folder_when_the_run_is_read_only(run_copy, tmp_path, monkeypatch, capsys):
    real_save = calibration.save

    def refuse_the_run(cal, folder):
        if folder == run_copy:
            raise PermissionError(13, "Permission denied")
        return real_save(cal, folder)

    monkeypatch.setattr(calibration, "save", refuse_the_run)
    section = dict(temperature=1.5, n=3, candidates=4, split="val", logit_scale=10.0, test_split="test", n_test=2,
                   bins=15, at_bound=False, before=dict(ece=0.2, nll=1.0), after=dict(ece=0.1, nll=0.9))
    path, in_run = calibrate.save(section, run_copy, str(tmp_path))
    assert path == str(tmp_path / calibration.CALIBRATION_FILE) and not in_run
    assert "not writable" in capsys.readouterr().out and calibration.load(str(tmp_path)).temperature == 1.5


def test_eval_without_a_val_split_errors_in_one_line(stage2_workdir, tmp_path):
    from phenolip_jax.evaluate.run import run

    rng = np.random.default_rng(5)
    np.savez(tmp_path / "tiny.npz", **{f"{s}_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8)
                                       for s in ("train", "test")},
             **{f"{s}_labels": (np.arange(6) % 3)[:, None] for s in ("train", "test")})
    (tmp_path / "classes.json").write_text(json.dumps(["HP:0001250", "HP:0000316", "HP:0000252"]))
    cfg = load_config("eval", "medmnist")
    cfg.checkpoint = stage2_workdir
    cfg.data.path = str(tmp_path / "tiny.npz")
    cfg.data.class_map = str(tmp_path / "classes.json")
    cfg.evaluators = ()
    cfg.calibration.fit = True
    with pytest.raises(ValueError) as err:
        run(cfg, str(tmp_path / "out"))
    assert str(err.value) == "config.calibration.split='val': the data has no 'val' split (splits: test, train)"


@pytest.fixture
def images(tiny_demo_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    src = sorted(os.path.join(r, f) for r, _, fs in os.walk(tiny_demo_dir) for f in fs if f.endswith(".png"))[:6]
    for i, p in enumerate(src):
        shutil.copy(p, folder / f"img{i}.png")
    return str(folder)


CANDIDATES = ["HP:0000316", "HP:0001250", "HP:0000252", "HP:0001156", "HP:0000369"]


def _predict(run_dir, images, out, **kw):
    cfg = load_config("predict")
    cands = os.path.join(images, os.pardir, "candidates.txt")
    with open(cands, "w") as f:
        f.write("\n".join(CANDIDATES))
    cfg.update(dict(checkpoint=run_dir, images=images, top_k=3, batch_size=4, candidates=cands, **kw))
    summary = predict.run(cfg, str(out))
    with open(out / "predictions.jsonl") as f:
        return summary, [json.loads(line) for line in f]


def test_predict_gives_calibrated_probabilities_and_abstains_below_min_probability(run_copy, images, tmp_path):
    from phenolip_jax import inference

    summary, rows = _predict(run_copy, images, tmp_path / "plain")
    assert summary["calibrated"] is False and summary["temperature"] == 1.0 and summary["abstained"] == 0
    # Uncalibrated probabilities are the model's own zero-shot softmax over the candidates (Model.classify).
    model = inference.load(run_copy)
    probs = model.classify([os.path.join(images, r["image"]) for r in rows], CANDIDATES)
    for r, p in zip(rows, probs):
        assert [x["probability"] for x in r["predictions"]] == pytest.approx(sorted(p, reverse=True)[:3], abs=1e-5)

    cal = calibration.Calibration(temperature=4.0, n=8, ece_before=0.3, ece_after=0.1, nll_before=2.0, nll_after=1.9,
                                  candidates=len(CANDIDATES), logit_scale=model.logit_scale)
    calibration.save(cal, run_copy)
    summary, rows = _predict(run_copy, images, tmp_path / "calibrated")
    assert summary["calibrated"] is True and summary["temperature"] == 4.0
    assert summary["calibration"] == os.path.join(run_copy, calibration.CALIBRATION_FILE)
    top1 = []
    for r in rows:
        p = [x["probability"] for x in r["predictions"]]
        assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1 + 1e-6
        top1.append(p[0])
    # Abstaining: a threshold between the images' top-1 probabilities leaves some images with no prediction.
    cut = float(np.median(top1))
    summary, kept = _predict(run_copy, images, tmp_path / "abstain", min_probability=cut)
    assert summary["abstained"] == sum(p < cut for p in top1) > 0
    assert all(x["probability"] >= cut for r in kept for x in r["predictions"])
    with open(tmp_path / "abstain" / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert table and all(float(row["probability"]) >= cut for row in table)
    assert {row["image"] for row in table} == {r["image"] for r in kept if r["predictions"]}
    # --config.temperature overrides the run's file.
    summary, _ = _predict(run_copy, images, tmp_path / "given", temperature=0.5)
    assert summary["temperature"] == 0.5 and summary["calibration"] == "config.temperature"


def test_predict_refuses_bad_probability_fields(run_copy, images, tmp_path):
    with pytest.raises(ValueError, match=r"^config\.min_probability=1\.5 must lie in \[0, 1\]"):
        _predict(run_copy, images, tmp_path, min_probability=1.5)
    with pytest.raises(ValueError, match=r"^config\.temperature=-1\.0 must be >= 0"):
        _predict(run_copy, images, tmp_path, temperature=-1.0)


def test_predict_refuses_a_damaged_calibration_file_in_one_line(tmp_path):
    (tmp_path / calibration.CALIBRATION_FILE).write_text('{"temperature": -2, "n": 1, "ece_before": 0, '
                                                          '"ece_after": 0, "nll_before": 0, "nll_after": 0, '
                                                          '"candidates": 5}')
    run = type("Run", (), {"path": str(tmp_path), "logit_scale": 10.0})()
    cfg = load_config("predict")
    cfg.checkpoint = str(tmp_path)
    with pytest.raises(ValueError, match=r"^config\.checkpoint=.*calibration\.json is unreadable \(.*temperature=-2"):
        predict.temperature_for(cfg, run, 5)
    cfg.temperature = 2.0  # a given T does not read the file
    assert predict.temperature_for(cfg, run, 5) == (2.0, "config.temperature")
