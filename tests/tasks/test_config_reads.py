"""Every config field does something: a tiny stage-1 and stage-2 run under a read tracker must read every leaf
of every variant of configs/stage1.py and configs/stage2.py, except the fields listed below, which are read only
in another mode (named beside each) and are checked by `config_checks.validate`."""
import pytest

from phenolip_jax import config_checks, config_tools
from tests.tasks.conftest import load_config
from tests.tasks.test_stages import tiny_stage1, tiny_stage2

VALIDATE = config_checks.validate  # the module fixture below switches it off for the tracked runs

# field -> the setting under which the run reads it (these runs use the other branch).
READ_ONLY_WHEN = {
    "stage1": {
        "stage": "main.py, to pick the stage",
        "loss.temperature": "loss.learn_temperature=False or loss.kind='adasp'",
        "optim.freeze_pattern": "optim.freeze_steps > 0",
        "text.arch": "text.hf_dir='' (--aot: BERT sizes without weights)",
        "eval_only": "main.py, on a finished run",
    },
    "stage2": {
        "eval_only": "main.py, on a finished run",
        "stage": "main.py, to pick the stage",
        "data.tfds_name": "data.source='tfds'",
        "teacher.stage1_variant": "teacher.workdir='' (stage 2 trains its own teacher)",
        "model.logit_bias_init": "loss.kind='sigmoid'",
        "loss.struct_temperature": "loss.struct_weight > 0",
        "optim.end_factor": "optim.schedule='cosine' (the tiny run is constant)",
        "optim.freeze_pattern": "optim.freeze_steps > 0",
        "init.required": "config_checks.validate (an empty init.checkpoint is refused before anything loads)",
        "loss.hierarchy.own_share": "loss.hierarchy.mode='soft'",
    },
}
# field -> (its only accepted value, a value validate must reject with an error naming the field).
REJECTED_UNLESS = {"stage1": {"eval_every": (0, 50)}, "stage2": {}}


@pytest.fixture(scope="module")
def reads(tiny_bert_dir, tiny_demo_dir, tmp_path_factory, monkeypatch_module):
    """(stage1 leaves read, stage2 leaves read) by tiny runs, validation switched off so it counts nothing."""
    from phenolip_jax.tasks import stage1, stage2

    monkeypatch_module.setattr(config_checks, "validate", lambda cfg, n: None)  # it reads every field it checks
    cfg1 = tiny_stage1(tiny_bert_dir)
    teacher = str(tmp_path_factory.mktemp("teacher"))
    with config_tools.track_reads(cfg1) as read1:
        stage1.run(cfg1, teacher)
    cfg2 = tiny_stage2(tiny_bert_dir, tiny_demo_dir, teacher)
    with config_tools.track_reads(cfg2) as read2:
        stage2.run(cfg2, str(tmp_path_factory.mktemp("stage2")))
    return {"stage1": read1, "stage2": read2}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("stage,variants", [("stage1", ("demo", "teacher", "full", "pubmedbert")),
                                            ("stage2", ("demo", "biomedclip"))])
def test_every_leaf_of_every_variant_is_read(reads, stage, variants):
    leaves = {leaf for v in variants for leaf in config_tools.flatten(load_config(stage, v))}
    unread = sorted(leaves - reads[stage] - set(READ_ONLY_WHEN[stage]) - set(REJECTED_UNLESS[stage]))
    assert unread == [], f"config fields of {stage} that nothing reads: {unread}"
    exceptions = set(READ_ONLY_WHEN[stage]) | set(REJECTED_UNLESS[stage])
    assert exceptions <= leaves, exceptions - leaves  # real fields ...
    assert not exceptions & reads[stage], exceptions & reads[stage]  # ... that these runs really leave unread
    for field, (default, rejected) in REJECTED_UNLESS[stage].items():
        cfg = load_config(stage)
        assert cfg[field] == default
        cfg[field] = rejected
        with pytest.raises(ValueError, match=rf"^config\.{field}={rejected}"):
            VALIDATE(cfg, 1)


def test_tracker_sees_reads_through_attributes_get_dict_and_to_dict():
    cfg = load_config("stage2")
    with config_tools.track_reads(cfg) as read:
        _ = cfg.data.batch_size, cfg.loss.hierarchy.get("max_hops"), dict(cfg.model.image), cfg.optim.to_dict()
    assert {"data.batch_size", "loss.hierarchy.max_hops", "model.image.patch_size", "optim.lr"} <= read
    assert "data.max_len" not in read and "model.remat" not in read
