"""store/keys.py: a sample key is 8-64 lowercase hex digits, so a shard member or row name can never be a
path, hold a dot, or be anything else; both writers refuse any other key before writing it."""

from __future__ import annotations

import numpy as np
import pytest

from mmcache.errors import CacheError
from mmcache.store.formats import FORMATS
from mmcache.store.keys import KEY_RE, check_key

GOOD = ["0" * 8, "0123456789abcdef", "f" * 64]
BAD = ["0" * 7, "f" * 65, "ABCDEF01", "abcdefg1", "../abcdef01", "abcdef01.npy", "abcdef01\n", " abcdef01", ""]
BAD += [None, 12345678, b"abcdef01"]  # not even strings


@pytest.mark.parametrize("key", GOOD)
def test_hex_digests_are_keys(key):
    check_key(key, "shard.tar")
    assert KEY_RE.fullmatch(key)


@pytest.mark.parametrize("key", BAD)
def test_anything_else_is_refused_naming_the_file(key):
    with pytest.raises(CacheError, match=r"^shard\.tar: refusing sample key .*8-64 lowercase hex"):
        check_key(key, "shard.tar")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_writers_refuse_a_bad_key_before_writing_it(name, tmp_path):
    fmt = FORMATS[name]
    path = tmp_path / f"000000{fmt.suffix}"
    w = fmt.writer(path, 2)
    w.add("abcdef01", np.zeros((1, 2), np.float16), np.zeros((1, 2)))
    with pytest.raises(CacheError, match="refusing sample key '../x'"):
        w.add("../x", np.zeros((1, 2), np.float16), np.zeros((1, 2)))
    w.close()
    assert [k for k, _, _ in fmt.read(path)] == ["abcdef01"]
