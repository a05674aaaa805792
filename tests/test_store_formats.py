"""store/formats.py: every shard format's writer output is read back identically by all its readers
(read a file, parse a buffer, stream a byte stream, open for random access by key)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mmcache.errors import CacheError
from mmcache.store.formats import FORMATS, shard_format

KEYS = ["00112233", "aa11bb22cc33dd44ee55ff66", "0123456789abcdef" * 4]  # 8, 24 and 64 hex digits


def samples():
    rng = np.random.default_rng(5)
    return [
        (KEYS[0], rng.normal(size=(4, 6)).astype(np.float16), rng.random((4, 2))),
        (KEYS[1], np.zeros((0, 6), np.float16), np.zeros((0, 2))),  # a clip with no steps
        (KEYS[2], rng.normal(size=(9, 6)).astype(np.float16), rng.random((9, 2))),
    ]


def as_bytes(rows) -> list[tuple]:
    return [(k, f.dtype.str, f.shape, f.tobytes(), t.dtype.str, t.shape, t.tobytes()) for k, f, t in rows]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_reader_returns_what_the_writer_wrote(name, tmp_path):
    fmt = shard_format(name)
    assert fmt is FORMATS[name] and fmt.name == name
    path = tmp_path / f"000000{fmt.suffix}"
    w = fmt.writer(path, 6)
    for k, f, t in samples():
        w.add(k, f, t)
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # published under its own name only
    want = as_bytes(samples())
    assert as_bytes(fmt.read(path)) == want
    assert as_bytes(fmt.read(str(path))) == want
    if fmt.parse is not None:
        assert as_bytes(fmt.parse(path.read_bytes(), "label")) == want
        assert as_bytes(fmt.parse(bytearray(path.read_bytes()), "label")) == want
    if fmt.stream is not None:
        with open(path, "rb") as stream:
            assert as_bytes(fmt.stream(stream, "label")) == want
    handle = fmt.open(path)
    try:
        assert len(handle) == len(want)
        for k, f, t in reversed(samples()):  # any order
            got = handle.read(k)
            assert as_bytes([(k, *got)]) == as_bytes([(k, f, t)])
        assert sorted(handle.index) == sorted(KEYS)  # callers look a key up here before reading it
    finally:
        handle.close()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_reader_names_a_cut_file(name, tmp_path):
    fmt = FORMATS[name]
    path = tmp_path / f"000000{fmt.suffix}"
    w = fmt.writer(path, 6)
    for k, f, t in samples():
        w.add(k, f, t)
    w.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    readers = [lambda: fmt.read(path), lambda: fmt.open(path).read(KEYS[2])]
    if fmt.parse is not None:
        readers.append(lambda: fmt.parse(path.read_bytes(), str(path)))
    if fmt.stream is not None:
        readers.append(lambda: list(fmt.stream(io.BytesIO(path.read_bytes()), str(path))))
    for read in readers:
        with pytest.raises(CacheError, match=path.name):
            read()


def test_the_table_lists_each_format_once_with_its_own_suffix():
    assert sorted(FORMATS) == ["hdf5", "webdataset"]
    assert {f.suffix for f in FORMATS.values()} == {".tar", ".h5"}
    assert FORMATS["hdf5"].parse is not None and FORMATS["hdf5"].stream is None  # h5py needs random access
    with pytest.raises(CacheError, match="unknown shard format 'zarr'; known: webdataset, hdf5"):
        shard_format("zarr")
