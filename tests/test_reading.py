"""reading.py: a cache's listed files read through a transport and parsed by their shard format, for plain
reads (`iter_file`) and for verify (`scan`), on real caches of both backends, locally and over http."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import h5py
import pytest
from http_helpers import serve

import mmcache
from mmcache.errors import CacheError
from mmcache.reading import iter_file, records, scan
from mmcache.store.formats import FORMATS
from mmcache.synth import CLASSES, make_clip
from mmcache.transport import HttpTransport, LocalTransport

BACKENDS = ["webdataset", "hdf5"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    """Two clips with audio and one without, in shards of 2, extracted with each backend."""
    d = tmp_path_factory.mktemp("reading")
    make_clip(d / "videos" / "a.mp4", duration=1.0, style=CLASSES[0])
    make_clip(d / "videos" / "b.mp4", duration=1.0, style=CLASSES[1])
    make_clip(d / "videos" / "c.mp4", duration=1.0, audio=False)
    made = {}
    for backend in BACKENDS:
        made[backend] = d / backend
        mmcache.extract([d / "videos"], ["logmel:fps=2"], made[backend], shard_size=2, backend=backend)
    return made


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def field_files(root: Path) -> list[dict]:
    return list(manifest(root)["fields"]["logmel"]["files"].values())


def as_bytes(samples) -> list[tuple]:
    return [(k, f.dtype.str, f.shape, f.tobytes(), t.dtype.str, t.tobytes()) for k, f, t in samples]


def alter_a_feature_byte(path: Path, backend: str) -> None:
    """Change one byte inside the first sample's features: the file still parses, its digest differs."""
    data = bytearray(path.read_bytes())
    if backend == "webdataset":
        with tarfile.open(path) as tar:
            start = tar.getmembers()[0].offset_data  # the first member's .npy: past its header, a feature byte
        pos = start + 10 + int.from_bytes(data[start + 8 : start + 10], "little") + 1
    else:
        with h5py.File(path, "r") as f:
            dset = f["feats"]
            pos = (dset.id.get_offset() if dset.chunks is None else dset.id.get_chunk_info(0).byte_offset) + 1
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_file_reads_what_the_format_reads(caches, backend):
    root, fmt = caches[backend], FORMATS[backend]
    t = LocalTransport(root)
    entries = field_files(root)
    assert [e["count"] for e in entries] == [2, 0]  # the silent clip has no audio: an empty file
    for entry in entries:
        want = as_bytes(fmt.read(root / entry["path"]))
        assert len(want) == entry["count"]
        assert as_bytes(iter_file(t, entry, fmt)) == want
        assert as_bytes(iter_file(t, entry, fmt, check=True)) == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_file_compares_digests_only_when_asked_locally(caches, backend, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(caches[backend], root)
    fmt, t = FORMATS[backend], LocalTransport(root)
    entry = field_files(root)[0]
    before = as_bytes(fmt.read(root / entry["path"]))
    alter_a_feature_byte(root / entry["path"], backend)
    plain = as_bytes(iter_file(t, entry, fmt))  # local plain reads do not hash (verify does)
    assert plain == as_bytes(fmt.read(root / entry["path"])) and plain != before
    with pytest.raises(CacheError, match=f"{entry['path']}: sha256 mismatch"):
        list(iter_file(t, entry, fmt, check=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_reports_size_digest_and_records(caches, backend, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(caches[backend], root)
    fmt, t = FORMATS[backend], LocalTransport(root)
    entry = field_files(root)[0]
    found = scan(t, entry, fmt)
    assert (found.size, found.sha256, found.error, found.data) == (entry["bytes"], entry["sha256"], None, None)
    want, error = records(iter(fmt.read(root / entry["path"])))
    assert error is None and found.records == want and len(want) == 2
    assert [r[0] for r in want] == [k for k, _, _ in fmt.read(root / entry["path"])]
    assert all(r[1] == "float16" and r[4] == "float64" and r[5] for r in want)
    index = manifest(root)["shards"]["000000"]  # a samples index: its bytes, not parsed
    found = scan(t, index, None)
    assert found.data == (root / index["path"]).read_bytes() and found.sha256 == index["sha256"]
    # the same size, other bytes: hashed, not parsed
    alter_a_feature_byte(root / entry["path"], backend)
    found = scan(t, entry, fmt)
    assert found.size == entry["bytes"] and found.sha256 != entry["sha256"] and found.records is None
    # another size: neither read nor hashed
    with open(root / entry["path"], "ab") as f:
        f.write(b"\0" * 512)
    found = scan(t, entry, fmt)
    assert (found.size, found.sha256, found.records) == (entry["bytes"] + 512, "", None)


def test_scan_names_a_file_that_matches_its_entry_but_does_not_parse(caches, tmp_path):
    """A manifest that lists a damaged file's own size and digest: the digest matches, the parse fails."""
    root = tmp_path / "cache"
    shutil.copytree(caches["webdataset"], root)
    entry = field_files(root)[0]
    path = root / entry["path"]
    data = path.read_bytes()[: -1024 - 512]  # the end blocks and part of the last member: cut
    path.write_bytes(data)
    listed = {**entry, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    found = scan(LocalTransport(root), listed, FORMATS["webdataset"])
    assert found.sha256 == listed["sha256"] and found.error is not None and entry["path"] in found.error
    assert found.records is not None and len(found.records) < 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_reads_and_scans_give_what_local_ones_give(caches, backend, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(caches[backend], root)
    fmt, local = FORMATS[backend], LocalTransport(root)
    entries = field_files(root)
    with serve(tmp_path) as base:
        remote = HttpTransport(f"{base}/cache/")
        for entry in entries:
            assert as_bytes(iter_file(remote, entry, fmt)) == as_bytes(iter_file(local, entry, fmt))
            got, want = scan(remote, entry, fmt), scan(local, entry, fmt)
            assert (got.size, got.sha256, got.records, got.error) == (want.size, want.sha256, want.records, None)
        index = manifest(root)["shards"]["000000"]
        assert scan(remote, index, None).data == scan(local, index, None).data
        # remote reads are checked by default: an altered file is an error naming its URL
        entry = entries[0]
        alter_a_feature_byte(root / entry["path"], backend)
        with pytest.raises(CacheError, match=f"{base}/cache/{entry['path']}: sha256 mismatch"):
            list(iter_file(remote, entry, fmt))
        found = scan(remote, entry, fmt)
        assert found.size == entry["bytes"] and found.sha256 != entry["sha256"]
        # a stream is parsed while it is hashed; a temp copy only once its digest matches
        assert (found.records is not None) == (backend == "webdataset")
