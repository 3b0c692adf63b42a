"""Stage 2's teacher: a self-made teacher starts from the student's text encoder; config errors name the field."""
import pytest

from phenolip_jax.tasks import stage1, stage2, teacher
from tests.tasks.conftest import load_config


def test_self_made_teacher_starts_from_the_students_text_encoder(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(stage1, "run", lambda scfg, tdir: seen.update(hf_dir=scfg.text.hf_dir, tdir=tdir))
    monkeypatch.setattr(stage1, "load_encoder", lambda tdir: ("model", "params", {"hf_dir": seen["hf_dir"]}))
    cfg = load_config("stage2", "biomedclip")
    cfg.text.hf_dir = "/models/pubmedbert"
    assert stage2.teacher_params(cfg, str(tmp_path))[2]["hf_dir"] == "/models/pubmedbert"
    assert seen["tdir"] == str(tmp_path / "teacher")


def test_self_made_teacher_without_text_hf_dir_names_the_field(monkeypatch, tmp_path):
    monkeypatch.setattr(stage1, "run", lambda scfg, tdir: pytest.fail("stage 1 must not start"))
    cfg = load_config("stage2", "biomedclip")  # text.hf_dir is '' there
    with pytest.raises(ValueError, match=r"config\.text\.hf_dir"):
        stage2.teacher_params(cfg, str(tmp_path))


def test_unknown_embedding_mode_names_the_field(tmp_path):
    cfg = load_config("stage2")
    cfg.teacher.embeddings = "sometimes"
    with pytest.raises(ValueError, match=r"config\.teacher\.embeddings='sometimes'.*precompute"):
        teacher.teacher_transform(cfg, None, None, {"hf_dir": ""}, None, [], str(tmp_path))
