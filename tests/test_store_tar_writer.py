"""store/tar_writer.py: deterministic tar shards that stock readers read; an aborted shard leaves nothing."""

from __future__ import annotations

import tarfile

import numpy as np
import webdataset as wds
from shard_helpers import KEYS, samples, write

from mmcache.store import TarShardWriter
from mmcache.store.tar import iter_tar


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


def test_abort_leaves_nothing(tmp_path):
    w = TarShardWriter(tmp_path / "a.tar", 8)
    w.add(*samples()[0])
    w.abort()
    assert list(tmp_path.iterdir()) == []
