"""store/arrays.py: which .npy payloads a shard may hold."""

from __future__ import annotations

import io

import numpy as np
import pytest
from shard_helpers import _write_tar

from mmcache.errors import CacheError
from mmcache.store.arrays import load_npy
from mmcache.store.tar import iter_tar


def test_object_npy_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CacheError):
        load_npy(buf.getvalue(), "x.npy")


def test_npy_payload_rules(tmp_path):
    from mmcache.store.arrays import npy_bytes

    ts = np.zeros((2, 2))
    key = "0123456789abcdef"
    ok = {
        "big-endian": np.arange(8, dtype=">f4").reshape(2, 4),
        "fortran": np.asfortranarray(np.arange(8, dtype=np.float32).reshape(2, 4)),
        "bool": np.ones((2, 3), bool),
        "int": np.arange(6, dtype=np.int16).reshape(2, 3),
    }
    for name, arr in ok.items():
        data = io.BytesIO()
        np.save(data, arr, allow_pickle=False)
        path = _write_tar(tmp_path / f"{name}.tar", [(f"{key}.npy", data.getvalue()), (f"{key}.ts.npy", ts)])
        ((_, got, _),) = list(iter_tar(path))
        assert np.array_equal(got, arr) and got.dtype == arr.dtype, name
    good = npy_bytes(np.zeros((2, 4), np.float16))
    bad = {
        "trailing bytes": (good + b"\0" * 8, "not a plain .npy"),
        "cut payload": (good[:-2], "not a plain .npy"),
        "complex": (npy_bytes(np.zeros((2, 2), np.complex64)), "refusing .npy with dtype"),
        "text": (npy_bytes(np.array([["a", "b"]])), "refusing .npy with dtype"),
        "not npy": (b"PK\x03\x04" + b"\0" * 60, "not a plain .npy"),
    }
    for payload, words in bad.values():
        path = _write_tar(tmp_path / "bad.tar", [(f"{key}.npy", payload), (f"{key}.ts.npy", ts)])
        with pytest.raises(CacheError, match=words):
            list(iter_tar(path))
        with pytest.raises(CacheError, match=words):
            load_npy(payload, "x.npy")
    path = _write_tar(tmp_path / "twice.tar", [(f"{key}.npy", good), (f"{key}.npy", good)])
    with pytest.raises(CacheError, match="twice"):
        list(iter_tar(path))
    path = _write_tar(tmp_path / "lonely.tar", [(f"{key}.npy", good)])
    with pytest.raises(CacheError, match="lacks its pair"):
        list(iter_tar(path))
