"""Attention paths: splash (Pallas, interpret mode on CPU) and the cuDNN argument form agree with the XLA reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from phenolip_jax.models import bert as bert_lib
from phenolip_jax.models import layers
from phenolip_jax.models import vit as vit_lib


def _qkv(batch=2, length=20, heads=2, head_dim=8, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(0), 3)
    return [jax.random.normal(k, (batch, length, heads, head_dim), dtype) for k in ks]


def _padding_mask(lengths, length):
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def test_splash_matches_xla_forward_and_grads():
    q, k, v = _qkv()
    mask = jnp.asarray(_padding_mask([20, 13], 20))
    valid = np.asarray(mask[:, 0, 0, :])

    def loss(kind, q, k, v):
        out = layers.attend(q, k, v, mask, attention=kind)
        return jnp.sum(jnp.where(valid[:, :, None, None], out, 0.0) ** 2), out

    grad = lambda kind: jax.jit(jax.value_and_grad(  # noqa: E731
        lambda *a: loss(kind, *a), argnums=(0, 1, 2), has_aux=True))(q, k, v)
    (l_ref, out_ref), g_ref = grad("xla")
    (l_spl, out_spl), g_spl = grad("splash")
    np.testing.assert_allclose(np.asarray(out_spl)[valid], np.asarray(out_ref)[valid], atol=2e-5)
    np.testing.assert_allclose(l_spl, l_ref, rtol=1e-5)
    for a, b in zip(g_spl, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    # Padded query rows attend to padding only: finite, never NaN.
    assert np.isfinite(np.asarray(out_spl)).all()


def test_splash_under_a_mesh_runs_per_device():
    """With jax.set_mesh the kernel is shard_mapped over the batch axes; same numbers as without a mesh."""
    q, k, v = _qkv(batch=8, length=9)
    mask = jnp.asarray(_padding_mask([9, 3, 5, 9, 1, 7, 8, 2], 9))
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    sharding = NamedSharding(mesh, P(("data", "fsdp")))
    f = jax.jit(lambda q, k, v, m: layers.attend(q, k, v, m, attention="splash"))
    with jax.set_mesh(mesh):
        text = f.lower(q, k, v, mask).as_text()
        out = f(*(jax.device_put(x, sharding) for x in (q, k, v, mask)))
    assert "shard_map" in text or "manual" in text.lower()
    ref = jax.jit(lambda *a: layers.attend(*a, attention="xla"))(q, k, v, mask)
    valid = np.asarray(mask[:, 0, 0, :])
    np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(ref)[valid], atol=2e-5)


def test_key_value_seq_lengths_form_matches_the_mask():
    """The cuDNN path's padding argument (key_value_seq_lengths), run by XLA on CPU, equals the boolean mask."""
    q, k, v = _qkv(dtype=jnp.bfloat16)
    mask = jnp.asarray(_padding_mask([20, 7], 20))
    kwargs = layers.cudnn_arguments(q, k, v, mask)
    np.testing.assert_array_equal(kwargs["key_value_seq_lengths"], [20, 7])
    assert kwargs["implementation"] == "cudnn" and "mask" not in kwargs and "bias" not in kwargs
    got = jax.jit(jax.nn.dot_product_attention, static_argnames="implementation")(q, k, v, key_value_seq_lengths=kwargs["key_value_seq_lengths"],
                                       implementation="xla")
    ref = jax.jit(lambda *a: layers.attend(*a, attention="xla"))(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=1e-2)


def test_cudnn_argument_checks():
    q, k, v = _qkv(dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        layers.cudnn_arguments(*_qkv(dtype=jnp.float32), None)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        layers.cudnn_arguments(q, k, v.astype(jnp.float16), None)
    with pytest.raises(ValueError, match="key-padding mask"):  # a per-query mask would need a bias
        layers.cudnn_arguments(q, k, v, jnp.ones((2, 1, 20, 20), bool))
    with pytest.raises(ValueError, match="key-padding mask"):  # an additive bias is not a mask
        layers.cudnn_arguments(q, k, v, jnp.zeros((2, 1, 1, 20), jnp.float32))
    with pytest.raises(ValueError, match="key-padding mask"):  # lengths must match the keys
        layers.cudnn_arguments(q, k, v, jnp.ones((2, 1, 1, 19), bool))
    assert layers.cudnn_arguments(q, k, v, None)["key_value_seq_lengths"] is None


def test_resolve_attention():
    assert layers.resolve_attention("auto", "tpu") == "splash"
    assert layers.resolve_attention("auto", "gpu") == "cudnn"
    assert layers.resolve_attention("auto", "cpu") == "xla"
    assert layers.resolve_attention("auto", "tpu", dropout_rate=0.1) == "xla"
    assert layers.resolve_attention("xla", "tpu", dropout_rate=0.1) == "xla"
    with pytest.raises(ValueError, match=r"config.model.attention='splash'.*dropout"):
        layers.resolve_attention("splash", "tpu", dropout_rate=0.1)
    with pytest.raises(ValueError, match=r"config.text.attention='flash'.*one of"):
        layers.resolve_attention("flash", "tpu", field="text.attention")


def test_fused_attention_refuses_dropout_in_training():
    x = jnp.ones((1, 4, 8))
    params = layers.SelfAttention(num_heads=2).init(jax.random.key(0), x)
    attn = layers.SelfAttention(num_heads=2, attention="splash", attention_dropout=0.1)
    with pytest.raises(ValueError, match="dropout"):
        attn.apply(params, x, train=True, rngs={"dropout": jax.random.key(1)})


def test_bert_and_vit_agree_across_paths():
    """Whole encoders: splash gives the reference's pooled outputs (BERT with padding, ViT at 1 + 16 tokens)."""
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 99, (2, 12)), jnp.int32)
    am = jnp.asarray(_padding_mask([12, 5], 12)[:, 0, 0, :].astype(np.int32))
    cfg = dict(vocab_size=100, width=16, depth=1, num_heads=2, mlp_dim=32, max_position_embeddings=16)
    bert = {a: bert_lib.BERT(**cfg, pooling="mean", attention=a) for a in ("xla", "splash")}
    params = bert["xla"].init(jax.random.key(0), ids, am)
    pooled = {a: jax.jit(m.apply)(params, ids, am)[1] for a, m in bert.items()}
    np.testing.assert_allclose(pooled["splash"], pooled["xla"], atol=1e-4)

    images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    vcfg = dict(image_size=16, patch_size=4, width=16, depth=1, num_heads=2, mlp_dim=32)
    vit = {a: vit_lib.ViT(**vcfg, attention=a) for a in ("xla", "splash")}
    vparams = vit["xla"].init(jax.random.key(0), images)
    out = {a: jax.jit(m.apply)(vparams, images)[1] for a, m in vit.items()}
    np.testing.assert_allclose(out["splash"], out["xla"], atol=1e-4)
