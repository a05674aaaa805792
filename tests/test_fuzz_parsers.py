"""Property-based fuzzing of the cache's parsers of untrusted bytes, each against an independent
oracle: .npy headers (numpy's np.load), tar shards (Python's tarfile), HDF5 layouts (h5py reading
the datasets itself), samples index rows (a round trip through any line splitter), and the local
memo of input hashes. A parser may refuse (CacheError), but what it accepts must be exactly what the
oracle reads, and well-formed input must be accepted: a parser that refused everything, or accepted
something other than the bytes, fails.

The manifest loader, the subtitle, label-sheet, encoder-option and config parsers, and damaged shards
read without verification are fuzzed in test_reliability_security.py, checkpoints in
test_hardening_mmfit.py; all are marked `fuzz` (`make fuzz` runs them long, see tests/fuzzing.py).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzzing import fuzz, nested
from hypothesis import assume, given
from hypothesis import strategies as st
from reliability_report import REPORT

from mmcache.errors import CacheError
from mmcache.inputs import MEMO_VERSION, HashMemo, _memo_entry
from mmcache.store import H5ShardWriter
from mmcache.store.arrays import ALLOWED_KINDS, load_npy
from mmcache.store.hdf5 import H5Shard, read_h5
from mmcache.store.manifest import dumps, loads, parse_samples, samples_bytes
from mmcache.store.tar import TarShard, iter_tar, read_tar

pytestmark = pytest.mark.fuzz
KEYS = [f"{i:02x}" * 12 for i in (1, 2, 3)]


def counted(name: str):
    """A fuzz row of docs/RELIABILITY.md whose tried/passed counts follow the examples run."""
    case = REPORT.case("fuzz", name, 0)

    def wrap(fn):
        def run(*args):
            case.tried += 1
            fn(*args)
            case.ok()

        return run

    return wrap


def refused_or(fn, *args):
    """fn(*args), or None when it raises the project's CacheError (anything else fails the test)."""
    try:
        return fn(*args)
    except CacheError:
        return None


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def oracle_npy(data: bytes) -> np.ndarray | None:
    """numpy's reading, with the cache's rules: format 1.0 or 2.0, plain numeric dtypes, no bytes past
    the data."""
    if data[6:8] not in (b"\x01\x00", b"\x02\x00"):  # 3.0 only differs for non-Latin-1 (structured) headers
        return None
    f = io.BytesIO(data)
    try:
        arr = np.load(f, allow_pickle=False)
    except Exception:  # noqa: BLE001 - numpy's refusals are many kinds
        return None
    if arr.dtype.kind not in ALLOWED_KINDS or arr.dtype.fields is not None or f.tell() != len(data):
        return None
    return arr


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- .npy headers --------------------------------------------------------------------------------

DESCRS = ["<f2", "<f4", ">f8", "|u1", "<i8", "|b1", "<c8", "|O", "<U4", "|S3", "<m8[s]", "V4", "<f2x", ""]
DESCRS += ["[('a', '<f4')]", "('<f4', (2,))", "float16", "<f16"]
dims = st.sampled_from([0, 1, 2, 3, 7, -1, 2**31, 2**62, 10**20])
header_dicts = st.fixed_dictionaries(
    {
        "descr": st.sampled_from(DESCRS),
        "fortran_order": st.sampled_from([False, True, "no", 0]),
        "shape": st.lists(dims, max_size=4).map(tuple) | st.sampled_from([5, "x", None, (1.5,)]),
    }
)


def npy_from(header: dict | str, version: int, pad: int, payload: int, lie: int) -> bytes:
    """A .npy file: magic, version, header length (off by `lie`), header text padded by `pad`, then
    `payload` bytes of data."""
    text = header if isinstance(header, str) else repr(header)
    raw = (text + " " * pad + "\n").encode("latin1", "replace")
    size = len(raw) + lie
    if version == 1:
        length = (size % 65536).to_bytes(2, "little")
    else:
        length = (size % 2**32).to_bytes(4, "little")
    return (
        b"\x93NUMPY" + bytes([version, 0]) + length + raw + bytes(range(256)) * (payload // 256) + bytes(payload % 256)
    )


def test_fuzz_npy_headers():
    """Crafted .npy headers (dtypes incl. object, structured, strings; shapes negative, huge, not
    tuples; versions 1-3; header lengths that lie; payloads short and long) and arbitrary header text:
    load_npy refuses with CacheError or returns exactly numpy's array, and accepts every plain array."""

    @counted("`.npy` headers (load_npy) vs np.load: crafted headers, arbitrary header text, valid arrays")
    def check(data: bytes) -> None:
        got, want = refused_or(load_npy, data, "x.npy"), oracle_npy(data)
        if got is not None:
            assert want is not None and same(got, want), (data[:120], got.dtype, got.shape)
            assert got.flags.writeable and got.dtype.kind in ALLOWED_KINDS
        elif want is not None:  # refused what numpy reads: only dimensions numpy could not build otherwise
            assert want.ndim > 32, (data[:120], want.dtype, want.shape)

    @fuzz()
    @given(
        st.one_of(
            st.tuples(
                header_dicts, st.sampled_from([1, 2, 3]), st.integers(0, 70), st.integers(0, 600), st.integers(-3, 3)
            ),
            st.tuples(st.text(max_size=80), st.sampled_from([1, 2]), st.just(0), st.integers(0, 64), st.just(0)),
        )
    )
    def crafted(args):
        check(npy_from(*args))

    @fuzz(0.5)
    @given(
        st.sampled_from(["<f2", "<f4", ">f8", "|u1", "<i8", "|b1", "<u2"]),
        st.lists(st.integers(0, 5), max_size=3),
        st.booleans(),
    )
    def valid(descr, shape, fortran):
        arr = np.zeros(shape, descr, order="F" if fortran else "C")
        arr.reshape(-1, order="A").view(np.uint8)[:] = np.arange(arr.nbytes) % 251
        data = npy(arr)
        got = load_npy(data, "x.npy")  # a file numpy writes with a plain dtype is always accepted
        assert same(got, arr)  # byte for byte (random bytes make NaNs)
        check(data)

    crafted()
    valid()


# -- tar shards ----------------------------------------------------------------------------------

member = st.fixed_dictionaries(
    {
        "name": st.sampled_from([f"{k}{ext}" for k in KEYS[:2] for ext in (".npy", ".ts.npy")])
        | st.sampled_from(["../x.npy", f"{KEYS[2]}.pth", "a/" + KEYS[2] + ".npy", KEYS[2] + ".NPY", ""]),
        "kind": st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.AREGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE]),
        "payload": st.one_of(
            st.tuples(st.sampled_from(["<f2", "<f8", "|u1", "<i4"]), st.integers(0, 4), st.integers(0, 3)).map(
                lambda t: npy(np.arange(t[1] * t[2], dtype=t[0]).reshape(t[1], t[2]))
            ),
            st.binary(max_size=40),
        ),
        "size": st.sampled_from(["honest"] * 8 + ["+1", "-1", "+512", "8GiB", "not octal"]),
    }
)
ENDS = {"two zero blocks": bytes(1024), "one zero block": bytes(512), "none": b"", "garbage": b"\x01" * 512}


def tar_bytes(members: list[dict], end: str) -> bytes:
    out = bytearray()
    for m in members:
        info = tarfile.TarInfo(m["name"])
        info.type, info.size, info.mtime = m["kind"], len(m["payload"]), 0
        if m["kind"] != tarfile.REGTYPE and m["kind"] != tarfile.AREGTYPE:
            info.size = 0
        hdr = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
        lie = {"+1": 1, "-1": -1, "+512": 512, "8GiB": 8 << 30}.get(m["size"])
        if lie is not None or m["size"] == "not octal":
            field = b"0000000009z\0" if lie is None else b"%011o\0" % max(0, info.size + lie)
            hdr[124:136] = field
            hdr[148:156] = b" " * 8
            hdr[148:156] = b"%06o\0 " % sum(hdr)
        out += hdr
        data = m["payload"][: info.size]
        out += data + bytes(-len(data) % 512)
    return bytes(out + ENDS[end])


def oracle_tar(data: bytes, end: str) -> list | None:
    """Python's tarfile and np.load, with the cache's rules: regular members named <hex key>.npy /
    .ts.npy, each key's two members exactly once, an end-of-archive block."""
    if end not in ("two zero blocks", "one zero block"):
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    except (tarfile.TarError, OSError, EOFError):
        return None
    pending, done, out = {}, set(), []
    for m, raw in members:
        key, _, ext = m.name.partition(".")
        if raw is None or len(raw) != m.size or key not in KEYS or ext not in ("npy", "ts.npy") or key in done:
            return None
        arr = oracle_npy(raw)
        if arr is None:
            return None
        if key in pending:
            other_ext, other = pending.pop(key)
            if other_ext == ext:
                return None
            done.add(key)
            out.append((key, other, arr) if ext == "ts.npy" else (key, arr, other))
        else:
            pending[key] = (ext, arr)
    return None if pending else out


def _read_all_three(path: Path) -> list:
    """read_tar (whole file), iter_tar over a stream, and TarShard (random access): each a list of
    samples or None when refused."""
    whole = refused_or(read_tar, path)
    with open(path, "rb") as f:
        streamed = refused_or(lambda: list(iter_tar(str(path), fileobj=f)))

    def random_access():
        shard = TarShard(path)
        try:
            return {k: shard.read(k) for k in shard.index}
        finally:
            shard.close()

    return [whole, streamed, refused_or(random_access)]


@pytest.mark.hardening(6)
def test_fuzz_tar_shards(tmp_path):
    """Crafted tar shards (members renamed, linked, sized wrongly up to 8 GiB, payloads not .npy,
    ends missing or garbage): the whole-file, streaming and random-access readers each refuse with
    CacheError or return exactly what tarfile + np.load read, and accept every well-formed shard."""
    path = tmp_path / "000000.tar"

    @counted("tar shards (read_tar, iter_tar stream, TarShard) vs tarfile + np.load: crafted members and sizes")
    def check(members, end):
        data = tar_bytes(members, end)
        path.write_bytes(data)
        want = oracle_tar(data, end)
        whole, streamed, by_key = _read_all_three(path)
        for got in (whole, streamed):
            if got is not None:
                assert want is not None and len(got) == len(want)
                for (k, f, t), (wk, wf, wt) in zip(got, want, strict=True):
                    assert k == wk and same(f, wf) and same(t, wt)
        if by_key is not None and want is not None:
            assert sorted(by_key) == sorted(k for k, _, _ in want)
            for k, f, t in want:
                assert same(by_key[k][0], f) and same(by_key[k][1], t)
        if by_key is not None and want is None:  # random access indexes headers only: a payload the
            assert whole is None  # whole read refuses may be read by key, but never a different one
        honest = all(m["size"] == "honest" for m in members)
        if want is not None and honest:  # well-formed: every reader accepts it
            assert whole is not None and streamed is not None and by_key is not None

    @fuzz()
    @given(st.lists(member, max_size=5), st.sampled_from(sorted(ENDS)))
    def run(members, end):
        check(members, end)

    @fuzz(0.3)
    @given(st.permutations([(k, ext) for k in KEYS for ext in (".npy", ".ts.npy")]), st.integers(0, 5))
    def well_formed(order, rows):
        members = [
            {"name": k + ext, "kind": tarfile.REGTYPE, "size": "honest", "payload": npy(np.full((rows, 2), i, "<f8"))}
            for i, (k, ext) in enumerate(order)
        ]
        check(members, "two zero blocks")
        assert read_tar(path) and len(read_tar(path)) == 3

    run()
    well_formed()


# -- HDF5 layouts ------------------------------------------------------------------------------------

STORAGE = ["contiguous", "chunked", "gzip", "compact", "external", "virtual", "soft link", "external link", "group"]
OUTSIDE = {"external", "virtual", "soft link", "external link"}
h5_layouts = st.fixed_dictionaries(
    {
        "rows": st.lists(st.integers(0, 4), max_size=4),
        "dim": st.integers(1, 5),
        "dtype": st.sampled_from(["<f2", "<f4", ">f8", "<i2", "|u1", "|b1", "<c8", "str"]),
        "feats": st.sampled_from(STORAGE[:4] * 4 + STORAGE[4:]),
        "ts": st.sampled_from(STORAGE[:4] * 4 + STORAGE[4:]),
        "offsets": st.sampled_from(["right"] * 6 + ["shifted", "float", "short", "2-d"]),
        "keys": st.sampled_from(["fixed"] * 6 + ["vlen", "ints", "bad hex", "fewer"]),
        "grow": st.sampled_from([0] * 6 + [1, 10**6]),  # rows declared but never written (fill values)
    }
)


def _dataset(f: h5py.File, name: str, data: np.ndarray, storage: str, grow: int, outside: Path) -> None:
    """`data` stored under `name` the way `storage` says; `outside` is a file beside the shard."""
    if storage in ("external", "virtual", "external link"):
        with h5py.File(outside, "a") as other:
            if name in other:
                del other[name]
            other[name] = data
        if storage == "external link":
            f[name] = h5py.ExternalLink(str(outside), name)
        elif storage == "virtual":
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(outside), name, shape=data.shape)
            f.create_virtual_dataset(name, layout)
        else:
            raw = outside.with_suffix(f".{name}.raw")
            raw.write_bytes(data.tobytes())
            f.create_dataset(name, data.shape, data.dtype, external=[(str(raw), 0, data.nbytes)])
        return
    if storage == "soft link":
        f["_" + name] = data
        f[name] = h5py.SoftLink("/_" + name)
    elif storage == "group":
        f.create_group(name)
    elif storage == "compact" and data.nbytes < 60000:
        space = h5py.h5s.create_simple(data.shape) if data.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        tid = h5py.h5t.py_create(data.dtype, logical=True)
        h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data)
        )
    elif storage in ("chunked", "gzip") and data.ndim >= 1:
        shape = (data.shape[0] + grow, *data.shape[1:])
        ds = f.create_dataset(
            name,
            shape,
            data.dtype,
            chunks=tuple(max(1, min(d, 3)) for d in shape) if all(shape) else None,
            maxshape=(None, *data.shape[1:]),
            compression="gzip" if storage == "gzip" else None,
        )
        if data.size:
            ds[: len(data)] = data
    else:
        f[name] = data


def h5_file(path: Path, lay: dict) -> tuple[dict, list[str], np.ndarray, np.ndarray]:
    """A shard made from a layout choice: (storage used, keys, feats, ts) as intended."""
    rng = np.random.default_rng(len(lay["rows"]) * 7 + lay["dim"])
    n = sum(lay["rows"])
    if lay["dtype"] == "str":
        feats = np.array([["ab"] * lay["dim"]] * n, dtype=h5py.string_dtype())
    else:
        feats = (rng.standard_normal((n, lay["dim"])) * 50).astype(lay["dtype"])
    ts = np.stack([np.arange(n, dtype=np.float64) * 0.5, np.arange(1, n + 1, dtype=np.float64) * 0.5], 1)
    offsets = np.concatenate([[0], np.cumsum(lay["rows"])]).astype(np.int64)
    offsets = {
        "right": offsets,
        "shifted": offsets + 1,
        "float": offsets.astype(np.float64),
        "short": offsets[:-1],
        "2-d": offsets.reshape(1, -1),
    }[lay["offsets"]]
    keys = [f"{i:024x}" for i in range(1, len(lay["rows"]) + 1)]
    key_data = {
        "fixed": np.array([k.encode() for k in keys], dtype="S24").reshape(-1),
        "vlen": np.array(keys, dtype=h5py.string_dtype()),
        "ints": np.arange(len(keys)),
        "bad hex": np.array([b"../x"] * len(keys), dtype="S4").reshape(-1),
        "fewer": np.array([k.encode() for k in keys[1:]], dtype="S24").reshape(-1),
    }[lay["keys"]]
    outside = path.with_name("outside.h5")
    outside.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        _dataset(f, "feats", feats, lay["feats"], lay["grow"], outside)
        _dataset(f, "ts", ts, lay["ts"], lay["grow"], outside)
        f["offsets"] = offsets
        f["keys"] = key_data
    return key_data, offsets, feats, ts


def expected_h5(lay: dict, key_data: np.ndarray, offsets: np.ndarray, feats: np.ndarray, ts: np.ndarray):
    """The samples a reader must return for the file `h5_file` wrote from these arrays, by the cache's
    rules stated independently of the reader; None when it must refuse the file."""
    if {lay["feats"], lay["ts"]} & (OUTSIDE | {"group"}):  # bytes from elsewhere, or no dataset
        return None
    if lay["grow"] and {"chunked", "gzip"} & {lay["feats"], lay["ts"]}:  # rows declared, never written
        return None
    if feats.dtype.kind not in ALLOWED_KINDS or key_data.dtype.kind != "S":
        return None
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or len(offsets) != len(key_data) + 1:
        return None
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(feats):
        return None
    keys = [k.decode("ascii") for k in key_data]
    if not all(re.fullmatch(r"[0-9a-f]{8,64}", k) for k in keys) or len(set(keys)) != len(keys):
        return None
    return [(k, feats[a:b], ts[a:b]) for k, a, b in zip(keys, offsets[:-1], offsets[1:], strict=True)]


@pytest.mark.hardening(2)
@pytest.mark.hardening(6)
def test_fuzz_hdf5_layouts(tmp_path):
    """HDF5 shards of every storage kind (contiguous, chunked, gzip, compact; external raw storage,
    virtual datasets, soft and external links, groups), dtypes, offsets, keys and declared-but-unwritten
    rows: the whole-file and by-key readers accept exactly the files the cache's rules allow
    (`expected_h5`) and return exactly the rows written; anything whose bytes may come from outside
    the file is refused."""
    path = tmp_path / "000000.h5"

    @counted("HDF5 layout checks (read_h5, H5Shard) vs h5py: storage kinds, links, dtypes, offsets, keys")
    def check(lay):
        want = expected_h5(lay, *h5_file(path, lay))
        whole = refused_or(read_h5, path)

        def by_key():
            shard = H5Shard(path)
            try:
                return {k: shard.read(k) for k in shard.index}
            finally:
                shard.close()

        keyed = refused_or(by_key)
        assert (whole is None, keyed is None) == (want is None,) * 2, lay
        if want is None:
            return
        assert [k for k, _, _ in whole] == [k for k, _, _ in want] and sorted(keyed) == sorted(k for k, _, _ in want)
        for k, f, t in want:
            for got_f, got_t in ((whole[[w[0] for w in whole].index(k)][1:]), keyed[k]):
                assert same(np.asarray(got_f), f) and same(np.asarray(got_t), t)

    @fuzz()
    @given(h5_layouts)
    def run(lay):
        # h5py stores variable-length strings only in its own (heap) storage: nothing else to try
        assume(lay["dtype"] != "str" or {lay["feats"], lay["ts"]} <= {"contiguous", "soft link", "group"})
        check(lay)

    run()


def test_h5_writer_output_is_accepted_whatever_its_rows(tmp_path):
    """The other direction of the HDF5 fuzz: what H5ShardWriter writes always reads back, exactly."""

    @fuzz(0.3)
    @given(st.lists(st.integers(0, 6), max_size=5), st.integers(1, 4), st.sampled_from(["float16", "float32"]))
    def run(rows, dim, dtype):
        path = tmp_path / f"w-{len(rows)}-{dim}.h5"
        w = H5ShardWriter(path, dim, dtype)
        want = []
        for i, n in enumerate(rows):
            f = np.arange(n * dim, dtype=dtype).reshape(n, dim)
            t = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
            w.add(f"{i + 1:024x}", f, t)
            want.append((f"{i + 1:024x}", f, t))
        w.close()
        got = read_h5(path)
        assert [k for k, _, _ in got] == [k for k, _, _ in want]
        for (_, f, t), (_, wf, wt) in zip(got, want, strict=True):
            assert same(np.asarray(f), wf) and same(np.asarray(t), wt)
        path.unlink()

    run()


# -- samples index rows: exactly "\n" ends a row -------------------------------------------------------

names = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["a\u2028b.mp4", "\u2029", "x\x85y", "\x1c\x1d\x1e", "\r", "a\nb", "\x0b\x0c", '"\\']
)
rows = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(KEYS), "source": names, "sha256": st.none(), "bytes": st.integers(0, 2**40)},
        optional={
            "id": st.none() | names,
            "aliases": st.lists(names, max_size=2),
            "error": names,
            "status": st.sampled_from(["ok", "failed"]),
        },
    ).map(lambda r: {"status": "ok", **r}),
    max_size=4,
)


@pytest.mark.hardening(1)
def test_fuzz_samples_rows_round_trip():
    """Rows with any text in their names (U+2028/U+2029/U+0085, file and group separators, CR, NUL,
    lone quotes and backslashes) written by samples_bytes come back equal from parse_samples, one
    line per row for every line splitter (str.splitlines too); rows as an older writer left them
    (raw separators) read back too."""

    @counted("samples index rows (samples_bytes -> parse_samples): any text in names, old raw rows")
    def check(rs):
        data = samples_bytes(rs)
        assert parse_samples(data, "x.jsonl") == rs
        text = data.decode()
        assert len(text.splitlines()) == len(rs) == text.count("\n")  # no splitter sees two lines in a row
        old = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rs).encode()
        assert parse_samples(old, "x.jsonl") == rs  # what the code before the fix wrote

    @fuzz()
    @given(rows)
    def run(rs):
        check(rs)

    run()


@pytest.mark.hardening(8)
def test_fuzz_json_nesting_and_huge_numbers():
    """The JSON reader of manifests and samples rows: nesting thousands deep, integers and exponents of
    thousands of digits, around a valid document: a CacheError or the document, never RecursionError
    or ValueError."""

    @counted("manifest / samples JSON (loads, parse_samples): deep nesting, numbers of thousands of digits")
    def check(depth, digits, where, kind):
        inner = {"int": "9" * digits, "neg": "-" + "9" * digits, "exp": f"1e{'9' * digits}"}[kind]
        deep = "[" * depth + inner + "]" * depth
        doc = {"top": deep, "in a row": json.dumps({"key": KEYS[0], "source": "s", "sha256": None, "bytes": 0})[:-1]}
        text = doc[where] if where == "top" else doc[where] + f', "meta": {{"x": {deep}}}}}'
        parsed = refused_or(loads, text, "manifest.json")
        if parsed is not None:
            assert json.loads(dumps(parsed)) == parsed
        rows_ = refused_or(parse_samples, (text + "\n").encode(), "x.jsonl")
        assert rows_ is None or (where == "in a row" and len(rows_) == 1)

    @fuzz()
    @given(
        st.integers(0, 100_000),
        st.integers(1, 10_000),
        st.sampled_from(["top", "in a row"]),
        st.sampled_from(["int", "neg", "exp"]),
    )
    def run(depth, digits, where, kind):
        check(depth, digits, where, kind)

    run()


# -- the local memo of input hashes ------------------------------------------------------------------

memo_values = nested(
    st.none() | st.booleans() | st.integers() | st.text(max_size=66) | st.sampled_from(["a" * 64, "../" * 22]),
    width=7,
    max_leaves=12,
)


@pytest.mark.hardening(3)
def test_fuzz_input_hash_memo():
    """`.input-hashes.json` is a hint: any bytes (bad JSON, deep nesting, huge integers, other
    versions, entries of wrong types, non-hex or path-like hashes) parse to a memo holding only
    well-formed entries, never an error."""

    @counted("local memo of input hashes (HashMemo.parse): any bytes, any JSON, crafted entries")
    def check(data: bytes):
        memo = HashMemo.parse(data)
        for path, value in memo.entries.items():
            assert isinstance(path, str) and _memo_entry(value)
            assert all(c in "0123456789abcdef" for c in value[5])
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and parsed.get("version") == MEMO_VERSION and isinstance(parsed.get("files"), dict):
            assert memo.entries == {p: v for p, v in parsed["files"].items() if _memo_entry(v)}

    entries = st.dictionaries(
        st.text(max_size=10),
        memo_values
        | st.tuples(st.lists(st.integers(0, 2**64), min_size=5, max_size=5), st.sampled_from(["a" * 64, "A" * 64])).map(
            lambda t: [*t[0], t[1]]
        ),
        max_size=4,
    )

    @fuzz()
    @given(
        st.one_of(
            st.binary(max_size=200),
            memo_values.map(lambda v: json.dumps(v).encode()),
            st.tuples(st.sampled_from([MEMO_VERSION, 1, "2", None]), entries).map(
                lambda t: json.dumps({"version": t[0], "files": t[1]}).encode()
            ),
            st.integers(1, 5000).map(lambda n: ("[" * n + "]" * n).encode()),
        )
    )
    def run(data):
        check(data)

    run()


def test_oracles_see_what_they_should():
    """The oracles themselves: each rejects a crafted input and accepts its well-formed twin (so the
    properties above cannot pass by an oracle that accepts or refuses everything)."""
    good = npy(np.ones((2, 3), "<f2"))
    assert oracle_npy(good) is not None and oracle_npy(good + b"x") is None
    assert oracle_npy(npy(np.array(["a"]))) is None
    members = [
        {"name": KEYS[0] + ".npy", "kind": tarfile.REGTYPE, "size": "honest", "payload": good},
        {"name": KEYS[0] + ".ts.npy", "kind": tarfile.REGTYPE, "size": "honest", "payload": good},
    ]
    assert len(oracle_tar(tar_bytes(members, "two zero blocks"), "two zero blocks")) == 1
    assert oracle_tar(tar_bytes(members[:1], "two zero blocks"), "two zero blocks") is None
