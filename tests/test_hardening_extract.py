"""Hardening audit (issue 15), extraction side: local hints that cannot change identity (3), a full
disk that is one line and resumes byte for byte (10), and a field being added that readers never see
half-written (12). Real clips, real ffmpeg, the cheap audio front ends."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import mmcache
from mmcache.extraction import HASH_MEMO, finalize, plan_to_dir, run_planned_shard
from mmcache.shards import PENDING, Progress
from mmcache.synth import CLASSES, make_clip, make_labelled_set

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

A, B = "logmel", "mfcc"  # the field the cache has, the field being added
LOCAL = {".lock", HASH_MEMO, PENDING}  # local files, not part of the cache


def published(root: Path) -> dict[str, bytes]:
    """Every cache file a reader may see, by relative path (local hints and temp files left out)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in LOCAL and not p.name.startswith((".tmp-", ".lock"))
    }


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmcache.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 3: the input-hash memo is a hint --------------------------------------------------------------


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    """Two different videos."""
    d = tmp_path_factory.mktemp("two")
    make_clip(d / "a.mp4", duration=1.0, style=CLASSES[0])
    make_clip(d / "b.mp4", duration=1.0, style=CLASSES[1], variant=1)
    return d


def poison(memo: Path, real: str, claimed: str) -> None:
    """Make the memo claim `claimed` wherever it says `real` (whatever its layout)."""
    text = memo.read_text()
    assert real in text
    memo.write_text(text.replace(real, claimed))


def rows_by_source(root: Path) -> dict[str, dict]:
    return {r["source"]: r for r in mmcache.open_cache(root).samples()}


@pytest.mark.hardening(3)
def test_memo_claiming_another_videos_hash_makes_no_false_alias(tmp_path, two):
    made = tmp_path / "made"
    mmcache.extract([two], [A], made)
    sha_a, sha_b = sha(two / "a.mp4"), sha(two / "b.mp4")
    poison(made / HASH_MEMO, sha_b, sha_a)  # "b.mp4 has a.mp4's content"

    fresh = tmp_path / "fresh"  # a cache whose index vouches for nothing
    fresh.mkdir()
    shutil.copy(made / HASH_MEMO, fresh / HASH_MEMO)
    report = mmcache.extract([two], [A], fresh)
    rows = rows_by_source(fresh)
    assert report.new_ok == 2 and sorted(rows) == ["a.mp4", "b.mp4"]
    assert rows["b.mp4"]["sha256"] == sha_b and rows["b.mp4"]["key"] == sha_b[:24] and "aliases" not in rows["a.mp4"]

    # the cache that made the memo: B's row says sha_b, so the claim is not believed either; adding a
    # field needs every ok video of each shard, which a false alias would have lost
    report = mmcache.extract([two], [A, B], made)
    assert report.fields_added == {B: 1} and mmcache.verify_cache(made) == []
    assert {r["sha256"] for r in rows_by_source(made).values()} == {sha_a, sha_b}


@pytest.mark.hardening(3)
def test_memo_value_that_is_not_a_digest_never_becomes_a_key(tmp_path, two):
    made = tmp_path / "made"
    mmcache.extract([two], [A], made)
    fresh = tmp_path / "deep" / "fresh"
    fresh.mkdir(parents=True)
    shutil.copy(made / HASH_MEMO, fresh / HASH_MEMO)
    poison(fresh / HASH_MEMO, sha(two / "b.mp4"), "../../x")
    mmcache.extract([two], [A], fresh)
    rows = rows_by_source(fresh)
    assert rows["b.mp4"]["sha256"] == sha(two / "b.mp4")
    with tarfile.open(fresh / A / "000000.tar") as t:
        names = t.getnames()
    assert sorted(names) == sorted(f"{r['key']}{ext}" for r in rows.values() for ext in (".npy", ".ts.npy"))
    assert not list(tmp_path.rglob("x.npy")) and not list(tmp_path.rglob("x.ts.npy"))
    assert "../" not in (fresh / HASH_MEMO).read_text()  # the bad entry was dropped, not kept


MALFORMED = {
    "not json": b"{not json",
    "not utf-8": b"\xff\xfe{}",
    "a list": b"[1, 2, 3]",
    "deep nesting": b"[" * 200_000,
    "huge int": b'{"version": 2, "files": {"/x": [' + b"9" * 6000 + b"]}}",
    "wrong types": json.dumps({"version": 2, "files": {"/x": "y", "/y": [1, 2], "/z": [True] * 6}}).encode(),
    "v1 layout": json.dumps({"/x": [1, 2, "0" * 64]}).encode(),
}


@pytest.mark.hardening(3)
def test_malformed_memo_is_ignored(tmp_path, two):
    made = tmp_path / "made"
    mmcache.extract([two], [A], made)
    expected = published(made)
    garbage = {**MALFORMED, "non-hex digests": (made / HASH_MEMO).read_text().replace("e", "g").encode()}
    for what, data in garbage.items():
        root = tmp_path / what.replace(" ", "-")
        root.mkdir()
        (root / HASH_MEMO).write_bytes(data)
        report = mmcache.extract([two], [A], root)
        assert report.new_ok == 2, what
        assert published(root) == expected, what
        assert isinstance(json.loads((root / HASH_MEMO).read_text()), dict), what  # rewritten, well formed


@pytest.mark.hardening(3)
def test_memo_is_not_trusted_for_a_rewritten_file_or_a_same_name_twin(tmp_path):
    """A file rewritten in place with its old size and mtime is read again (its ctime moved); two
    inputs of one name and size in two folders claimed to be one are both read before aliasing."""
    d1, d2 = tmp_path / "in" / "d1", tmp_path / "in" / "d2"
    d1.mkdir(parents=True)
    d2.mkdir()
    for d in (d1, d2):
        (d / "x.mp4").write_bytes(os.urandom(20_000))  # not videos: failed rows, keyed by content all the same
    root = tmp_path / "cache"
    mmcache.extract([d1, d2], [A], root)
    sha1, sha2 = sha(d1 / "x.mp4"), sha(d2 / "x.mp4")
    poison(root / HASH_MEMO, sha2, sha1)
    report = mmcache.extract([d1, d2], [A], root)
    assert (report.inputs, report.cached) == (2, 2)  # not one input with an alias

    st = (d2 / "x.mp4").stat()
    (d2 / "x.mp4").write_bytes(os.urandom(20_000))
    os.utime(d2 / "x.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = mmcache.extract([d1, d2], [A], root)
    assert (report.cached, report.new_failed) == (1, 1)
    assert sha(d2 / "x.mp4") in {r["sha256"] for r in mmcache.open_cache(root).samples()}


@pytest.mark.hardening(3)
def test_rerun_over_known_aliases_reads_nothing(tmp_path, two, monkeypatch):
    import mmcache.inputs

    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir()
    shutil.copy(two / "a.mp4", tmp_path / "in" / "a" / "clip.mp4")
    shutil.copy(two / "a.mp4", tmp_path / "in" / "b" / "copy.mp4")
    mmcache.extract([tmp_path / "in"], [A], tmp_path / "c")
    reads = []
    real = mmcache.inputs.sha256_file
    monkeypatch.setattr(mmcache.inputs, "sha256_file", lambda p: reads.append(p.name) or real(p))
    report = mmcache.extract([tmp_path / "in"], [A], tmp_path / "c")
    assert (report.inputs, report.cached, reads) == (1, 1, [])


# -- 10: a full disk is one line, and a re-run resumes byte for byte -------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, kib: int):
    """A tmpfs of `kib` KiB mounted on `path` (skips when mounting is not permitted), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Take every free byte of the file system holding `folder` but `leave`."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # unbuffered: close writes nothing
        while True:
            f.write(b"\0" * 4096)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def one_error_line(res: subprocess.CompletedProcess, root: Path) -> str:
    """The failed command's error: exit 1, no traceback, one `error:` line, the last one, naming a file
    of the cache and saying the disk is full."""
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], res.stderr[-3000:]
    assert "disk full" in errors[0] and str(root) in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("six")
    for i in range(6):
        make_clip(d / f"v{i}.mp4", duration=1.0, style=CLASSES[i % 3], variant=i)
    return d


@pytest.fixture(scope="module")
def six_clean(tmp_path_factory, six):
    """backend -> the cache of `six` extracted in one go, one video a shard."""
    made: dict[str, Path] = {}

    def get(backend: str = "webdataset") -> Path:
        if backend not in made:
            made[backend] = tmp_path_factory.mktemp(f"six-{backend}") / "cache"
            mmcache.extract([six], [A], made[backend], shard_size=1, backend=backend)
        return made[backend]

    return get


def pages(root: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) for p in root.rglob("*") if p.is_file())


@pytest.mark.hardening(10)
@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_disk_full_during_extract_is_one_line_and_resumes_byte_identical(tmp_path, six, six_clean, backend):
    clean, resumed = six_clean(backend), tmp_path / "resumed"
    first = tmp_path / "first"  # the first video alone: shard 000000 of the whole set too
    first.mkdir()
    shutil.copy(six / "v0.mp4", first / "v0.mp4")
    with tmpfs(tmp_path / "mnt", 4 * (pages(clean) + 16)) as mnt:
        root = mnt / "cache"
        assert cli("extract", first, "-e", A, "--format", backend, "--out", root).returncode == 0
        fill(mnt, leave=8192)  # room for the memo and a little: the next shard cannot be written
        res = cli("extract", six, "-e", A, "--shard-size", 1, "--format", backend, "--out", root)
        one_error_line(res, root)
        assert list(json.loads((root / "manifest.json").read_text())["shards"]) == ["000000"]
        check = cli("verify", root)
        assert check.returncode == 0, check.stderr
        shutil.copytree(root, resumed, ignore=shutil.ignore_patterns("filler"))  # "enlarge the disk"
    res = cli("extract", six, "-e", A, "--shard-size", 1, "--format", backend, "--out", resumed)
    assert res.returncode == 0, res.stderr[-3000:]
    assert published(resumed) == published(clean)
    assert not [p for p in resumed.rglob(".tmp-*")]


@pytest.mark.hardening(10)
def test_disk_full_in_run_shard_and_finalize_is_one_line_and_resumes(tmp_path, six, six_clean):
    clean = six_clean()
    with tmpfs(tmp_path / "mnt", 4 * (pages(clean) + 16)) as mnt:
        root = mnt / "cache"
        assert cli("plan", six, "-e", A, "--shard-size", 1, "--out", root).returncode == 0
        filler = fill(mnt)
        one_error_line(cli("run-shard", root, "000000"), root)
        filler.unlink()
        for s in range(6):
            assert cli("run-shard", root, f"{s:06d}").returncode == 0
        filler = fill(mnt)
        one_error_line(cli("finalize", root), root)
        assert not (root / "manifest.json").exists()  # nothing was published
        filler.unlink()
        assert cli("finalize", root).returncode == 0
        assert published(root) == published(clean)


# -- 12: a field being added is invisible until complete; its journal is a hint -------------------


class Interrupted(Exception):
    pass


class Watch(Progress):
    """Records the field shards encoded; raises once `stop_after` shard tasks have been published
    (when the next one starts probing), like a kill between two shards."""

    def __init__(self, stop_after: int | None = None):
        self.stop_after, self.tasks, self.encoded = stop_after, 0, []

    def start(self, task: str, total: int) -> None:
        if task == "probe":
            self.tasks += 1
            if self.stop_after is not None and self.tasks > self.stop_after:
                raise Interrupted
        elif "[" in task:
            self.encoded.append(task)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """12 labelled clips; the cache (field A, 3 shards) and the same with B added in one go."""
    d = tmp_path_factory.mktemp("labelled")
    make_labelled_set(d / "videos", per_class=4, duration=1.0)
    sheet = d / "videos" / "videos.csv"
    mmcache.extract([sheet], [A], d / "base", shard_size=4)
    shutil.copytree(d / "base", d / "whole")
    mmcache.extract([sheet], [B], d / "whole", shard_size=4)
    assert sorted(mmcache.open_cache(d / "whole").fields) == [A, B]
    return d


def interrupted(labelled: Path, root: Path, stop_after: int) -> Path:
    """A copy of the base cache where adding B stopped after `stop_after` shards."""
    shutil.copytree(labelled / "base", root)
    with pytest.raises(Interrupted):
        mmcache.extract([labelled / "videos" / "videos.csv"], [B], root, shard_size=4, progress=Watch(stop_after))
    return root


def journal(root: Path) -> dict:
    return json.loads((root / PENDING).read_text())


@pytest.mark.hardening(12)
def test_readers_see_complete_fields_while_one_is_added_and_a_resume_completes_it(tmp_path, labelled):
    from mmfit.config import build_config
    from mmfit.trainer import train

    root = interrupted(labelled, tmp_path / "cache", stop_after=1)
    assert (root / B / "000000.tar").is_file()  # one shard of B is done...
    assert sorted(json.loads((root / "manifest.json").read_text())["fields"]) == [A]  # ...but not published
    assert sorted(journal(root)["fields"][B]["files"]) == ["000000"]
    check = cli("verify", root)
    assert check.returncode == 0, check.stderr
    cache = mmcache.open_cache(root)
    assert cache.load_field(A).present.all() and len(cache.samples()) == 12
    run = train(build_config(cache=str(root), out=str(tmp_path / "run"), fields=[A], epochs=1, hidden=8, seed=0))
    assert run is not None

    watch = Watch()
    report = mmcache.extract([labelled / "videos" / "videos.csv"], [B], root, shard_size=4, progress=watch)
    assert report.fields_added == {B: 3}
    assert watch.encoded == [f"{B} [000001]", f"{B} [000002]"]  # the finished shard was not redone
    assert not (root / PENDING).exists()
    assert published(root) == published(labelled / "whole")
    assert mmcache.verify_cache(root) == []


def tamper_sha(root: Path) -> None:
    doc = journal(root)
    doc["fields"][B]["files"]["000000"]["sha256"] = "0" * 64
    (root / PENDING).write_text(json.dumps(doc))


def tamper_bytes(root: Path) -> None:
    tar = root / B / "000000.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 1  # inside the first payload: size unchanged, sha256 differs
    tar.write_bytes(bytes(data))


TAMPER = {
    "wrong sha256": (tamper_sha, ["000000"]),
    "file changed": (tamper_bytes, ["000000"]),
    "file missing": (lambda root: (root / B / "000000.tar").unlink(), ["000000"]),
    "not json": (lambda root: (root / PENDING).write_text("{"), ["000000", "000001"]),
    "deep nesting": (lambda root: (root / PENDING).write_text("[" * 200_000), ["000000", "000001"]),
    "a list": (lambda root: (root / PENDING).write_text("[]"), ["000000", "000001"]),
    "other fingerprint": (
        lambda root: (root / PENDING).write_text(
            (root / PENDING).read_text().replace(journal(root)["fields"][B]["fingerprint"], "1" * 64)
        ),
        ["000000", "000001"],
    ),
}


@pytest.mark.hardening(12)
@pytest.mark.parametrize("how", list(TAMPER))
def test_a_tampered_journal_is_not_trusted_and_those_shards_are_redone(tmp_path, labelled, how):
    tamper, redone = TAMPER[how]
    root = interrupted(labelled, tmp_path / "cache", stop_after=2)
    assert sorted(journal(root)["fields"][B]["files"]) == ["000000", "000001"]
    tamper(root)
    watch = Watch()
    mmcache.extract([labelled / "videos" / "videos.csv"], [B], root, shard_size=4, progress=watch)
    assert watch.encoded == [f"{B} [{s}]" for s in [*redone, "000002"]]
    assert published(root) == published(labelled / "whole")
    assert not (root / PENDING).exists()


@pytest.mark.hardening(12)
def test_snakemake_split_resumes_from_the_journal_and_publishes_complete_fields(tmp_path, labelled):
    root = interrupted(labelled, tmp_path / "cache", stop_after=1)
    sheet = labelled / "videos" / "videos.csv"
    (root / "parts").mkdir()  # a part left by an earlier plan that was never finalized: not reused as done
    (root / "parts" / "000002.json").write_text(json.dumps({"shard": "000002", "samples": None, "fields": {}}))
    shards = plan_to_dir([sheet], [B], root, shard_size=4)
    assert shards == ["000000", "000001", "000002"]
    watches = {s: Watch() for s in shards}
    for s in shards[:2]:
        run_planned_shard(root, s, progress=watches[s])
    assert watches["000000"].encoded == [] and watches["000001"].encoded == [f"{B} [000001]"]
    assert sorted(json.loads((root / "manifest.json").read_text())["fields"]) == [A]  # until finalize
    run_planned_shard(root, "000002", progress=watches["000002"])
    assert watches["000002"].encoded == [f"{B} [000002]"]
    finalize(root)
    assert published(root) == published(labelled / "whole")
    assert not (root / PENDING).exists() and mmcache.verify_cache(root) == []
