"""The abstract step (what --aot compiles) has the run's parameter tree and the pipeline's batch layout."""
import jax
import numpy as np

from phenolip_jax import config_lib
from phenolip_jax.data import pipeline
from phenolip_jax.tasks import common, stage2
from phenolip_jax.train import mesh as mesh_lib


def test_stage2_abstract_step_matches_the_run(tiny_bert_dir, tiny_demo_dir):
    cfg = config_lib.load_config("stage2")
    cfg.text.hf_dir = tiny_bert_dir
    cfg.data.demo_dir = tiny_demo_dir
    cfg.data.demo = dict(num_phenotypes=8, train_pairs=64, val_pairs=8, test_pairs=16)
    cfg.data.image_size, cfg.data.batch_size, cfg.data.max_len = 16, 8, 16
    cfg.model.image = dict(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64, pool="cls")
    cfg.model.embed_dim = 16
    cfg.loss.kd_weight = 0.0
    mesh = mesh_lib.make_mesh(-1, 1)
    step, batch = stage2.abstract_step(cfg, mesh)

    # Parameters: the run's init (random towers + the pretrained BERT swapped in), leaf for leaf.
    onto = common.load_ontology_from_config(cfg.ontology)
    _, text_params, tokenizer, fields = common.load_text_encoder(cfg.text, cfg.model.dtype, cfg.seed)
    model, _, _, _ = stage2.build_model(cfg, fields["bert"], None)
    params = stage2.init_params(cfg, model, text_params)
    shape = lambda t: jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), t)  # noqa: E731
    assert shape(step.abstract_state.params) == shape(params)

    # Batch: the train pipeline's keys, global shapes and dtypes.
    splits, root = stage2.load_records(cfg, onto, tokenizer)
    real = next(pipeline.make_train_iterator(stage2.pipeline_config(cfg), splits["train"], tokenizer, onto,
                                             cfg.seed, image_root=root))
    assert shape(batch) == shape(real)


def test_stage2_model_remat_and_attention_reach_both_towers(tiny_bert_dir):
    """config.model.remat / attention reach the ViT and the BERT (model.remat used to be read by nothing)."""
    cfg = config_lib.load_config("stage2")
    cfg.text.hf_dir = tiny_bert_dir
    cfg.model.remat, cfg.model.attention, cfg.loss.kd_weight = "save_dots", "splash", 0.0
    model, _, image_fields, text_fields = stage2.build_model(cfg, common.bert_fields(cfg.text), None)
    for encoder in (image_fields["vit"], text_fields["bert"]):
        assert encoder["remat"] == "save_dots" and encoder["attention"] == "splash"
    assert model.image_config["vit"]["remat"] == model.text_config["bert"]["remat"] == "save_dots"
