"""fetched.py: the folder of remote files kept by sha256 (`--cache-dir`), with any remote transport:
here an http server (tests/test_objectstore.py covers object stores)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from http_helpers import serve
from sharing_helpers import fields_equal

from mmcache.cache import open_cache, verify_cache
from mmcache.errors import CacheError
from mmcache.fetched import FetchedFiles
from mmcache.transport import configured

pytest_plugins = ["sharing_fixtures"]


def entry_of(data: bytes, path: str = "f/000000.tar") -> dict:
    return {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_copy_is_found_by_its_digest_and_size_only(tmp_path):
    kept = FetchedFiles(tmp_path / "kept")
    data = b"shard bytes"
    e = entry_of(data)
    assert kept.get(e) is None
    kept.put(e, data)
    path = kept.get(e)
    assert path == tmp_path / "kept" / "sha256" / e["sha256"][:2] / e["sha256"][2:] and path.read_bytes() == data
    assert kept.get(entry_of(data, "other/000009.tar")) == path  # content-addressed: any path, same bytes
    assert kept.get({**e, "bytes": e["bytes"] + 1}) is None  # another size is not this file
    kept.drop(e)
    assert kept.get(e) is None and list((tmp_path / "kept").rglob(".fetch-*")) == []


def test_a_digest_that_is_not_one_never_becomes_a_path(tmp_path):
    kept = FetchedFiles(tmp_path / "kept")
    with pytest.raises(CacheError, match="not a sha256 digest"):
        kept.get({"path": "x", "bytes": 1, "sha256": "../../etc/passwd"})


def test_a_symlinked_copy_is_not_served(tmp_path):
    kept = FetchedFiles(tmp_path / "kept")
    data = b"abc"
    e = entry_of(data)
    kept.put(e, data)
    target = kept.get(e)
    (tmp_path / "elsewhere").write_bytes(data)
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere")
    assert kept.get(e) is None


def test_an_http_cache_read_twice_is_fetched_once(world, tmp_path):
    www = tmp_path / "www"
    shutil.copytree(world / "a", www / "a")
    kept = tmp_path / "kept"
    with serve(www) as base, configured(cache_dir=kept):
        url = f"{base}/a/"
        fields_equal(open_cache(url), open_cache(world / "a"))
        assert any(p.is_file() for p in kept.rglob("*"))
        shutil.rmtree(www / "a" / "mfcc")  # gone from the server: the kept copies serve it
        fields_equal(open_cache(url), open_cache(world / "a"))
        assert verify_cache(url) == ["mfcc/000000.tar: missing", "mfcc/000001.tar: missing"]  # verify: the server
