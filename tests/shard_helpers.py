"""Small shards shared by the store tests: fixed samples, varied samples, runs, stock tars."""

from __future__ import annotations

import io
import tarfile

import numpy as np

from mmcache.store import TarShardWriter

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


def _reference(path):
    """What tarfile + np.load make of a shard: {key: (feats, ts)}."""
    members = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            members[m.name] = np.load(io.BytesIO(tar.extractfile(m).read()), allow_pickle=False)
    keys = {n.split(".")[0] for n in members}
    return {k: (members[f"{k}.npy"], members[f"{k}.ts.npy"]) for k in keys}


def _varied(n=12, seed=1):
    """Samples of varied lengths (one of 0 steps) and dtypes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = [0, 1, 7, 16, 33][i % 5]
        dtype = np.float32 if i % 3 == 0 else np.float16
        out.append((f"{i:08x}{'ab' * 8}", rng.normal(size=(t, 6)).astype(dtype), rng.random((t, 2))))
    return out


def _write_tar(path, members, fmt=tarfile.USTAR_FORMAT):
    """A tar written by tarfile itself (stock headers, record padding) from (name, bytes) pairs."""
    from mmcache.store.arrays import npy_bytes

    with tarfile.open(path, "w", format=fmt) as tar:
        for name, arr in members:
            data = npy_bytes(arr) if isinstance(arr, np.ndarray) else arr
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _runs(seed=3):
    """A shard that repeats itself (runs of one clip length, where the reader predicts the headers
    of a whole run at once) between samples of other lengths, keys and dtypes."""
    rng = np.random.default_rng(seed)
    lengths = [16] * 40 + [3, 5] + [16] * 3 + [0] + [9] * 30 + [1]
    out = []
    for i, t in enumerate(lengths):
        dtype = np.float32 if i in (41, 77) else np.float16
        key = f"{i:08x}" + ("" if i == 60 else "c0ffee" * 2)  # one shorter key: its header is checked alone
        out.append((key, rng.normal(size=(t, 6)).astype(dtype), rng.random((t, 2))))
    return out


def _write_runs(path):
    w = TarShardWriter(path, 6)
    for k, f, t in _runs():
        w.add(k, f, t)
    w.close()
    return path
