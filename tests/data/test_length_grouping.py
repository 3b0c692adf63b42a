"""Length grouping (data.length_group_window): windows reordered, not changed; one bucket per global batch on
every process; exact resume; the config check."""
import grain
import numpy as np
import pytest

from phenolip_jax.data.length_groups import LengthGroupedMapDataset, window_order
from phenolip_jax.data.pipeline import bucket_of, make_train_iterator, resolve_config
from tests.data.test_length_buckets import BUCKETS, CFG, MAX_LEN, assert_resume_exact

WINDOW = 3  # 3 global batches of 4: two windows per 24-example epoch
GROUPED = dict(CFG, length_buckets=BUCKETS, length_group_window=WINDOW)


def _batches(records, root, tok, onto, cfg, n=12, **kw):
    it = make_train_iterator(cfg, records, tok, onto, seed=3, image_root=root, **kw)
    return [next(it) for _ in range(n)]


def test_window_order_sorts_chunks_and_permutes_them():
    lengths = np.array([5, 1, 4, 1, 3, 9, 2, 6])
    order = window_order(lengths, group=2, seed=0, window=0)
    assert sorted(order) == list(range(8))
    chunks = lengths[order].reshape(4, 2)
    assert sorted(map(tuple, chunks)) == [(1, 1), (2, 3), (4, 5), (6, 9)]
    assert len({tuple(window_order(lengths, group=2, seed=0, window=w)) for w in range(8)}) > 1  # drawn per window


def test_a_partial_last_window_keeps_its_order():
    lengths = grain.MapDataset.source(np.arange(10)[::-1].copy())
    ds = LengthGroupedMapDataset(grain.MapDataset.range(10), lengths, window=2, group=2, seed=0)
    out = [ds[i] for i in range(10)]
    assert sorted(out[:4]) == [0, 1, 2, 3] and sorted(out[4:8]) == [4, 5, 6, 7] and out[8:] == [8, 9]


def test_windows_are_reordered_not_changed_and_buckets_shrink(mixed_lengths, tok, onto):
    root, records = mixed_lengths
    plain = _batches(records, root, tok, onto, dict(CFG, length_buckets=BUCKETS))
    grouped = _batches(records, root, tok, onto, GROUPED)
    for w in range(0, len(plain), WINDOW):
        ids = [np.concatenate([b["caption_id"] for b in run[w:w + WINDOW]]) for run in (plain, grouped)]
        assert sorted(ids[0]) == sorted(ids[1])  # the same examples in each window
        spans = sorted((int(m.sum(1).min()), int(m.sum(1).max()))
                       for m in (b["attention_mask"] for b in grouped[w:w + WINDOW]))
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # batches hold disjoint length ranges
    for b in grouped:
        longest = int(b["attention_mask"].sum(1).max())
        assert b["input_ids"].shape[1] == bucket_of(longest, BUCKETS, MAX_LEN)
    widths = [sum(b["input_ids"].shape[1] for b in run) for run in (plain, grouped)]
    assert widths[1] < widths[0], widths


def test_processes_see_disjoint_examples_and_agree_on_buckets(mixed_lengths, tok, onto):
    root, records = mixed_lengths
    one = _batches(records, root, tok, onto, GROUPED, n=6)
    parts = [_batches(records, root, tok, onto, dict(GROUPED, per_host_batch_size=2), n=6,
                      process_index=pi, process_count=2) for pi in range(2)]
    for k, whole in enumerate(one):
        a, b = parts[0][k], parts[1][k]
        assert not set(a["caption_id"]) & set(b["caption_id"])
        assert sorted(np.concatenate([a["caption_id"], b["caption_id"]])) == sorted(whole["caption_id"])
        assert a["input_ids"].shape[1] == b["input_ids"].shape[1] == whole["input_ids"].shape[1]


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_is_exact_with_grouping(mixed_lengths, tok, onto, workers):
    # 5 batches stop mid-window, and the next ones cross into the next window and epoch.
    assert_resume_exact(dict(GROUPED, workers=workers), mixed_lengths, tok, onto)


@pytest.mark.parametrize("bad", [dict(length_group_window=2), dict(length_group_window=-1, length_buckets=BUCKETS)])
def test_grouping_needs_buckets_and_fails_naming_the_field(bad):
    with pytest.raises(ValueError, match="data.length_group_window"):
        resolve_config(dict(CFG, **bad))
