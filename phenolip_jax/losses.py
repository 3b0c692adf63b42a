"""Contrastive, soft-positive, sigmoid and distillation losses: pure JAX functions of arrays.

Conventions shared by every loss here:
- Embeddings are expected L2-normalised by the caller (except `adasp_loss`, which normalises itself, as
  KEP's does); `scale` is the already exponentiated logit scale (e.g. `exp(logit_scale)`).
- Similarities and everything after them are computed in float32 whatever the input dtype (bf16 inputs
  are multiplied with float32 accumulation).
- `valid: bool [B]` (optional) marks real examples; padded examples are removed both as anchors (rows)
  and as candidates (columns), so a padded batch gives the loss of its unpadded part.
- Batch-level losses see the *global* batch: under `jax.jit` with inputs sharded over a mesh, XLA inserts
  the collectives; no function here reads global state or names a mesh axis.
Formulas: docs/models.md, "Losses and metrics".
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# A finite stand-in for -inf: masked logits must not create inf - inf = nan in log-sum-exp or 0 * inf in
# target-weighted sums, and exp(_NEG - anything finite) is exactly 0 in float32.
_NEG = -1e30
# Longest is-a path the hop-weight table covers (HPO's depth is 13-16).
_MAX_HOPS = 64


def _similarity(a: Array, b: Array) -> Array:
    """a @ b.T with float32 accumulation (bf16 stays bf16 on the MXU, the result is float32)."""
    return jnp.einsum("id,jd->ij", a, b, preferred_element_type=jnp.float32).astype(jnp.float32)


def _valid_or_all(valid: Array | None, n: int) -> Array:
    """The validity mask, all-true when none is given."""
    return jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)


def _square_targets(targets: Array | None, n_rows: int, n_cols: int) -> Array:
    """Soft targets as float32 constants; identity when none are given."""
    if targets is None:
        if n_rows != n_cols:
            raise ValueError(f"identity targets need a square batch, got {n_rows} x {n_cols}")
        return jnp.eye(n_rows, dtype=jnp.float32)
    targets = jnp.asarray(targets)
    if targets.shape != (n_rows, n_cols):
        raise ValueError(f"targets shape {targets.shape} != logits shape {(n_rows, n_cols)}")
    # Targets are labels, never learned: gradients stop here in every loss (and in the chunked variant).
    return jax.lax.stop_gradient(targets.astype(jnp.float32))


def _soft_cross_entropy_rows(logits: Array, targets: Array, col_ok: Array, row_ok: Array):
    """Per-row CE against row-normalised targets, over candidate columns col_ok; rows without mass excluded.

    col_ok is [C] (the same candidates for every row) or [R, C] (per-row candidates).
    """
    cmask = col_ok if col_ok.ndim == 2 else col_ok[None, :]
    masked = jnp.where(cmask, logits, _NEG)
    logp = jax.nn.log_softmax(masked, axis=1)
    t = targets * row_ok[:, None] * cmask
    mass = t.sum(axis=1)
    has_pos = mass > 0
    p = t / jnp.where(has_pos, mass, 1.0)[:, None]
    ce = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=1)
    n = has_pos.sum()
    loss = jnp.sum(jnp.where(has_pos, ce, 0.0)) / jnp.maximum(n, 1)
    # Top-1 hit: the arg-max candidate carries positive target weight.
    hit = jnp.take_along_axis(p, jnp.argmax(masked, axis=1)[:, None], axis=1)[:, 0] > 0
    acc = jnp.sum(hit & has_pos) / jnp.maximum(n, 1)
    return loss, acc, n


def _share_coefficients(own: Array, sums: Array, own_share: float | Array) -> tuple[Array, Array]:
    """(d, alpha) of rows with own-pair weight `own` and target mass `sums`: the row's distribution is
    alpha * T off the pair itself and d on it, where d = max(own_share, own / sums) for rows whose own pair
    has weight (the related pairs share the rest in proportion to T), else the plain own / sums."""
    natural = own / jnp.where(sums > 0, sums, 1.0)
    d = jnp.where(own > 0, jnp.maximum(jnp.asarray(own_share, jnp.float32), natural), natural)
    related = sums - own
    alpha = jnp.where(related > 0, (1.0 - d) / jnp.where(related > 0, related, 1.0), 0.0)
    return d, alpha


def own_share_targets(targets: Array, own_share: float | Array) -> Array:
    """Row distributions of square targets [B, B] in which the pair itself (the diagonal) keeps at least
    `own_share` of its row whatever the batch size; related pairs share the rest in proportion to their weight.
    Rows without target mass stay zero. The columns' distributions are `own_share_targets(targets.T, ...)`."""
    t = jnp.asarray(targets, jnp.float32)
    own = jnp.diagonal(t)
    d, alpha = _share_coefficients(own, t.sum(axis=1), own_share)
    eye = jnp.eye(t.shape[0], dtype=bool)
    return jnp.where(eye, d[:, None], t * alpha[:, None])


def softmax_contrastive_with_metrics(
    a: Array, b: Array, scale: Array | float, targets: Array | None = None, valid: Array | None = None,
    exclude: Array | None = None, own_share: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Symmetric CLIP InfoNCE (soft targets allowed) plus per-direction losses, accuracies and counts.

    exclude: bool [B_a, B_b], pairs taken out of both softmax denominators (known false negatives, KEP-style);
    a pair with target weight is never excluded. own_share > 0 (square soft targets): the pair itself keeps at
    least that share of its row's and its column's target distribution (`own_share_targets`).
    """
    logits = jnp.asarray(scale, jnp.float32) * _similarity(a, b)
    n_a, n_b = logits.shape
    t = _square_targets(targets, n_a, n_b)
    ok_a = _valid_or_all(valid, n_a)
    ok_b = ok_a if valid is not None and n_a == n_b else jnp.ones((n_b,), bool)
    cols_ab, cols_ba = ok_b, ok_a
    if exclude is not None:
        keep = ~(jax.lax.stop_gradient(jnp.asarray(exclude, bool)) & (t <= 0))
        cols_ab, cols_ba = keep & ok_b[None, :], keep.T & ok_a[None, :]
    t_ab, t_ba = t, t.T
    if own_share and targets is not None:
        if n_a != n_b:
            raise ValueError(f"own_share needs a square batch (the pair itself on the diagonal), got {n_a} x {n_b}")
        masked = t * ok_a[:, None] * ok_b[None, :]
        t_ab, t_ba = own_share_targets(masked, own_share), own_share_targets(masked.T, own_share)
    loss_ab, acc_ab, n_ab = _soft_cross_entropy_rows(logits, t_ab, cols_ab, ok_a)
    loss_ba, acc_ba, n_ba = _soft_cross_entropy_rows(logits.T, t_ba, cols_ba, ok_b)
    loss = 0.5 * (loss_ab + loss_ba)
    metrics = dict(loss_a2b=loss_ab, loss_b2a=loss_ba, acc_a2b=acc_ab, acc_b2a=acc_ba,
                   n_rows_a2b=n_ab, n_rows_b2a=n_ba)
    return loss, metrics


def softmax_contrastive(
    a: Array, b: Array, scale: Array | float, targets: Array | None = None, valid: Array | None = None,
    exclude: Array | None = None, own_share: float = 0.0,
) -> Array:
    """CLIP InfoNCE over the global batch, both directions averaged; soft [B, B] targets row/column-normalised."""
    return softmax_contrastive_with_metrics(a, b, scale, targets, valid, exclude, own_share)[0]


def knowledge_distillation(
    t: Array, k: Array, scale: Array | float, targets: Array | None = None, valid: Array | None = None
) -> Array:
    """KEP text<->knowledge loss: symmetric InfoNCE between student texts and frozen teacher embeddings."""
    return softmax_contrastive(t, jax.lax.stop_gradient(k), scale, targets, valid)


def phenotype_structure_kl(
    student_logits: Array, teacher_logits: Array, temperature: float, valid: Array | None = None
) -> Array:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over (valid) rows; teacher is frozen."""
    s = student_logits.astype(jnp.float32) / temperature
    tl = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
    log_pt = jax.nn.log_softmax(tl, axis=-1)
    pt = jnp.exp(log_pt)
    kl = jnp.sum(jnp.where(pt > 0, pt * (log_pt - jax.nn.log_softmax(s, axis=-1)), 0.0), axis=-1)
    ok = _valid_or_all(valid, kl.shape[0])
    return jnp.sum(jnp.where(ok, kl, 0.0)) / jnp.maximum(ok.sum(), 1) * temperature**2


def multi_positive_infonce_with_metrics(
    emb: Array, weights: Array, scale: Array | float, valid: Array | None = None
) -> tuple[Array, dict[str, Array]]:
    """Stage-1 multi-positive InfoNCE with counts of rows that had (no) positive."""
    n = emb.shape[0]
    logits = jnp.asarray(scale, jnp.float32) * _similarity(emb, emb)
    ok = _valid_or_all(valid, n)
    off_diag = ~jnp.eye(n, dtype=bool)
    w = _square_targets(weights, n, n) * off_diag
    # A view is never its own candidate: excluding the diagonal keeps the trivial self-match out of the softmax.
    loss, _, n_pos = _soft_cross_entropy_rows(logits, w, ok[None, :] & off_diag, ok)
    # Rows with a positive are valid rows, so the valid rows without one are the difference.
    metrics = dict(n_rows=n_pos, n_rows_without_positive=ok.sum() - n_pos)
    return loss, metrics


def multi_positive_infonce(emb: Array, weights: Array, scale: Array | float, valid: Array | None = None) -> Array:
    """Stage-1 InfoNCE over one encoder's embeddings with soft positives `weights` (diagonal ignored)."""
    return multi_positive_infonce_with_metrics(emb, weights, scale, valid)[0]


def sigmoid_loss(
    a: Array, b: Array, scale: Array | float, bias: Array | float,
    labels: Array | None = None, valid: Array | None = None,
) -> Array:
    """SigLIP pairwise sigmoid loss: -sum_ij log_sigmoid(z_ij (scale a_i.b_j + bias)) / B."""
    logits = jnp.asarray(scale, jnp.float32) * _similarity(a, b) + jnp.asarray(bias, jnp.float32)
    n_a, n_b = logits.shape
    pos = _square_targets(labels, n_a, n_b) > 0
    z = jnp.where(pos, 1.0, -1.0)
    ok_a = _valid_or_all(valid, n_a)
    ok_b = ok_a if valid is not None and n_a == n_b else jnp.ones((n_b,), bool)
    pair_ok = ok_a[:, None] & ok_b[None, :]
    total = jnp.sum(jnp.where(pair_ok, jax.nn.log_sigmoid(z * logits), 0.0))
    return -total / jnp.maximum(ok_a.sum(), 1)


def adasp_loss(emb: Array, labels: Array, temperature: float = 0.04) -> Array:
    """AdaSP (adaptive sparse pairwise) loss as in KEP stage 1; labels int [B], -1 = padding."""
    x = emb.astype(jnp.float32)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    inv_t = 1.0 / temperature
    s = inv_t * _similarity(x, x)
    labels = jnp.asarray(labels)
    ok = labels >= 0
    both = ok[:, None] & ok[None, :]
    same = both & (labels[:, None] == labels[None, :])
    diff = both & ~same
    lse = jax.nn.logsumexp
    # Per anchor: soft-min of its positive similarities (self included, as in KEP) and log-sum-exp of negatives.
    hard_pos = -lse(jnp.where(same, -s, _NEG), axis=1)
    neg = lse(jnp.where(diff, s, _NEG), axis=1)
    # Per class (evaluated on every member row): hard-hard positive = soft-min over all the class's pairs,
    # hard-easy positive = soft-max over members of each member's hardest positive, negatives pooled.
    hh = -lse(jnp.where(same, -hard_pos[None, :], _NEG), axis=1)
    he = lse(jnp.where(same, hard_pos[None, :], _NEG), axis=1)
    neg_c = lse(jnp.where(same, neg[None, :], _NEG), axis=1)
    # Adaptive mix: harmonic mean of the two positive similarities (in cosine units), constant for the
    # gradient; zero when the hardest positive is anti-correlated (the class is still badly spread).
    hh_cos = jax.lax.stop_gradient(hh) / inv_t
    he_cos = jax.lax.stop_gradient(he) / inv_t
    denom = hh_cos + he_cos
    use = (hh_cos >= 0) & (denom > 0)
    wt = jnp.where(use, 2.0 * hh_cos * he_cos / jnp.where(use, denom, 1.0), 0.0)
    pos_c = wt * hh + (1.0 - wt) * he
    loss_c = jax.nn.softplus(neg_c - pos_c)  # -log(e^pos / (e^pos + e^neg))
    first = jnp.argmax(same, axis=1) == jnp.arange(labels.shape[0])
    rep = ok & first
    return jnp.sum(jnp.where(rep, loss_c, 0.0)) / jnp.maximum(rep.sum(), 1)


def _hop_weight(hop_decay: float | Array, hop: Array) -> Array:
    """hop_decay**hop in float32; for concrete decays the float64 power rounded once, as the host side does."""
    if isinstance(hop_decay, (int, float, np.floating, np.integer)):
        if not 0.0 <= hop_decay <= 1.0:
            raise ValueError(f"hop_decay must lie in [0, 1], got {hop_decay!r}")
        # Same numbers as ontology.relations.hop_weights, so host and device scores agree bit for bit. A chain
        # of selects, not a gather from the table (XLA's TPU cost model charged the gather per element ~1,200x
        # the traffic; benchmarks/RESULTS.md) nor a [..., table] one-hot (its temps count on CPU): XLA fuses
        # the chain into one elementwise loop.
        table = (float(hop_decay) ** np.arange(_MAX_HOPS + 1, dtype=np.float64)).astype(np.float32)
        hop = jnp.clip(hop, 0, _MAX_HOPS)
        weight = jnp.full(hop.shape, table[0], jnp.float32)
        for h in range(1, _MAX_HOPS + 1):
            weight = jnp.where(hop == h, table[h], weight)
        return weight
    return jnp.asarray(hop_decay, jnp.float32) ** hop.astype(jnp.float32)


def hierarchical_soft_targets(
    terms_a: Array, anc_a: Array, hops_a: Array, organs_a: Array,
    terms_b: Array, anc_b: Array, hops_b: Array, organs_b: Array,
    hop_decay: float | Array, organ_weight: float | Array, row_chunk: int | None = None,
) -> Array:
    """Ontology relation score [B_a, B_b] between examples linked to HPO terms.

    A valid term pair (x, y) scores 1 if x == y, else hop_decay**h if one is an ancestor of the other at h
    hops in the given tables (smallest h), else organ_weight if the two *examples'* organ-system sets
    intersect, else 0; the example score is the max over its valid term pairs, and an example without valid
    terms scores 0 to everything. This is ontology.relations.set_relation_scores with organ systems taken
    per example (the union of its terms' systems): identical for single-term examples. The diagonal is
    *not* forced to 1: for image-caption pairs use `targets = jnp.maximum(scores, jnp.eye(B))`, since a
    pair is always its own positive. Memory: O(row_chunk * B_b * M * N * A) comparisons (all rows at once
    when row_chunk is None).
    """
    terms_b = jnp.asarray(terms_b)
    ok_b = terms_b >= 0  # [Bb, N]
    big = jnp.iinfo(jnp.int32).max

    def one_row(row):
        ta, aa, ha, oa = row  # [M], [M, A], [M, A], [O]
        ok_a = ta >= 0
        # y in ancestors-or-self of x: hop of terms_b[q, n] within aa[m, :]
        up = jnp.where(aa[None, None, :, :] == terms_b[:, :, None, None], ha[None, None], big).min(-1)
        # x in ancestors-or-self of y: hop of ta[m] within anc_b[q, n, :]
        down = jnp.where(anc_b[:, :, None, :] == ta[None, None, :, None], hops_b[:, :, None, :], big).min(-1)
        same = jnp.where(terms_b[:, :, None] == ta[None, None, :], 0, big)
        hop = jnp.minimum(jnp.minimum(up, down), same)  # [Bb, N, M]
        pair_ok = ok_b[:, :, None] & ok_a[None, None, :]
        related = pair_ok & (hop < big)
        # hop_decay <= 1: the best related term pair has the fewest hops, so weigh per example, not per pair.
        best = jnp.where(related, hop, big).min(axis=(1, 2))  # [Bb]
        weight = jnp.where(best < big, _hop_weight(hop_decay, jnp.where(best < big, best, 0)), 0.0)
        organ_hit = ((oa[None, :, None] == organs_b[:, None, :]) & (oa[None, :, None] >= 0)).any(axis=(1, 2))
        unrelated = (pair_ok & ~related).any(axis=(1, 2))  # an unrelated term pair falls back to the organs
        fallback = jnp.where(organ_hit & unrelated, jnp.asarray(organ_weight, jnp.float32), 0.0)  # [Bb]
        return jnp.maximum(weight, fallback)

    rows = (jnp.asarray(terms_a), jnp.asarray(anc_a), jnp.asarray(hops_a), jnp.asarray(organs_a))
    if row_chunk is None:
        return jax.vmap(one_row)(rows)
    return jax.lax.map(one_row, rows, batch_size=row_chunk)


def hierarchical_pair_targets(
    rows: tuple[Array, Array, Array, Array], cols: tuple[Array, Array, Array, Array],
    row_ids: Array, col_ids: Array, hop_decay: float | Array, organ_weight: float | Array,
) -> Array:
    """Image-caption soft targets [R, C]: the rows' x columns' relation score, and 1 for a pair with itself.

    rows / cols are (terms, ancestors, hops, organs) tables of the examples (`hierarchical_soft_targets`);
    row_ids / col_ids their positions in the batch (equal ids = the same pair).
    """
    scores = hierarchical_soft_targets(*rows, *cols, hop_decay=hop_decay, organ_weight=organ_weight)
    return jnp.maximum(scores, (row_ids[:, None] == col_ids[None, :]).astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class BlockTargets:
    """Soft targets [B_a, B_b] given by a rule instead of a matrix, so a chunked loss builds them per block.

    `fn(rows, cols, row_ids, col_ids) -> [B_a, C]` builds the columns `col_ids` from the row tables
    `rows` (pytree, leading dim B_a) and those columns' slices of `cols` (pytree, leading dim B_b);
    e.g. `functools.partial(hierarchical_pair_targets, hop_decay=.., organ_weight=..)` with HPO tables.
    """

    fn: Callable[[Any, Any, Array, Array], Array]
    rows: Any
    cols: Any


def _dense_block(rows, cols, row_ids, col_ids):
    del rows, row_ids, col_ids
    return cols.T  # cols = targets.T, sliced to the block's columns


# ----------------------------------------------------------------------------------------------------------
# Memory-efficient contrastive loss: one scan over column blocks forward, one backward (custom VJP).
#
# With row/column target distributions p (rows) and q (columns), n_r / n_c anchors with a positive:
#   L = 1/2 [ sum_i has_r(i)/n_r LSE_j l_ij + sum_j has_c(j)/n_c LSE_i l_ij ] - sum_ij W_ij l_ij,
#   W = (p / n_r + q / n_c) / 2 = T_ij (row_w(i) + col_w(j)),  row_w = has_r / (2 n_r rowsum), col_w alike,
#   dL/dl_ij = has_r(i)/(2 n_r) softmax_j(l)_ij + has_c(j)/(2 n_c) softmax_i(l)_ij - W_ij.
# Row LSEs accumulate online across blocks; each block's column LSEs are complete (all rows are present).
# Soft targets T are rebuilt per [B_a, chunk] block from their rule (BlockTargets), never held whole.
# ----------------------------------------------------------------------------------------------------------


def _block_logits(a, b_blk, scale):
    sim = _similarity(a, b_blk)
    return sim, scale * sim


def _blocks(x, n_blocks: int, chunk: int):
    """[n_blocks * chunk, ...] -> [n_blocks, chunk, ...] for every leaf."""
    return jax.tree.map(lambda y: y.reshape(n_blocks, chunk, *y.shape[1:]), x)


def _soft_block(fn, rows, cols_blk, row_ok, cok, start, chunk):
    """The block's targets T[:, start:start+chunk], zero at invalid rows and columns (float32, no gradient)."""
    row_ids = jnp.arange(row_ok.shape[0])
    t = fn(rows, cols_blk, row_ids, start + jnp.arange(chunk)).astype(jnp.float32)
    return jax.lax.stop_gradient(t * row_ok[:, None] * cok[None, :])


def _block_weights(fn, soft, row_ok, x, chunk):
    """W for one block (x = the block's scan inputs), or None with identity targets."""
    if soft is None:
        return None
    rows, row_w = soft
    t = _soft_block(fn, rows, x["cols"], row_ok, x["col_ok"], x["start"], chunk)
    return t * (row_w[:, None] + x["col_w"][None, :])


def _scan_inputs(b, col_ok, col_coef, soft_cols, ex_cols, chunk):
    n_blocks = b.shape[0] // chunk
    xs = dict(b=b, col_ok=col_ok, col_coef=col_coef)
    if soft_cols is not None:
        xs.update(cols=soft_cols[0], col_w=soft_cols[1])
    if ex_cols is not None:
        xs["ex_cols"] = ex_cols
    xs = _blocks(xs, n_blocks, chunk)
    xs["start"] = jnp.arange(n_blocks) * chunk
    return xs


def _candidates(ex_fn, ex_rows, row_ok, x, chunk):
    """(row-direction, column-direction) bool [B_a, chunk] masks of the block's softmax candidates."""
    keep_r, keep_c = x["col_ok"][None, :] > 0, row_ok[:, None] > 0
    if ex_rows is not None:
        row_ids = jnp.arange(row_ok.shape[0])
        col_ids = x["start"] + jnp.arange(chunk)
        # Excluded pairs leave both softmaxes; the pair itself never does (identity targets).
        ex = ex_fn(ex_rows, x["ex_cols"], row_ids, col_ids) & (row_ids[:, None] != col_ids[None, :])
        keep_r, keep_c = keep_r & ~ex, keep_c & ~ex
    return keep_r, keep_c


def _chunked_forward(chunk: int, fns, a, b, scale, aux):
    fn, ex_fn = fns
    w_diag, row_coef, col_coef, row_ok, col_ok, soft, soft_cols, (ex_rows, ex_cols) = aux
    xs = _scan_inputs(b, col_ok, col_coef, soft_cols, ex_cols, chunk)

    def step(carry, x):
        m, s, wsum = carry
        _, logit = _block_logits(a, x["b"], scale)
        keep_r, keep_c = _candidates(ex_fn, ex_rows, row_ok, x, chunk)
        masked_r = jnp.where(keep_r, logit, _NEG)
        m_new = jnp.maximum(m, masked_r.max(axis=1))
        s = s * jnp.exp(m - m_new) + jnp.exp(masked_r - m_new[:, None]).sum(axis=1)
        col_lse = jax.nn.logsumexp(jnp.where(keep_c, logit, _NEG), axis=0)
        w_blk = _block_weights(fn, soft, row_ok, x, chunk)
        if w_blk is not None:
            wsum = wsum + jnp.sum(w_blk * logit)
        return (m_new, s, wsum), col_lse

    init = (jnp.full((a.shape[0],), _NEG, jnp.float32), jnp.zeros((a.shape[0],), jnp.float32), jnp.float32(0))
    (m, s, wsum), col_lse = jax.lax.scan(step, init, xs)
    row_lse = m + jnp.log(s)
    col_lse = col_lse.reshape(-1)
    # Identity targets never need a [B, B] weight matrix: their weighted logit sum is the paired diagonal.
    if w_diag is not None:
        diag = scale * jnp.sum(a.astype(jnp.float32) * b[: a.shape[0]].astype(jnp.float32), axis=1)
        wsum = wsum + jnp.sum(w_diag * diag)
    loss = jnp.sum(row_coef * row_lse) + jnp.sum(col_coef * col_lse) - wsum
    return loss, (row_lse, col_lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked_core(chunk: int, fns, a, b, scale, aux):
    return _chunked_forward(chunk, fns, a, b, scale, aux)[0]


def _chunked_core_fwd(chunk, fns, a, b, scale, aux):
    loss, (row_lse, col_lse) = _chunked_forward(chunk, fns, a, b, scale, aux)
    return loss, (a, b, scale, aux, row_lse, col_lse)


def _zero_cotangent(x):
    """A zero cotangent for a non-differentiable input (float0 for integer tables)."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def _chunked_core_bwd(chunk, fns, res, g):
    fn, ex_fn = fns
    a, b, scale, aux, row_lse, col_lse = res
    w_diag, row_coef, col_coef, row_ok, col_ok, soft, soft_cols, (ex_rows, ex_cols) = aux
    n_a = a.shape[0]
    xs = _scan_inputs(b, col_ok, col_coef, soft_cols, ex_cols, chunk)
    xs["col_lse"] = col_lse.reshape(-1, chunk)

    def step(carry, x):
        da, dscale = carry
        sim, logit = _block_logits(a, x["b"], scale)
        keep_r, keep_c = _candidates(ex_fn, ex_rows, row_ok, x, chunk)
        soft_r = jnp.exp(jnp.where(keep_r, logit, _NEG) - row_lse[:, None])
        soft_c = jnp.exp(jnp.where(keep_c, logit, _NEG) - x["col_lse"][None, :])
        grad = row_coef[:, None] * soft_r + x["col_coef"][None, :] * soft_c
        w_blk = _block_weights(fn, soft, row_ok, x, chunk)
        if w_blk is not None:
            grad = grad - w_blk
        if w_diag is not None:
            is_diag = jnp.arange(n_a)[:, None] == x["start"] + jnp.arange(chunk)[None, :]
            grad = grad - jnp.where(is_diag, w_diag[:, None], 0.0)
        grad = g * grad
        da = da + scale * (grad @ x["b"].astype(jnp.float32))
        db_blk = scale * (grad.T @ a.astype(jnp.float32))
        return (da, dscale + jnp.sum(grad * sim)), db_blk

    init = (jnp.zeros(a.shape, jnp.float32), jnp.float32(0))
    (da, dscale), db = jax.lax.scan(step, init, xs)
    db = db.reshape(b.shape)
    return da.astype(a.dtype), db.astype(b.dtype), dscale.astype(scale.dtype), jax.tree.map(_zero_cotangent, aux)


_chunked_core.defvjp(_chunked_core_fwd, _chunked_core_bwd)


def _target_sums(fn, rows, cols, row_ok, col_ok, chunk):
    """Row sums [B_a], column sums [B_b padded] and the diagonal [B_a] of the targets, one block at a time."""
    xs = _blocks(dict(cols=cols, col_ok=col_ok), col_ok.shape[0] // chunk, chunk)
    xs["start"] = jnp.arange(col_ok.shape[0] // chunk) * chunk
    row_ids = jnp.arange(row_ok.shape[0])

    def step(carry, x):
        rs, diag = carry
        t = _soft_block(fn, rows, x["cols"], row_ok, x["col_ok"], x["start"], chunk)
        on_diag = row_ids[:, None] == x["start"] + jnp.arange(chunk)[None, :]
        return (rs + t.sum(axis=1), diag + jnp.where(on_diag, t, 0.0).sum(axis=1)), t.sum(axis=0)

    zeros = jnp.zeros(row_ok.shape, jnp.float32)
    (rs, diag), cs = jax.lax.scan(step, (zeros, zeros), xs)
    return rs, cs.reshape(-1), diag


def chunked_softmax_contrastive(
    a: Array, b: Array, scale: Array | float, targets: Array | BlockTargets | None = None,
    valid: Array | None = None, chunk: int = 256, own_share: float = 0.0, exclude: BlockTargets | None = None,
) -> Array:
    """softmax_contrastive's value and gradients without materialising the [B, B] logits.

    Logits are built in [B_a, chunk] column blocks, forward (online row log-sum-exp) and backward
    (recomputed blocks, custom VJP), so activation memory is O(B_a * chunk + (B_a + B_b) * D) instead of
    O(B_a * B_b). Identity targets are never materialised. Soft targets are a dense [B_a, B_b] input (itself
    O(B^2), read block by block) or a `BlockTargets` rule, rebuilt per block (O(B_a * chunk) memory);
    as in softmax_contrastive they receive no gradient, and `own_share` works as there. `exclude` (identity
    targets only) is a rule like `BlockTargets` whose fn gives bool blocks: the pairs to leave out of both
    softmax denominators, as softmax_contrastive's `exclude` matrix.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n_a, n_b = a.shape[0], b.shape[0]
    ok_a = _valid_or_all(valid, n_a)
    ok_b = ok_a if valid is not None and n_a == n_b else jnp.ones((n_b,), bool)
    pad = (-n_b) % chunk
    # Padded candidate columns are invalid columns: out of every softmax, zero weight, zero gradient.
    b_p = jnp.pad(b, ((0, pad), (0, 0)))
    row_ok = ok_a.astype(jnp.float32)
    col_ok = jnp.pad(ok_b, (0, pad)).astype(jnp.float32)
    soft = soft_cols = w_diag = None
    fn = None
    if targets is None:
        if n_a != n_b:
            raise ValueError(f"identity targets need a square batch, got {n_a} x {n_b}")
        pair = row_ok
        n = jnp.maximum(pair.sum(), 1.0)
        w_diag = pair / n  # (1/n + 1/n) / 2 on the valid diagonal
        row_coef, col_coef = 0.5 * pair / n, 0.5 * jnp.pad(pair, (0, pad)) / n
    else:
        if not isinstance(targets, BlockTargets):
            dense = _square_targets(targets, n_a, n_b)
            targets = BlockTargets(_dense_block, (), dense.T)
        fn = targets.fn
        cols = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge"), targets.cols)
        rs, cs, diag = _target_sums(fn, targets.rows, cols, row_ok, col_ok, chunk)
        has_r, has_c = rs > 0, cs > 0
        n_r, n_c = jnp.maximum(has_r.sum(), 1), jnp.maximum(has_c.sum(), 1)
        if own_share:
            if n_a != n_b:
                raise ValueError(f"own_share needs a square batch (the pair itself on the diagonal), got {n_a} x {n_b}")
            # Row i's distribution is alpha_i * T_i. off the pair and d_i on it (`own_share_targets`): the rule's
            # weights scale by alpha, and the diagonal gets the difference d - alpha * T_ii as a weight of its own.
            d_r, alpha_r = _share_coefficients(diag, rs, own_share)
            d_c, alpha_c = _share_coefficients(jnp.pad(diag, (0, pad)), cs, own_share)
            row_w = jnp.where(has_r, 0.5 * alpha_r / n_r, 0.0)
            col_w = jnp.where(has_c, 0.5 * alpha_c / n_c, 0.0)
            w_diag = (jnp.where(has_r, 0.5 * (d_r - alpha_r * diag) / n_r, 0.0)
                      + jnp.where(has_c, 0.5 * (d_c - alpha_c * jnp.pad(diag, (0, pad))) / n_c, 0.0)[:n_a])
        else:
            row_w = jnp.where(has_r, 0.5 / (jnp.where(has_r, rs, 1.0) * n_r), 0.0)
            col_w = jnp.where(has_c, 0.5 / (jnp.where(has_c, cs, 1.0) * n_c), 0.0)
        soft, soft_cols = (targets.rows, row_w), (cols, col_w)
        row_coef, col_coef = 0.5 * has_r / n_r, 0.5 * has_c / n_c
    ex_fn, excluded = None, (None, None)
    if exclude is not None:
        if targets is not None:
            raise ValueError("exclude goes with identity targets (the pair itself is the only positive)")
        ex_fn = exclude.fn
        excluded = (exclude.rows, jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1),
                                                                   mode="edge"), exclude.cols))
    aux: tuple[Any, ...] = (w_diag, jnp.asarray(row_coef, jnp.float32), jnp.asarray(col_coef, jnp.float32),
                            row_ok, col_ok, soft, soft_cols, excluded)
    return _chunked_core(chunk, (fn, ex_fn), a, b_p, jnp.asarray(scale, jnp.float32), aux)
