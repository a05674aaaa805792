"""layout.py: subsampling, aligned grids and padding of a field's steps."""

from __future__ import annotations

import numpy as np
import torch
from mmfit_helpers import cfg

import mmcache
from mmfit.data import load_data
from mmfit.trainer import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_aligned_fields_share_the_first_fields_grid(labelled, tmp_path):
    data = load_data(cfg(labelled, tmp_path, align=True, fields=["resnet18", "logmel", "minilm-text"]).data)
    # resnet18 and logmel both run at 2 steps/s: aligned step for step; text cues cover their halves of the clip
    assert torch.equal(data.masks["resnet18"], data.masks["logmel"])
    assert data.masks["minilm-text"].sum() > 0 and data.feats["resnet18"].shape[1] == data.feats["logmel"].shape[1]
    r = train(cfg(labelled, tmp_path, align=True, fusion="attention", epochs=4))
    assert r.val["accuracy"] >= 0.5


def test_token_fields_are_padded_to_their_longest_sample_only(labelled, tmp_path):
    data = load_data(cfg(labelled, tmp_path, fusion="attention", max_steps=64).data)
    cache = mmcache.open_cache(labelled / "cache")
    for name in data.field_names:
        longest = max(len(f) for f in cache.load_field(name).feats)
        assert data.feats[name].shape[1] == min(longest, 64)
        assert bool(data.masks[name][:, -1].any())  # no column is padding for every sample
    short = load_data(cfg(labelled, tmp_path, fusion="attention", max_steps=2).data)
    assert all(short.feats[n].shape[1] <= 2 for n in short.field_names)


def test_layout_field_subsamples_like_the_per_sample_rule():
    from mmfit.layout import layout_field, subsample

    rng = np.random.default_rng(0)
    lengths = [0, 3, 8, 8, 20, 33, 1]
    raw = [(rng.normal(size=(n, 5)).astype(np.float16), rng.random((n, 2))) for n in lengths]
    raw[2] = None  # absent for this field
    x, mask = layout_field("f", raw, [None] * len(raw), 8, 5)
    for i, item in enumerate(raw):
        want = np.zeros((8, 5), np.float16)
        want_mask = np.zeros(8, bool)
        if item is not None:
            keep = subsample(len(item[0]), 8)
            want[: len(keep)], want_mask[: len(keep)] = item[0][keep], True
        assert np.array_equal(x[i], want) and np.array_equal(mask[i], want_mask), i
