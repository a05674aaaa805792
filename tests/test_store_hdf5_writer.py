"""store/hdf5_writer.py: the ragged HDF5 layout (feats, offsets, keys)."""

from __future__ import annotations

import h5py
import numpy as np
from shard_helpers import KEYS, samples, write

from mmcache.store import H5ShardWriter
from mmcache.store.hdf5 import iter_h5


def test_hdf5_ragged_layout(tmp_path):
    write(H5ShardWriter, tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["feats"].shape == (8, 8) and f["feats"].dtype == np.float16
        assert list(f["offsets"][()]) == [0, 3, 8]
        assert [k.decode() for k in f["keys"][()]] == KEYS
    got = list(iter_h5(tmp_path / "a.h5"))
    assert [g[0] for g in got] == KEYS and np.array_equal(got[1][1], samples()[1][1])
