"""store/hdf5.py: HDF5 shard rows read as views of the mapped file."""

from __future__ import annotations

import h5py
import numpy as np

from mmcache.store import H5ShardWriter


def test_hdf5_rows_are_views_of_the_mapped_file_when_they_lie_in_order(tmp_path, monkeypatch):
    """H5ShardWriter's datasets lie in the file as one run of rows: read_h5 views the mapped file (the
    same arrays h5py reads); a compressed dataset, whose rows are not in the file as such, is read by h5py."""
    from pathlib import Path

    from mmcache.store.hdf5 import read_h5

    rng = np.random.default_rng(2)
    rows = [
        (f"{i:08x}" + "cd" * 8, rng.normal(size=(int(t), 5)).astype(np.float16), rng.random((int(t), 2)))
        for i, t in enumerate(rng.integers(0, 90, 40))
    ]
    w = H5ShardWriter(tmp_path / "a.h5", 5)
    for k, f, t in rows:
        w.add(k, f, t)
    w.close()
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["feats"].id.get_num_chunks() >= 2  # several chunks, back to back
        with h5py.File(tmp_path / "z.h5", "w") as z:  # the same layout, compressed
            for name in ("feats", "ts"):
                z.create_dataset(name, data=f[name][()], chunks=f[name].chunks, compression="gzip")
            for name in ("offsets", "keys"):
                z.create_dataset(name, data=f[name][()])
    maps = Path("/proc/self/maps")
    for name in ("a.h5", "z.h5"):
        got = read_h5(tmp_path / name)
        assert [(k, f.tobytes(), t.tobytes()) for k, f, t in got] == [(k, f.tobytes(), t.tobytes()) for k, f, t in rows]
        assert (str(tmp_path / name) in maps.read_text()) == (name == "a.h5")  # viewed in place, or read
        assert all(f.flags.writeable for _, f, _ in got)
        del got
    monkeypatch.setenv("MMCACHE_MAP_SHARDS", "0")
    got = read_h5(tmp_path / "a.h5")
    assert str(tmp_path / "a.h5") not in maps.read_text()
    assert [k for k, _, _ in got] == [k for k, _, _ in rows]
