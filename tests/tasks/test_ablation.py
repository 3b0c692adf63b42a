"""The ablation command on tiny models: every arm runs, the table and JSON are written, finished runs are reused."""
import json
import os

import numpy as np
import pytest

from tests.tasks.conftest import load_config
from tests.tasks.test_stages import tiny_stage1, tiny_stage2


def test_summarise_mean_and_sample_sd():
    from phenolip_jax.tasks import ablation_tables

    runs = {"clip": [{"i2t_r@10": 0.5, "zs_unseen_top1": 0.1}, {"i2t_r@10": 0.7, "zs_unseen_top1": None}]}
    got = ablation_tables.summarise(runs)["clip"]
    assert got["i2t_r@10"]["mean"] == pytest.approx(0.6)
    assert got["i2t_r@10"]["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert got["zs_unseen_top1"] == dict(mean=0.1, sd=0.0, n=1)  # a run without the figure is left out
    table = ablation_tables.markdown_table({"clip": got})
    assert "| clip | 60.0 ± 14.1 |" in table and "n/a" in table


def test_arm_configs_say_what_they_switch_on():
    from phenolip_jax.tasks import ablation

    cfg = load_config("ablation")
    teachers = {"trained": "T", "raw": "R"}
    def arm(name):
        return ablation.arm_config(cfg, name, 0, teachers, "W")

    assert arm("clip").loss.kd_weight == 0 and not arm("clip").loss.hierarchy.enabled
    paper = arm("paper_kd")
    assert paper.loss.kd_weight == 0.3 and not paper.loss.hierarchy.enabled and paper.teacher.workdir == "T"
    share, mask, uncapped = arm("paper_kd_hier_share"), arm("paper_kd_hier_mask"), arm("paper_kd_hier_uncapped")
    assert (share.loss.hierarchy.mode, share.loss.hierarchy.own_share) == ("soft", 0.5)
    assert mask.loss.hierarchy.mode == "mask" and mask.loss.hierarchy.enabled
    assert (uncapped.loss.hierarchy.mode, uncapped.loss.hierarchy.own_share) == ("soft", 0.0)
    assert arm("paper_kd_raw_teacher").teacher.workdir == "R"
    assert set(cfg.arms) <= set(ablation.ARMS) and "paper_kd" in cfg.arms


def test_paired_differences_against_clip_per_seed():
    from phenolip_jax.tasks import ablation_tables

    runs = {"clip": [{"i2t_r@10": 0.5}, {"i2t_r@10": 0.9}, {"i2t_r@10": 0.6}],
            "phenolip": [{"i2t_r@10": 0.6}, {"i2t_r@10": 0.95}, {"i2t_r@10": 0.55}]}
    got = ablation_tables.paired_differences(runs)
    assert list(got) == ["phenolip"]
    d = got["phenolip"]["i2t_r@10"]
    assert d["mean"] == pytest.approx(np.mean([0.1, 0.05, -0.05]))
    assert d["sd"] == pytest.approx(np.std([0.1, 0.05, -0.05], ddof=1))  # paired: far below the arms' own spread
    assert (d["n"], d["wins"]) == (3, 2)
    assert "| phenolip | +3.3 ± 7.6 (2/3) |" in ablation_tables.markdown_table(got, signed=True)


def test_ablation_runs_every_arm_and_resumes(tiny_bert_dir, tmp_path):
    from phenolip_jax.tasks import ablation

    cfg = load_config("ablation", "quick")
    cfg.arms = ("clip_hier_share", "paper_kd_raw_teacher")  # both teachers, distillation and hierarchy; 2 runs
    cfg.teacher = tiny_stage1(tiny_bert_dir)
    cfg.teacher.text.embed_dim = 32  # the raw teacher's identity head needs embed_dim >= width (32)
    cfg.teacher.total_steps = 2
    cfg.teacher.eval.max_queries = 8
    cfg.teacher.eval.baselines = False
    cfg.teacher.data.typed_heldout_fraction = 0.0
    cfg.stage2 = tiny_stage2(tiny_bert_dir, "", "")
    cfg.stage2.data.demo = dict(num_phenotypes=16, train_pairs=32, val_pairs=0, test_pairs=32)
    cfg.stage2.total_steps = cfg.stage2.checkpoint_every = 2
    cfg.stage2.eval_every = 0
    cfg.stage2.model.embed_dim = 32  # = the teachers' width (distillation compares the two)
    work = str(tmp_path / "abl")
    summary = ablation.run(cfg, work)
    assert list(summary) == list(cfg.arms)
    for arm, figures in summary.items():
        for key in ("i2t_r@10", "t2i_r@10", "i2p_r@10", "p2i_r@10", "zs_seen_top1", "zs_unseen_top1"):
            assert 0.0 <= figures[key]["mean"] <= 1.0 and figures[key]["n"] == 1, (arm, key)
    with open(os.path.join(work, "ablation.json")) as f:
        saved = json.load(f)
    assert saved["summary"] == json.loads(json.dumps(summary)) and saved["seeds"] == [0]
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert table.count("\n| ") == 1 + len(cfg.arms) + 2  # header, arms, then chance and the seen-relative rule
    assert "\n| (chance) |" in table and "\n| (seen-relative rule) |" in table
    with open(os.path.join(work, "clip_hier_share", "seed0", "eval.json")) as f:
        assert json.load(f)["zs_unseen_images"] > 0  # the per-seed demo holds unseen phenotypes
    # The untrained teacher is the raw encoder: a 0-step stage 1 with an identity head.
    with open(os.path.join(work, "teacher_raw", "stage1_config.json")) as f:
        assert json.load(f)["text_tower"]["head"] == "linear"
    # Rerun: every finished run is reused (no new metrics written).
    stamp = os.path.getmtime(os.path.join(work, "clip_hier_share", "seed0", "metrics.jsonl"))
    assert ablation.run(cfg, work) == summary
    assert os.path.getmtime(os.path.join(work, "clip_hier_share", "seed0", "metrics.jsonl")) == stamp
    with open(os.path.join(work, "ablation.json")) as f:
        again = json.load(f)
    assert again["seconds"] == saved["seconds"] and min(again["seconds"].values()) > 0  # the runs' own times
    assert again["total_seconds"] >= sum(saved["seconds"].values()) - 0.1  # rounded to 0.1 s
    # A finished run made from another config is refused, before anything trains, naming the field.
    cfg.stage2.loss.hierarchy.hop_decay = 0.25
    with pytest.raises(ablation.StaleRunError, match=r"loss\.hierarchy\.hop_decay: 0\.5 -> 0\.25"):
        ablation.run(cfg, work)
    cfg.stage2.loss.hierarchy.hop_decay = 0.5
    cfg.teacher.total_steps = 3  # the teacher too
    with pytest.raises(ablation.StaleRunError, match=r"teacher was made with another config.*total_steps: 2 -> 3"):
        ablation.run(cfg, work)
    cfg.teacher.total_steps = 2
    # The finished runs re-evaluated on their demo regenerated with more test pairs (same train split).
    def hier_row():
        return [ln for ln in (tmp_path / "abl" / "ablation.md").read_text().splitlines() if ln.startswith("| clip_hier_share")]

    row = hier_row()
    cfg.eval_test_pairs = 64
    cfg.arms = ("clip_hier_share",)  # one arm keeps the test short; each arm takes the same path
    ablation.run(cfg, work)
    assert os.path.getmtime(os.path.join(work, "clip_hier_share", "seed0", "metrics.jsonl")) == stamp  # nothing retrained
    assert hier_row() == row  # the runs' own table is still written from their own evaluation
    with open(os.path.join(work, "ablation_test64.json")) as f:
        more = json.load(f)
    assert more["eval_test_pairs"] == 64
    for arm in cfg.arms:
        with open(os.path.join(work, arm, "seed0", "eval_test64.json")) as f:
            bigger = json.load(f)
        with open(os.path.join(work, arm, "seed0", "eval.json")) as f:
            own = json.load(f)
        assert bigger["num_images"] == 2 * own["num_images"] and bigger["zs_unseen_images"] > own["zs_unseen_images"]
        assert more["runs"][arm][0]["zs_unseen_images"] == bigger["zs_unseen_images"]
    assert "regenerated with 64 test pairs" in (tmp_path / "abl" / "ablation_test64.md").read_text()
    # At the run's own test size the re-evaluation is the run's own evaluation, figure for figure.
    from phenolip_jax.tasks import stage2
    teachers = {"trained": os.path.join(work, "teacher")}
    again = stage2.evaluate_on_more_test_pairs(ablation.arm_config(cfg, "clip_hier_share", 0, teachers, work),
                                               os.path.join(work, "clip_hier_share", "seed0"), 32, str(tmp_path / "d32"))
    assert again == pytest.approx(own)


def test_more_test_pairs_need_the_demo_source(tmp_path):
    from phenolip_jax.tasks import ablation

    cfg = load_config("ablation", "quick")
    cfg.eval_test_pairs = 10  # fewer than the demo's phenotypes: the generator could not cover them
    with pytest.raises(ValueError, match=r"config.eval_test_pairs=10: needs"):
        ablation.run(cfg, str(tmp_path))


def test_bad_arm_is_named(tmp_path):
    from phenolip_jax.tasks import ablation

    cfg = load_config("ablation", "quick")
    cfg.arms = ("clip", "nope")
    with pytest.raises(ValueError, match="config.arms"):
        ablation.run(cfg, str(tmp_path))
