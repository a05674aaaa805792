"""mmfit/batches.py: row chunks gathered from memory, standardisation that keeps padding at 0, and
pooling a field to its masked mean over time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfit.batches import memory_chunks, normalise, pool_field


def fields(n: int = 10, t: int = 5, d: int = 3):
    gen = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(n, t, d, generator=gen).half(), "b": torch.randn(n, 2, 4, generator=gen)}
    lengths = torch.tensor([5, 3, 0, 1, 5, 2, 4, 0, 5, 1])[:n]
    masks = {"a": torch.arange(t) < lengths[:, None], "b": torch.ones(n, 2, dtype=torch.bool)}
    return feats, masks


def test_chunks_cover_the_rows_in_order_with_their_own_features():
    feats, masks = fields()
    rows = np.array([7, 2, 9, 0, 4])
    chunks = list(memory_chunks(feats, masks, rows, batch_size=2))
    assert [c.idx.tolist() for c in chunks] == [[7, 2], [9, 0], [4]]
    for c in chunks:
        for f in feats:
            assert torch.equal(c.feats[f], feats[f][c.idx]) and torch.equal(c.masks[f], masks[f][c.idx])
        assert c.grids is None


def test_shuffled_chunks_are_a_seeded_permutation_of_the_rows():
    feats, masks = fields()
    rows = np.arange(10)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return [i for c in memory_chunks(feats, masks, rows, 3, generator=gen) for i in c.idx.tolist()]

    assert sorted(order(0)) == list(range(10))
    assert order(0) == order(0) and order(0) != order(1) and order(0) != list(range(10))


def test_normalise_standardises_present_steps_and_keeps_padding_zero():
    feats, masks = fields()
    x, m = feats["a"].float(), masks["a"]
    mean, std = np.array([1.0, -2.0, 0.5], np.float32), np.array([2.0, 4.0, 0.25], np.float32)
    out = normalise(x, m, (mean, std))
    assert torch.allclose(out[m], (x[m] - torch.tensor(mean)) / torch.tensor(std))
    assert torch.count_nonzero(out[~m]) == 0


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_pool_field_is_the_masked_mean_whatever_the_chunk(chunk):
    feats, masks = fields()
    x, m = feats["a"], masks["a"]
    pooled, present = pool_field(x, m, chunk=chunk)
    assert pooled.shape == (10, 1, 3) and pooled.dtype == torch.float32 and present.shape == (10, 1)
    for i in range(10):
        if m[i].any():
            assert torch.allclose(pooled[i, 0], x[i][m[i]].float().mean(0), atol=1e-6) and present[i, 0]
        else:  # nothing present: zeros, and flagged absent
            assert not pooled[i].any() and not present[i, 0]


def test_pooling_normalised_equals_normalising_the_pool():
    feats, masks = fields()
    x, m = feats["a"], masks["a"]
    stats = (np.array([0.3, -0.1, 2.0], np.float32), np.array([1.5, 0.5, 3.0], np.float32))
    pooled, present = pool_field(x, m, stats)
    steps = normalise(x.float(), m, stats)
    for i in range(10):
        if m[i].any():
            assert torch.allclose(pooled[i, 0], steps[i][m[i]].mean(0), atol=1e-5)
    assert not pooled[~present[:, 0]].any()  # absent rows stay exactly 0 after normalising
