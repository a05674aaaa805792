"""store/files.py: a listed file is read only as a regular file reached from the cache root without a
symlink, and never past the size the caller accepts."""

from __future__ import annotations

import os

import pytest

from mmcache.errors import CacheError
from mmcache.store.files import MissingFile, check_size, checked_path, open_listed, read_listed


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    (root / "logmel").mkdir(parents=True)
    (root / "logmel" / "000000.tar").write_bytes(b"shard bytes")
    (root / "manifest.json").write_bytes(b"{}")
    return root


def read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def test_open_listed_gives_the_file_at_any_depth(cache):
    assert read_fd(open_listed(cache, "logmel/000000.tar")) == b"shard bytes"
    assert read_fd(open_listed(str(cache), "manifest.json")) == b"{}"


def test_the_cache_root_itself_may_be_a_symlink(cache, tmp_path):
    (tmp_path / "link").symlink_to(cache, target_is_directory=True)
    assert read_fd(open_listed(tmp_path / "link", "logmel/000000.tar")) == b"shard bytes"


@pytest.mark.parametrize("rel", ["", "/manifest.json", "logmel//000000.tar", "./manifest.json", "../cache/x", "a/.."])
def test_paths_that_are_not_plainly_inside_the_cache_are_refused(cache, rel):
    with pytest.raises(CacheError, match="not a path inside the cache"):
        open_listed(cache, rel)


def test_a_missing_file_folder_or_root_is_missing_file(cache, tmp_path):
    for root, rel, named in [
        (cache, "logmel/000001.tar", "logmel/000001.tar"),
        (cache, "mfcc/000000.tar", "mfcc"),
        (tmp_path / "gone", "manifest.json", "gone"),
    ]:
        with pytest.raises(MissingFile, match=f"{named}: missing"):
            open_listed(root, rel)


def test_a_symlinked_file_or_folder_inside_the_cache_is_refused(cache):
    (cache / "alias.tar").symlink_to(cache / "logmel" / "000000.tar")  # identical bytes, still refused
    (cache / "field").symlink_to(cache / "logmel", target_is_directory=True)
    with pytest.raises(CacheError, match=r"alias\.tar: a symlink inside the cache: refused"):
        open_listed(cache, "alias.tar")
    with pytest.raises(CacheError, match="field: a symlink inside the cache: refused"):
        open_listed(cache, "field/000000.tar")


def test_a_fifo_or_a_folder_is_refused_without_blocking(cache):
    os.mkfifo(cache / "samples.jsonl")  # nobody writes it: a plain open would wait forever
    with pytest.raises(CacheError, match="a FIFO, not a regular file: refused"):
        open_listed(cache, "samples.jsonl")
    with pytest.raises(CacheError, match="a directory, not a regular file: refused"):
        open_listed(cache, "logmel")


def test_a_file_used_as_a_folder_is_refused(cache):
    with pytest.raises(CacheError) as err:
        open_listed(cache, "manifest.json/x")
    assert str(err.value) == f"{cache / 'manifest.json'}: a regular file, not a directory: refused"


def test_check_size_compares_with_the_manifest(cache):
    fd = open_listed(cache, "logmel/000000.tar")
    try:
        assert check_size(fd, 11, "label") == 11
        with pytest.raises(CacheError, match="label: 11 bytes, manifest says 12 \\(truncated or replaced\\)"):
            check_size(fd, 12, "label")
    finally:
        os.close(fd)


def test_checked_path_checks_then_hands_the_path_on(cache):
    assert checked_path(cache, "logmel/000000.tar") == cache / "logmel" / "000000.tar"
    assert checked_path(cache, "logmel/000000.tar", size=11) == cache / "logmel" / "000000.tar"
    with pytest.raises(CacheError, match="manifest says 10"):
        checked_path(cache, "logmel/000000.tar", size=10)
    (cache / "link.tar").symlink_to(cache / "logmel" / "000000.tar")
    with pytest.raises(CacheError, match="symlink"):
        checked_path(cache, "link.tar")


def test_read_listed_reads_up_to_the_limit_and_refuses_more(cache):
    assert read_listed(cache, "logmel/000000.tar", limit=11) == b"shard bytes"
    with pytest.raises(CacheError, match=r"000000\.tar: 11 bytes, more than the 10 expected: refused"):
        read_listed(cache, "logmel/000000.tar", limit=10)
    with pytest.raises(MissingFile):
        read_listed(cache, "nope.json", limit=10)
