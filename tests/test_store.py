"""Tar and HDF5 shards: deterministic bytes, stock readers, refusal of hostile content."""

from __future__ import annotations

import io
import tarfile

import h5py
import numpy as np
import pytest
import webdataset as wds

from mmcache.errors import CacheError
from mmcache.store.arrays import load_npy
from mmcache.store.hdf5 import H5ShardWriter, iter_h5
from mmcache.store.tar import TarShardWriter, iter_tar

KEYS = ["aa11bb22cc33dd44ee55ff66", "0123456789abcdef01234567"]


def samples(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (k, rng.normal(size=(n, 8)).astype(np.float16), np.arange(2 * n, dtype=np.float64).reshape(n, 2))
        for k, n in zip(KEYS, (3, 5), strict=True)
    ]


def write(writer_cls, path):
    w = writer_cls(path, 8)
    for k, f, t in samples():
        w.add(k, f, t)
    w.close()
    return w


def test_tar_round_trip_and_deterministic_bytes(tmp_path):
    write(TarShardWriter, tmp_path / "a.tar")
    write(TarShardWriter, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    got = list(iter_tar(tmp_path / "a.tar"))
    for (k, f, t), (k2, f2, t2) in zip(got, samples(), strict=True):
        assert k == k2 and np.array_equal(f, f2) and np.array_equal(t, t2) and f.dtype == np.float16
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, 0, "")}


def test_stock_webdataset_reads_the_tar(tmp_path):
    write(TarShardWriter, tmp_path / "a.tar")
    ds = wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False).decode()
    got = {s["__key__"]: s for s in ds}
    assert set(got) == set(KEYS)
    k, f, t = samples()[1]
    assert np.array_equal(got[k]["npy"], f) and np.array_equal(got[k]["ts.npy"], t)


def test_hdf5_ragged_layout(tmp_path):
    write(H5ShardWriter, tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["feats"].shape == (8, 8) and f["feats"].dtype == np.float16
        assert list(f["offsets"][()]) == [0, 3, 8]
        assert [k.decode() for k in f["keys"][()]] == KEYS
    got = list(iter_h5(tmp_path / "a.h5"))
    assert [g[0] for g in got] == KEYS and np.array_equal(got[1][1], samples()[1][1])


def test_abort_leaves_nothing(tmp_path):
    w = TarShardWriter(tmp_path / "a.tar", 8)
    w.add(*samples()[0])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def _tar_with(tmp_path, name, data):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../escape.npy", "/abs/aa11bb22.npy", "aa11bb22cc.pyd", "aa11bb22cc.pth"])
def test_hostile_member_names_are_refused(tmp_path, name):
    with pytest.raises(CacheError, match="unexpected member"):
        list(iter_tar(_tar_with(tmp_path, name, b"x")))


def test_object_npy_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CacheError):
        load_npy(buf.getvalue(), "x.npy")
