"""Hardening of the cache readers (issue 15): each test builds the smallest crafted input from a good
cache and checks that the class it belongs to is closed: verify and plain reads agree on the bytes,
never leave the cache, never read or allocate more than the manifest says, and fail with one clear
project error."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from http_helpers import QuietFiles, serve

import mmcache
from mmcache.errors import CacheError
from mmcache.store import TarShardWriter
from mmcache.store.hdf5 import H5Shard, read_h5
from mmcache.store.manifest import load_manifest, parse_samples, samples_bytes
from mmcache.store.tar import TarShard, iter_tar, read_tar

LOGMEL = "logmel:fps=2,window=0.5"
MiB = 1 << 20


def mmcache_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmcache.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The CLI's answer to bad input: exit 1, no traceback, one `error:` line (or, from verify, one
    `bad:` line per problem found); returns the lines."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(("error:", "bad:")) for line in lines), res.stderr
    assert len(lines) == 1 or lines[0].startswith("bad:"), res.stderr
    return "\n".join(lines)


@pytest.fixture(scope="module", params=["webdataset", "hdf5"])
def good(request, tmp_path_factory, clips) -> Path:
    root = tmp_path_factory.mktemp(f"good-{request.param}") / "cache"
    mmcache.extract([clips], [LOGMEL], root, shard_size=2, backend=request.param)
    assert mmcache.verify_cache(root) == []
    return root


@pytest.fixture
def cache(good, tmp_path) -> Path:
    """A fresh copy of the good cache to damage."""
    root = tmp_path / "cache"
    shutil.copytree(good, root)
    return root


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def republish(root: Path, rel: str, data: bytes) -> None:
    """Write `data` at `rel` and make the manifest record its size and sha256, as a crafted cache would."""
    (root / rel).write_bytes(data)
    m = manifest(root)
    entries = [*m["shards"].values(), *(e for f in m["fields"].values() for e in f["files"].values())]
    for entry in entries:
        if entry["path"] == rel:
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(m))


def field_file(root: Path, shard: str = "000000") -> str:
    return manifest(root)["fields"]["logmel"]["files"][shard]["path"]


def read_everything(root: Path | str) -> None:
    """Every plain read path: whole fields, samples, random access."""
    c = mmcache.open_cache(root)
    c.load_field("logmel")
    for _ in c.iter_samples():
        pass
    with c.field_reader("logmel") as r:
        for key in c.ok_keys():
            r.read(key)


# -- 1. a line separator in a name --------------------------------------------------------------------


@pytest.mark.hardening(1)
def test_a_line_separator_in_a_video_name_keeps_the_cache_usable(tmp_path, clips):
    """Before: the row was written with a raw U+2028, read back with splitlines(), and the cache was
    bricked (verify, mmfit and every later extract failed)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    names = ["a\u2028b.mp4", "c\u2029d\x85e.mp4"]
    for name, src in zip(names, sorted(clips.glob("*.mp4")), strict=False):
        shutil.copy(src, videos / name)
    root = tmp_path / "cache"
    mmcache.extract([videos], [LOGMEL], root, shard_size=1)
    data = b"".join((root / e["path"]).read_bytes() for e in manifest(root)["shards"].values())
    assert "\u2028".encode() not in data and "\x85".encode() not in data  # escaped in new rows
    assert len(data.decode().splitlines()) == 2  # any line splitter sees one row per line
    assert mmcache.verify_cache(root) == []
    assert {Path(r["source"]).name for r in mmcache.open_cache(root).samples()} == set(names)
    shutil.copy(sorted(clips.glob("*.mp4"))[-1], videos / "z\u2028.mp4")  # the cache can still grow
    mmcache.extract([videos], [LOGMEL], root, shard_size=1)
    assert len(mmcache.open_cache(root).samples()) == 3
    assert mmcache_cli("verify", str(root)).returncode == 0


@pytest.mark.hardening(1)
def test_a_cache_written_with_raw_line_separators_still_opens(cache):
    """Rows written by the old code (raw U+2028 inside a string) parse as they were written."""
    m = manifest(cache)
    rel = m["shards"]["000000"]["path"]
    rows = parse_samples((cache / rel).read_bytes(), rel)
    rows[0]["meta"] = {"note": "x\u2028y\u2029z\x85"}
    old = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()
    assert "\u2028".encode() in old
    m["shards"]["000000"].update(bytes=len(old), sha256=hashlib.sha256(old).hexdigest())
    (cache / rel).write_bytes(old)
    (cache / "manifest.json").write_text(json.dumps(m))
    assert mmcache.verify_cache(cache) == []
    got = mmcache.open_cache(cache).samples()
    assert got[0]["meta"]["note"] == "x\u2028y\u2029z\x85"
    assert parse_samples(samples_bytes(rows), "new") == rows  # the escaped form is the same JSON


# -- 2. HDF5 datasets whose bytes live elsewhere ------------------------------------------------------


def _rebuild_h5(src: Path, dst: Path, how: str, outside: Path) -> None:
    """A copy of the shard `src` where feats comes from `outside`, in the way `how` names."""
    with h5py.File(src, "r") as f:
        arrays = {k: f[k][()] for k in ("feats", "ts", "offsets", "keys")}
    feats = np.ascontiguousarray(arrays.pop("feats"))
    with h5py.File(dst, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        if how == "external storage":
            outside.write_bytes(feats.tobytes())
            f.create_dataset("feats", feats.shape, feats.dtype, external=[(str(outside), 0, feats.nbytes)])
        elif how == "external link":
            with h5py.File(outside, "w") as g:
                g["feats"] = feats
            f["feats"] = h5py.ExternalLink(str(outside), "feats")
        elif how == "soft link":
            f["real"] = feats
            f["feats"] = h5py.SoftLink("/real")
        elif how == "virtual dataset":
            with h5py.File(outside, "w") as g:
                g["feats"] = feats
            layout = h5py.VirtualLayout(feats.shape, feats.dtype)
            layout[:] = h5py.VirtualSource(str(outside), "feats", shape=feats.shape)
            f.create_virtual_dataset("feats", layout)


@pytest.mark.hardening(2)
@pytest.mark.parametrize("how", ["external storage", "external link", "soft link", "virtual dataset"])
def test_hdf5_datasets_that_take_bytes_from_elsewhere_are_refused(tmp_path, clips, how):
    root = tmp_path / "cache"
    mmcache.extract([clips], [LOGMEL], root, shard_size=2, backend="hdf5")
    rel = field_file(root)
    crafted = tmp_path / "crafted.h5"
    _rebuild_h5(root / rel, crafted, how, tmp_path / "outside.bin")
    with h5py.File(crafted, "r") as f:  # h5py itself reads the same features through it
        with h5py.File(root / rel, "r") as g:
            assert np.array_equal(f["feats"][()], g["feats"][()])
    republish(root, rel, crafted.read_bytes())
    problems = mmcache.verify_cache(root)
    assert problems and "refused" in problems[0] and rel in problems[0], problems
    with pytest.raises(CacheError, match="refused"):
        mmcache.open_cache(root).load_field("logmel")
    with pytest.raises(CacheError, match="refused"):
        H5Shard(root / rel)
    assert "refused" in one_line_error(mmcache_cli("verify", str(root)))


# -- 4. symlinks and other non-regular files inside a cache -------------------------------------------


def _symlink_to_copy(root: Path, rel: str, tmp_path: Path) -> None:
    """Replace root/rel by a symlink to an identical copy outside the cache."""
    outside = tmp_path / "outside" / rel.replace("/", "_")
    outside.parent.mkdir(exist_ok=True)
    src = root / rel
    if src.is_dir():
        shutil.copytree(src, outside)
        shutil.rmtree(src)
    else:
        shutil.copy(src, outside)
        src.unlink()
    src.symlink_to(outside)


@pytest.mark.hardening(4)
@pytest.mark.parametrize("what", ["field file", "field folder", "samples index", "samples folder", "manifest"])
def test_symlinks_inside_a_cache_are_refused_even_to_identical_bytes(cache, tmp_path, what):
    rel = {
        "field file": field_file(cache),
        "field folder": "logmel",
        "samples index": manifest(cache)["shards"]["000000"]["path"],
        "samples folder": "samples",
        "manifest": "manifest.json",
    }[what]
    _symlink_to_copy(cache, rel, tmp_path)
    if what == "manifest":
        with pytest.raises(CacheError, match="symlink"):
            mmcache.open_cache(cache)
    else:
        problems = mmcache.verify_cache(cache)
        assert any("symlink" in p for p in problems), problems
        with pytest.raises(CacheError, match="symlink"):
            read_everything(cache)
    assert "symlink" in one_line_error(mmcache_cli("verify", str(cache)))


@pytest.mark.hardening(4)
def test_the_cache_root_itself_may_be_a_symlink(good, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(good)
    assert mmcache.verify_cache(link) == []
    read_everything(link)


@pytest.mark.hardening(4)
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_non_regular_files_in_a_cache_are_refused_without_blocking(cache, kind):
    rel = field_file(cache)
    path = cache / rel
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero: endless
    else:
        path.mkdir()
    problems = mmcache.verify_cache(cache)
    assert any(rel in p and "refused" in p for p in problems), problems
    with pytest.raises(CacheError, match="refused"):
        read_everything(cache)


# -- 5. unbounded sources ------------------------------------------------------------------------------


@pytest.mark.hardening(5)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_endless_samples_index_is_refused_by_every_reader(cache, tmp_path, kind):
    path = cache / manifest(cache)["shards"]["000000"]["path"]
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))
    with pytest.raises(CacheError, match="refused"):
        mmcache.open_cache(cache).samples()
    from mmcache.sharing import diff_caches, merge_caches

    with pytest.raises(CacheError, match="refused"):
        diff_caches(cache, cache)
    with pytest.raises(CacheError, match="refused"):
        merge_caches([cache], tmp_path / "merged")
    assert not (tmp_path / "merged" / "manifest.json").exists()


class _EndlessHandler(QuietFiles):
    """Serves a cache directory, except that every field file's body never ends."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self.path.endswith((".tar", ".h5")):
            return super().do_GET()
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body ends when the connection does
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(b"\0" * 65536)


@pytest.mark.hardening(5)
def test_an_endless_http_body_or_pipe_stops_at_the_manifest_size(cache, tmp_path):
    size = manifest(cache)["fields"]["logmel"]["files"]["000000"]["bytes"]
    with serve(handler=functools.partial(_EndlessHandler, directory=str(cache))) as url:
        problems = mmcache.verify_cache(url)
        assert any(f"more than the {size} bytes" in p for p in problems), problems
        with pytest.raises(CacheError, match="more than the"):
            mmcache.open_cache(url).load_field("logmel")
    # pipe:yes never ends either: the manifest read stops at MAX_MANIFEST_BYTES (set low here)
    env = {**os.environ, "MMCACHE_MAX_MANIFEST_BYTES": str(MiB)}
    res = subprocess.run(
        [sys.executable, "-m", "mmcache.cli", "verify", "pipe:yes {path}"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert "more than the 1048576 bytes" in one_line_error(res)


# -- 6. sizes claimed before they are checked ----------------------------------------------------------


def _tar_claiming(path: Path, key: str, claimed: int) -> bytes:
    """A real shard whose first member's header claims `claimed` bytes (checksum fixed up)."""
    w = TarShardWriter(path, 4)
    w.add(key, np.zeros((2, 4), np.float16), np.zeros((2, 2)))
    w.close()
    data = bytearray(path.read_bytes())
    data[124:136] = b"%011o\0" % claimed
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    assert tarfile.TarInfo.frombuf(bytes(data[:512]), "utf-8", "strict").size == claimed
    path.write_bytes(data)
    return bytes(data)


@contextlib.contextmanager
def allocation_limit(limit: int):
    """Fails when Python allocated more than `limit` bytes at once inside the block."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak allocation {peak} bytes"


@pytest.mark.hardening(6)
def test_a_tar_header_claiming_8_gib_allocates_nothing(tmp_path, cache):
    key = "0123456789abcdef01234567"
    claimed = 8 * 1024**3 - 1
    shard = tmp_path / "claim.tar"
    data = _tar_claiming(shard, key, claimed)
    with allocation_limit(16 * MiB):
        for read in (lambda: read_tar(shard), lambda: TarShard(shard)):
            with pytest.raises(CacheError, match="past the end of the file"):
                read()
        with open(shard, "rb") as f, pytest.raises(CacheError, match="past the end of the file"):
            list(iter_tar(shard, fileobj=f))
    if manifest(cache)["backend"] == "webdataset":  # the same shard served over http: verify and reads
        rel = field_file(cache)
        republish(cache, rel, data)
        with serve(cache) as url, allocation_limit(64 * MiB):
            problems = mmcache.verify_cache(url)
            assert any("past the end of the file" in p for p in problems), problems


@pytest.mark.hardening(6)
@pytest.mark.parametrize("dataset", ["feats", "offsets", "keys"])
def test_an_hdf5_file_claiming_a_billion_rows_allocates_nothing(tmp_path, dataset):
    path = tmp_path / "claim.h5"
    n = 10**9
    with h5py.File(path, "w") as f:
        shapes = {"feats": (n, 4), "ts": (n, 2), "offsets": (n + 1,), "keys": (n,)}
        dtypes = {"feats": "f2", "ts": "f8", "offsets": "i8", "keys": "S24"}
        for name in ("feats", "ts", "offsets", "keys"):
            shape = shapes[name] if name == dataset else (1,) + shapes[name][1:]
            f.create_dataset(name, shape, dtypes[name], chunks=(1024,) + shape[1:], maxshape=(None,) + shape[1:])
    assert path.stat().st_size < 16 * 1024
    with allocation_limit(16 * MiB):
        for read in (read_h5, H5Shard):
            with pytest.raises(CacheError, match="declares"):
                read(path)


# -- 7. verify compares sizes before hashing -----------------------------------------------------------


@pytest.mark.hardening(7)
def test_verify_does_not_hash_a_huge_file_listed_as_a_small_one(cache):
    rel = field_file(cache)
    listed = manifest(cache)["fields"]["logmel"]["files"]["000000"]["bytes"]
    with open(cache / rel, "r+b") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GB on paper, nothing on disk
    with allocation_limit(16 * MiB):
        problems = mmcache.verify_cache(cache)
    assert f"{rel}: {3 * 1024**3} bytes, manifest says {listed}" in "\n".join(problems)
    with pytest.raises(CacheError, match="manifest says"):  # and plain reads refuse it before reading
        mmcache.open_cache(cache).load_field("logmel")


# -- 8. JSON that breaks the parser ---------------------------------------------------------------------


@pytest.mark.hardening(8)
@pytest.mark.parametrize("where", ["manifest", "samples row"])
@pytest.mark.parametrize("bad", ["nested", "huge int"])
def test_deep_json_and_huge_integers_are_one_clear_line(cache, where, bad):
    value = "[" * 100_000 + "]" * 100_000 if bad == "nested" else "1" * 5000
    if where == "manifest":
        text = (cache / "manifest.json").read_text()
        (cache / "manifest.json").write_text(text.replace('"format_version": 1', f'"format_version": {value}', 1))
        assert value in (cache / "manifest.json").read_text()
    else:
        rel = manifest(cache)["shards"]["000000"]["path"]
        lines = (cache / rel).read_text().split("\n")
        lines[0] = lines[0][:-1] + f', "extra": {value}}}'
        republish(cache, rel, "\n".join(lines).encode())
    with pytest.raises(CacheError, match="not valid JSON|bad samples row"):
        mmcache.open_cache(cache).samples()
    line = one_line_error(mmcache_cli("verify", str(cache)))
    assert "manifest.json" in line or "samples" in line


# -- 14. what verify checks inside a field file ------------------------------------------------------


def _rewrite_field(root: Path, edit) -> tuple[str, list]:
    """Re-write shard 000000 of logmel with `edit(samples)` applied, republished in the manifest."""
    rel = field_file(root)
    entry = manifest(root)["fields"]["logmel"]["files"]["000000"]
    samples = [(k, np.array(f), np.array(t)) for k, f, t in mmcache.open_cache(root).iter_file(entry)]
    samples = edit(samples)
    from mmcache.store import FORMATS

    tmp = root / "rewrite" / Path(rel).name
    w = FORMATS[manifest(root)["backend"]].writer(tmp, samples[0][1].shape[1], str(samples[0][1].dtype))
    for s in samples:
        w.add(*s)
    w.close()
    if manifest(root)["backend"] == "hdf5" and samples[0][2].dtype != np.float64:  # the writer stores float64
        with h5py.File(tmp, "r+") as f:
            ts = f["ts"][()].astype(samples[0][2].dtype)
            del f["ts"]
            f["ts"] = ts
    republish(root, rel, tmp.read_bytes())
    shutil.rmtree(root / "rewrite")
    return rel, samples


@pytest.mark.hardening(14)
def test_verify_refuses_a_missing_entry_for_a_sample_that_has_data(cache):
    m = manifest(cache)
    entry = m["fields"]["logmel"]["files"]["000000"]
    key = mmcache.open_cache(cache).ok_keys()[0]
    entry["missing"][key] = "no audio"
    (cache / "manifest.json").write_text(json.dumps(m))
    problems = mmcache.verify_cache(cache)
    assert any(f"sample {key} is listed as missing but has data" in p for p in problems), problems


@pytest.mark.hardening(14)
@pytest.mark.parametrize("bad", ["float32", "nan", "inf"])
def test_verify_checks_timestamp_dtype_and_values(cache, bad):
    def edit(samples):
        k, f, t = samples[0]
        t = t.astype(np.float32) if bad == "float32" else t.copy()
        if bad != "float32":
            t[0, 1] = np.nan if bad == "nan" else np.inf
        return [(k, f, t), *samples[1:]]

    rel, samples = _rewrite_field(cache, edit)
    problems = mmcache.verify_cache(cache)
    want = "dtype float32" if bad == "float32" else "NaN or infinite timestamps"
    assert any(rel in p and samples[0][0] in p and want in p for p in problems), problems


@pytest.mark.hardening(3)
def test_writers_refuse_a_key_that_is_not_a_hex_digest(tmp_path):
    """The last line of defence behind the memo fix: no writer makes a member name from anything else."""
    from mmcache.store import FORMATS

    for backend, fmt in FORMATS.items():
        w = fmt.writer(tmp_path / backend / "000000.x", 4)
        for key in ("../../etc/x", "0123456789ABCDEF", "abc", "0123456789abcdef.npy", 7):
            with pytest.raises(CacheError, match="refusing sample key"):
                w.add(key, np.zeros((1, 4), np.float16), np.zeros((1, 2)))
        w.abort()
    assert load_manifest(tmp_path) is None
