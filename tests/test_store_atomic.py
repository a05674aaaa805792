"""store/atomic.py: a published file is whole or absent, never half-written; temp files of a killed run
are hidden beside their target and swept up by `remove_stale_temps`."""

from __future__ import annotations

import hashlib
import os

import pytest

from mmcache.store.atomic import (
    TMP_PREFIX,
    atomic_path,
    publish,
    remove_stale_temps,
    sha256_file,
    temp_path,
    write_atomic,
)


def test_temp_path_is_hidden_beside_the_target(tmp_path):
    target = tmp_path / "logmel" / "000000.tar"
    tmp = temp_path(target)
    assert tmp.parent == target.parent and tmp.name.startswith(TMP_PREFIX) and tmp.name.startswith(".")
    assert tmp.name.endswith("000000.tar") and tmp != target


def test_write_atomic_creates_folders_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "manifest.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second, longer")  # replaces the published file
    assert target.read_bytes() == b"second, longer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]


def test_an_error_inside_atomic_path_keeps_the_old_file_and_drops_the_temp(tmp_path):
    target = tmp_path / "samples.jsonl"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl"]


def test_a_temp_never_written_is_not_published(tmp_path):
    """Leaving the block without writing the temp file fails (nothing to fsync) and publishes nothing."""
    target = tmp_path / "x.bin"
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == []


def test_publish_renames_over_the_target(tmp_path):
    tmp, target = tmp_path / ".tmp-1-f", tmp_path / "f"
    tmp.write_bytes(b"new")
    target.write_bytes(b"old")
    publish(tmp, target)
    assert target.read_bytes() == b"new" and not tmp.exists()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_sha256_file_agrees_with_hashlib_for_any_chunk_size(tmp_path, chunk):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=chunk) == (hashlib.sha256(data).hexdigest(), len(data))


def test_sha256_of_an_empty_file(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    assert sha256_file(tmp_path / "e") == (hashlib.sha256(b"").hexdigest(), 0)


def test_remove_stale_temps_deletes_only_temp_files_at_any_depth(tmp_path):
    keep = [tmp_path / "manifest.json", tmp_path / "logmel" / "000000.tar", tmp_path / "logmel" / "tmp-not-ours"]
    stale = [temp_path(tmp_path / "manifest.json"), tmp_path / "logmel" / f"{TMP_PREFIX}999-000001.tar"]
    for p in keep + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / f"{TMP_PREFIX}folder").mkdir()  # a folder with the prefix is not a temp file
    assert remove_stale_temps(tmp_path) == 2
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert (tmp_path / f"{TMP_PREFIX}folder").is_dir()
    assert remove_stale_temps(tmp_path) == 0
