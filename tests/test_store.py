"""Tar and HDF5 shards: deterministic bytes, stock readers, refusal of hostile content."""

from __future__ import annotations

import io
import json
import tarfile

import h5py
import numpy as np
import pytest
import webdataset as wds

from mmcache.errors import CacheError
from mmcache.store import H5ShardWriter, TarShardWriter
from mmcache.store.arrays import load_npy
from mmcache.store.hdf5 import iter_h5
from mmcache.store.tar import iter_tar

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


def test_tar_round_trip_and_deterministic_bytes(tmp_path):
    write(TarShardWriter, tmp_path / "a.tar")
    write(TarShardWriter, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    got = list(iter_tar(tmp_path / "a.tar"))
    for (k, f, t), (k2, f2, t2) in zip(got, samples(), strict=True):
        assert k == k2 and np.array_equal(f, f2) and np.array_equal(t, t2) and f.dtype == np.float16
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, 0, "")}


def test_stock_webdataset_reads_the_tar(tmp_path):
    write(TarShardWriter, tmp_path / "a.tar")
    ds = wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False).decode()
    got = {s["__key__"]: s for s in ds}
    assert set(got) == set(KEYS)
    k, f, t = samples()[1]
    assert np.array_equal(got[k]["npy"], f) and np.array_equal(got[k]["ts.npy"], t)


def test_hdf5_ragged_layout(tmp_path):
    write(H5ShardWriter, tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["feats"].shape == (8, 8) and f["feats"].dtype == np.float16
        assert list(f["offsets"][()]) == [0, 3, 8]
        assert [k.decode() for k in f["keys"][()]] == KEYS
    got = list(iter_h5(tmp_path / "a.h5"))
    assert [g[0] for g in got] == KEYS and np.array_equal(got[1][1], samples()[1][1])


def test_abort_leaves_nothing(tmp_path):
    w = TarShardWriter(tmp_path / "a.tar", 8)
    w.add(*samples()[0])
    w.abort()
    assert list(tmp_path.iterdir()) == []


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


def test_object_npy_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CacheError):
        load_npy(buf.getvalue(), "x.npy")


# -- the reader: its own tar parser, random access, padded arrays ----------------------------------


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


def test_arrays_stay_readable_at_interpreter_exit(tmp_path):
    """A mapped shard is never unmapped at exit while arrays may still be read (atexit handlers, __del__)."""
    import subprocess
    import sys

    path = _write_runs(tmp_path / "runs.tar")
    code = (
        "import atexit, sys\n"
        "state = {}\n"
        "atexit.register(lambda: print('sum', float(state['x'].sum())))\n"
        "from mmcache.store.tar import iter_tar\n"
        "class Keeper:\n"
        "    def __del__(self):\n"
        "        print('del', float(self.x.sum()))\n"
        f"got = list(iter_tar({str(path)!r}))\n"
        "state['x'] = got[0][1]\n"
        "keeper = Keeper(); keeper.x = got[1][1]\n"
        "del got\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sum " in res.stdout


def test_shards_are_mapped_copy_on_write(tmp_path, monkeypatch):
    import gc
    from pathlib import Path

    from mmcache.store import mapped

    def mapped_now():
        return str(path) in Path("/proc/self/maps").read_text()

    path = _write_runs(tmp_path / "runs.tar")
    before = path.read_bytes()
    got = list(iter_tar(path))
    assert mapped_now()  # the arrays view the file's pages (Linux)
    feats = got[0][1]
    assert feats.flags.writeable
    feats[:] = 7  # a private copy of that page: the file never changes
    assert path.read_bytes() == before and np.all(feats == 7)
    assert list(iter_tar(path))[0][1][0, 0] != 7
    del got, feats
    gc.collect()
    assert not mapped_now()  # unmapped once nothing views it
    monkeypatch.setenv("MMCACHE_MAP_SHARDS", "0")
    assert isinstance(mapped.map_file(path), bytearray)
    got = list(iter_tar(path))
    assert not mapped_now()
    assert [k for k, _, _ in got] == [k for k, _, _ in _runs()] and got[0][1].flags.writeable


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


def test_padded_matches_a_per_sample_copy():
    from mmcache.cache import FieldArrays

    rng = np.random.default_rng(0)
    lengths = [3, 0, 5, 1, 5]
    feats = [rng.normal(size=(n, 4)).astype(np.float16) for n in lengths]
    ts = [rng.random((n, 2)) for n in lengths]
    arr = FieldArrays("f", list("abcde"), feats, ts, np.array([n > 0 for n in lengths]))
    for max_steps in (None, 2, 8):
        x, t, mask = arr.padded(max_steps)
        steps = max(lengths) if max_steps is None else max_steps
        assert x.shape == (5, steps, 4) and x.dtype == np.float32 and t.shape == (5, steps, 2)
        for i, n in enumerate(lengths):
            k = min(n, steps)
            assert np.array_equal(x[i, :k], feats[i][:k].astype(np.float32)) and not x[i, k:].any()
            assert np.array_equal(t[i, :k], ts[i][:k]) and mask[i].tolist() == [True] * k + [False] * (steps - k)
    empty = FieldArrays("f", ["a"], [np.zeros((0, 4), np.float32)], [np.zeros((0, 2))], np.array([False]))
    x, t, mask = empty.padded()
    assert x.shape == (1, 1, 4) and not mask.any()


def test_layout_field_subsamples_like_the_per_sample_rule():
    from mmfit.layout import layout_field, subsample

    rng = np.random.default_rng(0)
    lengths = [0, 3, 8, 8, 20, 33, 1]
    raw = [(rng.normal(size=(n, 5)).astype(np.float16), rng.random((n, 2))) for n in lengths]
    raw[2] = None  # absent for this field
    x, mask = layout_field("f", raw, [None] * len(raw), 8, 5)
    for i, item in enumerate(raw):
        want = np.zeros((8, 5), np.float16)
        want_mask = np.zeros(8, bool)
        if item is not None:
            keep = subsample(len(item[0]), 8)
            want[: len(keep)], want_mask[: len(keep)] = item[0][keep], True
        assert np.array_equal(x[i], want) and np.array_equal(mask[i], want_mask), i


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory, clips):
    """The conftest clips plus one unreadable file, extracted with both backends (shards of 2)."""
    import shutil

    import mmcache

    d = tmp_path_factory.mktemp("random-access")
    inputs = d / "inputs"
    shutil.copytree(clips, inputs)
    (inputs / "broken.mp4").write_text("not a video")
    made = {}
    for backend in ("webdataset", "hdf5"):
        root = d / backend
        mmcache.extract([inputs], ["logmel:fps=2,window=0.5", "minilm-text"], root, shard_size=2, backend=backend)
        made[backend] = root
    return made


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_read_sample_returns_what_iter_samples_returns(two_backends, backend):
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    fields = list(cache.fields)
    seen = list(cache.iter_samples())
    assert any(s[f] is None for s in seen for f in fields)  # the silent clip: no audio/text for some field
    with cache:
        for s in reversed(seen):  # any order
            for f in fields:
                got, want = cache.read_sample(f, s["key"]), s[f]
                if want is None:
                    assert got is None
                else:
                    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, want, strict=True))
    with cache.field_reader(fields[0], max_open=1) as reader:  # one file open at a time still reads all
        assert [reader.read(s["key"]) is None for s in seen] == [s[fields[0]] is None for s in seen]
        assert len(reader._open) == 1
    failed = cache.samples("failed")
    assert failed
    with pytest.raises(CacheError, match="not an ok sample"):
        cache.read_sample(fields[0], failed[0]["key"])
    for bad in ("0123456789abcdef0123", "../x", 5):
        with pytest.raises(CacheError, match="has no sample"):
            cache.read_sample(fields[0], bad)
    with pytest.raises(CacheError, match="has no field 'nope'"):
        cache.read_sample("nope", seen[0]["key"])


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_read_sample_refuses_a_cut_shard(two_backends, backend, tmp_path):
    import shutil

    from mmcache import open_cache

    root = tmp_path / "cache"
    shutil.copytree(two_backends[backend], root)
    cache = open_cache(root)
    key = cache.samples("ok")[0]["key"]
    path = root / cache.fields["logmel"]["files"][cache.locate(key)[0]]["path"]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CacheError, match=path.name):
        cache.read_sample("logmel", key)


def test_the_fast_samples_row_check_never_accepts_what_the_schema_refuses():
    """store.manifest._plain_row recognises usual samples index rows without jsonschema; whatever it accepts,
    the schema must accept (anything else goes to jsonschema, which decides)."""
    import jsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mmcache.store.manifest import _plain_row, _row_schema_known, _row_validator

    assert _row_schema_known(), "schemas/cache-manifest.schema.json changed: update manifest._plain_row and its hash"
    validator = _row_validator()
    good = {"key": KEYS[0], "source": "a.mp4", "sha256": "ab" * 32, "bytes": 5, "status": "ok", "id": None,
            "aliases": ["b.mp4"], "duration": 2.0, "streams": {}, "error": None, "meta": {"label": "x"}}  # fmt: skip
    assert _plain_row(good) and validator.is_valid(good)
    values = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3)
    values |= st.sampled_from([KEYS[0], "ab" * 32, "ok", "failed", "AB" * 32, KEYS[0] + "\n", [], ["x"], [1], {}])

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(st.dictionaries(st.sampled_from(sorted(good)), values, max_size=4), st.lists(st.sampled_from(sorted(good))))
    def check(changes, dropped):
        row = {**{k: v for k, v in good.items() if k not in dropped}, **changes}
        if _plain_row(row):
            assert validator.is_valid(row), row

    check()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "bytes": True}, {"type": "object", "properties": {"bytes": {"type": "integer"}}})
    assert not _plain_row({**good, "bytes": True}) and not _plain_row({**good, "key": KEYS[0] + "\n"})


def test_a_shard_file_repeating_a_sample_instead_of_another_is_refused(two_backends, tmp_path):
    """HDF5 shards can hold a key twice: whole-shard reads count distinct samples, so a file that
    repeats one sample where the manifest promises two is an error naming it, never a silently
    missing sample."""
    import json
    import shutil

    from mmcache import open_cache

    root = tmp_path / "cache"
    shutil.copytree(two_backends["hdf5"], root)
    cache = open_cache(root)
    shard = next(s for s, e in sorted(cache.manifest["shards"].items()) if e["ok"] >= 2)
    name = "logmel"
    entry = cache.fields[name]["files"][shard]
    (key, (feats, ts)), *_ = cache.read_field_shard(name, shard).items()
    path = root / entry["path"]
    path.unlink()
    w = H5ShardWriter(path, cache.fields[name]["dim"], cache.fields[name]["dtype"])
    w.add(key, feats, ts)
    w.add(key, feats, ts)  # in place of the shard's other ok sample
    w.close()
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["fields"][name]["files"][shard].update(count=2, missing={})  # the manifest promises both
    (root / "manifest.json").write_text(json.dumps(manifest))
    cache = open_cache(root)
    for read in (lambda: list(cache.iter_samples()), lambda: cache.load_field(name)):
        with pytest.raises(CacheError, match=f"{path.name}: 1 samples read, manifest says 2"):
            read()


def test_samples_rows_share_their_key_strings():
    """A samples index holds thousands of rows with the same field names: parsed rows share one str per
    name (nested dicts too) instead of each holding its own copies."""
    from mmcache.store.manifest import parse_samples

    row = {"key": "ab" * 12, "source": "a.mp4", "sha256": "0" * 64, "bytes": 1, "status": "ok"}
    row["streams"] = {"video": {"codec": "h264", "fps": 25.0}}
    data = "".join(json.dumps({**row, "key": f"{i:024x}"}) + "\n" for i in range(3)).encode()
    a, b, c = parse_samples(data, "x.jsonl")
    assert [r["key"] for r in (a, b, c)] == [f"{i:024x}" for i in range(3)]
    assert all(x is y for x, y in zip(a, c, strict=True))
    assert all(x is y for x, y in zip(a["streams"]["video"], b["streams"]["video"], strict=True))


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


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_whole_shard_reads_ask_for_the_next_files_ahead(two_backends, backend):
    """iter_samples reads shard by shard, every field of a shard in turn; load_field one field's shards.
    Every file after the first is asked for (prefetched) once, while one of the two files before it is
    read."""
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    events: list[tuple[str, str]] = []
    cache.transport.prefetch = lambda entry: events.append(("ask", entry["path"]))
    iter_file = cache.iter_file
    cache.iter_file = lambda entry: (events.append(("read", entry["path"])), iter_file(entry))[1]

    def check(files):
        assert [p for e, p in events if e == "read"] == files
        assert [p for e, p in events if e == "ask"] == files[1:]
        for i, path in enumerate(files[1:], 1):  # asked for before it is read, and at most 2 files ahead
            reads_before = [p for e, p in events[: events.index(("ask", path))] if e == "read"]
            assert i - 2 <= len(reads_before) <= i - 1, (path, reads_before)
        events.clear()

    fields = list(cache.fields)
    list(cache.iter_samples())
    check([cache.fields[n]["files"][s]["path"] for s in cache.shards for n in fields])
    for name in fields:
        cache.load_field(name)
        check([cache.fields[name]["files"][s]["path"] for s in cache.shards])
