"""store/tar.py: the tar shard reader (its own parser), against tarfile + np.load, and its refusals."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from shard_helpers import _reference, _runs, _varied, _write_runs, _write_tar

from mmcache.errors import CacheError
from mmcache.store import TarShardWriter
from mmcache.store.tar import iter_tar


def _tar_with(tmp_path, name, data):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../escape.npy", "/abs/aa11bb22.npy", "aa11bb22cc.pyd", "aa11bb22cc.pth"])
def test_hostile_member_names_are_refused(tmp_path, name):
    with pytest.raises(CacheError, match="unexpected member"):
        list(iter_tar(_tar_with(tmp_path, name, b"x")))


def test_tar_reader_matches_tarfile_and_np_load(tmp_path):
    w = TarShardWriter(tmp_path / "a.tar", 6)
    for k, f, t in _varied():
        w.add(k, f, t)
    w.close()
    ref = _reference(tmp_path / "a.tar")
    got = list(iter_tar(tmp_path / "a.tar"))
    assert [k for k, _, _ in got] == [k for k, _, _ in _varied()]
    for k, f, t in got:
        assert f.dtype == ref[k][0].dtype and f.shape == ref[k][0].shape and np.array_equal(f, ref[k][0])
        assert np.array_equal(t, ref[k][1]) and t.dtype == np.float64
        assert f.flags.writeable and t.flags.writeable  # as np.load's arrays
    with open(tmp_path / "a.tar", "rb") as stream:  # a remote shard: parsed member by member
        streamed = list(iter_tar("remote.tar", fileobj=stream))
    assert [(k, f.tobytes(), t.tobytes()) for k, f, t in streamed] == [(k, f.tobytes(), t.tobytes()) for k, f, t in got]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_reads_stock_tars_in_any_member_order(tmp_path, fmt):
    samples_ = _varied(6)
    members = [(f"{k}.ts.npy", t) for k, _, t in samples_[:3]] + [(f"{k}.npy", f) for k, f, _ in samples_]
    members += [(f"{k}.ts.npy", t) for k, _, t in samples_[3:]]
    path = _write_tar(tmp_path / "stock.tar", members, fmt)
    got = {k: (f, t) for k, f, t in iter_tar(path)}
    assert set(got) == {k for k, _, _ in samples_}
    for k, f, t in samples_:
        assert np.array_equal(got[k][0], f) and np.array_equal(got[k][1], t)


def test_tar_reader_refuses_every_cut_and_header_damage(tmp_path):
    w = TarShardWriter(tmp_path / "a.tar", 6)
    for k, f, t in _varied(4):
        w.add(k, f, t)
    w.close()
    data = (tmp_path / "a.tar").read_bytes()
    end = len(data) - 1024  # where the two end-of-archive blocks start
    damaged = tmp_path / "d.tar"
    for cut in [*range(0, end + 512, 512), *range(7, end + 512, 97)]:  # anywhere before one whole end block
        damaged.write_bytes(data[:cut])
        with pytest.raises(CacheError, match="d.tar"):
            list(iter_tar(damaged))
        with open(damaged, "rb") as stream, pytest.raises(CacheError, match="d.tar"):
            list(iter_tar(damaged, fileobj=stream))
    damaged.write_bytes(data[: end + 512])  # one end block is enough: every member is whole
    assert len(list(iter_tar(damaged))) == 4
    headers = [0]
    with tarfile.open(tmp_path / "a.tar") as tar:
        headers = [m.offset for m in tar.getmembers()]
    for h in headers:  # name, mode, size, mtime, type flag, magic, prefix: the checksum or the checks refuse it
        for pos in (3, 101, 126, 140, 156, 258, 345):
            b = bytearray(data)
            b[h + pos] ^= 0x01
            damaged.write_bytes(bytes(b))
            with pytest.raises(CacheError, match="d.tar"):
                list(iter_tar(damaged))


def test_tar_reader_on_long_runs_matches_tarfile_and_refuses_damage_inside_a_run(tmp_path):
    path = _write_runs(tmp_path / "runs.tar")
    ref = _reference(path)
    got = list(iter_tar(path))
    assert [k for k, _, _ in got] == [k for k, _, _ in _runs()]
    for k, f, t in got:
        assert f.dtype == ref[k][0].dtype and f.shape == ref[k][0].shape and np.array_equal(f, ref[k][0])
        assert np.array_equal(t, ref[k][1]) and f.flags.writeable
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        headers = [m.offset for m in tar.getmembers()]
    damaged = tmp_path / "d.tar"
    # inside the first run (members 10, 11), at its end (79, 80), in the second run (100, 101), the last
    for h in [headers[i] for i in (10, 11, 79, 80, 100, 101, len(headers) - 1)]:
        for pos in (0, 20, 126, 134, 135, 150, 156, 345, 400):  # key, name tail, size, checksum, type, prefix
            b = bytearray(data)
            b[h + pos] ^= 0x01
            damaged.write_bytes(bytes(b))
            with pytest.raises(CacheError, match="d.tar"):
                list(iter_tar(damaged))
    for cut in (headers[20] + 512, headers[20] + 700, headers[85]):  # cut inside a run
        damaged.write_bytes(data[:cut])
        with pytest.raises(CacheError, match="d.tar"):
            list(iter_tar(damaged))
    b = bytearray(data)  # a valid header that differs from its neighbours: a size 512 bytes larger
    i = 15  # a .ts.npy member of the first run, made to swallow the next <key>.npy header
    with tarfile.open(path) as tar:
        m = tar.getmembers()[i]
    b[m.offset + 124 : m.offset + 136] = b"%011o\0" % (m.size + 512)
    b[m.offset + 148 : m.offset + 156] = b" " * 8
    b[m.offset + 148 : m.offset + 156] = b"%06o\0 " % sum(b[m.offset : m.offset + 512])
    damaged.write_bytes(bytes(b))
    with pytest.raises(CacheError, match="d.tar"):
        list(iter_tar(damaged))


def test_tar_reader_runs_of_scalars_and_vectors(tmp_path):
    """Evenly spaced members of one header become rows of one strided view, whatever their rank."""

    def npy(arr):  # np.save as is (npy_bytes would make a 0-d array 1-d)
        out = io.BytesIO()
        np.save(out, arr, allow_pickle=False)
        return out.getvalue()

    members = []
    for i in range(6):
        key = f"{i:08x}" + "ab" * 8
        members += [(f"{key}.npy", npy(np.array(i, np.float32))), (f"{key}.ts.npy", npy(np.arange(3.0) + i))]
    path = _write_tar(tmp_path / "ranks.tar", members)
    got = list(iter_tar(path))
    for i, (_, f, t) in enumerate(got):
        assert type(f) is np.ndarray and f.shape == () and f == i and f.flags.writeable
        assert t.shape == (3,) and np.array_equal(t, np.arange(3.0) + i)


def _raw_member(name: bytes, data: bytes, size_field: bytes | None = None) -> bytes:
    """A USTAR member written byte by byte (for header forms tarfile does not write)."""
    h = bytearray(512)
    h[: len(name)] = name
    h[100:124] = b"0000644\x000000000\x000000000\x00"
    h[124:136] = size_field if size_field is not None else b"%011o\x00" % len(data)
    h[136:148] = b"00000000000\x00"
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h) + data + b"\x00" * (-len(data) % 512)


def _both_reads(path):
    """iter_tar of a local file, and of the same bytes as a stream (a remote shard)."""
    local = list(iter_tar(path))
    with open(path, "rb") as stream:
        streamed = list(iter_tar(path, fileobj=stream))
    return local, streamed


def test_tar_reader_edge_forms_same_locally_and_streamed(tmp_path):
    from mmcache.store.arrays import npy_bytes

    f, t = npy_bytes(np.ones((3, 4), np.float16)), npy_bytes(np.zeros((3, 2)))
    key = b"0123abcd"
    path = tmp_path / "edge.tar"
    # a size field of 12 octal digits and no NUL (tarfile reads it): accepted by both reads
    path.write_bytes(_raw_member(key + b".npy", f, b"%012o" % len(f)) + _raw_member(key + b".ts.npy", t) + bytes(1024))
    local, streamed = _both_reads(path)
    assert [(k, a.shape) for k, a, _ in local] == [(k, a.shape) for k, a, _ in streamed] == [("0123abcd", (3, 4))]
    # size fields of NULs (read as 0) in a run long enough to be predicted, then tarfile's zero padding:
    # the prediction must not run into the end-of-archive blocks; the empty payloads are refused
    run = b"".join(_raw_member(b"%08x.%s" % (i, ext), b"", bytes(12)) for i in range(4) for ext in (b"npy", b"ts.npy"))
    path.write_bytes(run + bytes(512 * 12))
    for read in (lambda: list(iter_tar(path)), lambda: list(iter_tar(path, fileobj=open(path, "rb")))):
        with pytest.raises(CacheError, match="edge.tar"):
            read()
    # a sample written twice is refused (it would hide a missing one), in order or not
    pair = [_raw_member(key + b".npy", f), _raw_member(key + b".ts.npy", t)]
    for members in ([*pair, *pair], [pair[0], pair[0], pair[1], pair[1]]):
        path.write_bytes(b"".join(members) + bytes(1024))
        for read in (lambda: list(iter_tar(path)), lambda: list(iter_tar(path, fileobj=open(path, "rb")))):
            with pytest.raises(CacheError, match="appears twice"):
                read()
    # shapes numpy cannot make: refused as such, never a numpy error
    for shape, words in (("(0, 1180591620717411303424)", "refusing .npy with shape"), (str((1,) * 65), "dimensions")):
        head = ("{'descr': '<f2', 'fortran_order': False, 'shape': " + shape + ", }").encode()
        head += b" " * (-(len(head) + 11) % 64) + b"\n"
        npy = b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head
        path.write_bytes(_raw_member(key + b".npy", npy) + _raw_member(key + b".ts.npy", t) + bytes(1024))
        for read in (lambda: list(iter_tar(path)), lambda: list(iter_tar(path, fileobj=open(path, "rb")))):
            with pytest.raises(CacheError, match=words):
                read()
