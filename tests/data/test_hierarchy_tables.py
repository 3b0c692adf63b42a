"""Hierarchical targets are not silently truncated: device tables reproduce the host rule for every term."""
import jax
import numpy as np
import pytest

from phenolip_jax import config_lib, losses
from phenolip_jax.data.pipeline import HpoEncoder
from phenolip_jax.ontology import relation_scores


def pairs_under_root(onto, max_hops):
    """(a, b) index pairs: every term under HP:0000118 with each ancestor up to max_hops + 1 hops, both ways."""
    terms = np.asarray(onto.subtree("HP:0000118"), np.int64)
    a, b = [], []
    for t in terms:
        lo, hi = onto.anc_indptr[t], onto.anc_indptr[t + 1]
        near = onto.anc_indices[lo:hi][onto.anc_hops[lo:hi] <= max_hops + 1]
        a.extend([t] * len(near))
        b.extend(near)
    a, b = np.array(a), np.array(b)
    return np.concatenate([a, b]), np.concatenate([b, a]), len(terms)


def host_scores(onto, a, b, hier, chunk=256):
    """relation_scores for each pair (a[i], b[i]) (diagonal of per-chunk square blocks)."""
    out = [np.diag(relation_scores(onto, a[i:i + chunk], b[i:i + chunk], hier.max_hops, hier.hop_decay,
                                   hier.organ_weight)) for i in range(0, len(a), chunk)]
    return np.concatenate(out)


def device_scores(enc, a, b, hier):
    """losses.hierarchical_soft_targets for each pair of single-term examples, from the pipeline's tables."""
    def one(x, y):
        ta, tb = x[None, None], y[None, None]
        s = losses.hierarchical_soft_targets(ta, anc[x][None, None], hops[x][None, None], org[x][None],
                                             tb, anc[y][None, None], hops[y][None, None], org[y][None],
                                             hier.hop_decay, hier.organ_weight)
        return s[0, 0]

    anc, hops, org = (jax.numpy.asarray(t) for t in (enc.anc, enc.hops, enc.organ))
    return np.asarray(jax.jit(jax.vmap(one))(a.astype(np.int32), b.astype(np.int32)))


def test_device_targets_equal_host_targets_for_every_phenotype_term(onto):
    cfg = config_lib.load_config("stage2")
    hier = cfg.loss.hierarchy
    enc = HpoEncoder(onto, cfg.data.max_hpo, cfg.data.max_ancestors, hier.max_hops, cfg.data.max_organs)
    a, b, n_terms = pairs_under_root(onto, hier.max_hops)
    assert n_terms > 18000
    host = host_scores(onto, a, b, hier)
    device = device_scores(enc, a, b, hier)
    wrong = np.flatnonzero(device != host)
    assert not len(wrong), (f"{len(wrong)} pairs differ, e.g. {onto.ids[a[wrong[0]]]} / {onto.ids[b[wrong[0]]]}: "
                            f"device {device[wrong[0]]} host {host[wrong[0]]}")
    assert (host == np.float32(hier.hop_decay) ** 2).sum() > 0  # 2-hop pairs are in the comparison


def test_a_cut_table_warns_with_the_count_and_fails_when_strict(onto):
    with pytest.warns(UserWarning, match=r"max_ancestors=8 cuts the ancestor table of 174 of \d+ terms"):
        HpoEncoder(onto, 4, 8, 2, 4)
    with pytest.raises(ValueError, match=r"config\.data\.max_ancestors=8 cuts"):
        HpoEncoder(onto, 4, 8, 2, 4, strict=True)
