"""shards.py: a shard task writes and publishes its files and returns a part (its manifest entries);
the journal of fields being added keeps finished files across an interrupted run, reused only when
they check out; failures and write errors are named plainly."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from mmcache.errors import CacheError
from mmcache.inputs import key_input
from mmcache.shards import (
    PENDING,
    Encoders,
    Pending,
    Progress,
    Task,
    disk_full,
    load_hint_json,
    probe_jobs,
    read_hint,
    read_part,
    run_task,
    sample_row,
    with_source,
    write_error,
    write_file,
    write_part,
)
from mmcache.store import FORMATS
from mmcache.store.atomic import sha256_file
from mmcache.store.manifest import new_manifest, read_samples
from mmcache.types import VideoInput

ARGS = {"logmel": "logmel:fps=2,window=0.5,batch_size=4", "mfcc": "mfcc:fps=2,window=0.5,batch_size=4"}


def keyed(paths) -> list[VideoInput]:
    videos = [VideoInput(p, p.name) for p in paths]
    for v in videos:
        key_input(v)
    return videos


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory, clips, bad_files):
    """A webdataset cache of two new shards with field logmel, written by run_task, and its parts."""
    root = tmp_path_factory.mktemp("shards") / "cache"
    root.mkdir()
    shard0 = keyed([clips / "ocean.mp4", clips / "silent.mp4", bad_files["zero"]])
    shard1 = keyed([clips / "forest.mp4"])
    manifest, pending, encoders = new_manifest("webdataset"), Pending(root, "webdataset"), Encoders(ARGS, {})
    parts = [
        run_task(root, "webdataset", Task(s, "new", ["logmel"], v), encoders)
        for s, v in [("000000", shard0), ("000001", shard1)]
    ]
    for part in parts:
        pending.add(manifest, part)
    pending.promote(manifest, pending.complete(manifest))  # logmel has a file for every shard: listed
    return root, manifest, parts, {"000000": shard0, "000001": shard1}


def test_a_new_shard_publishes_its_field_and_samples_index(two_shards, bad_files):
    root, manifest, parts, videos = two_shards
    part = parts[0]
    ocean, silent, zero = videos["000000"]
    rows = {r["key"]: r for r in read_samples(root / part["samples"]["path"])}
    assert [rows[v.key]["status"] for v in (ocean, silent, zero)] == ["ok", "ok", "failed"]
    assert part["failures"] == [["zero_bytes.mp4", "zero_bytes.mp4: empty file (0 bytes)"]]
    entry = part["fields"]["logmel"]["file"]
    assert entry["path"] == "logmel/000000.tar"
    assert sha256_file(root / entry["path"]) == (entry["sha256"], entry["bytes"])
    stored = {key: feats.shape for key, feats, _ in FORMATS["webdataset"].read(root / entry["path"])}
    assert stored == {ocean.key: (entry["steps"], 64)} and entry["count"] == 1
    assert entry["missing"] == {silent.key: "no audio stream"}  # ok in the index, absent in this field
    assert sorted(manifest["fields"]["logmel"]["files"]) == ["000000", "000001"]
    assert not any(p.name.startswith(".tmp-") for p in root.rglob("*"))


def test_an_add_task_writes_only_the_new_fields_file(two_shards, tmp_path):
    root, manifest, _, videos = two_shards
    root = shutil.copytree(root, tmp_path / "cache")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    ok = videos["000000"][:2]
    part = run_task(root, "webdataset", Task("000000", "add", ["mfcc"], ok), Encoders(ARGS, manifest["fields"]))
    assert part["samples"] is None and part["failures"] == [] and list(part["fields"]) == ["mfcc"]
    assert part["fields"]["mfcc"]["file"]["path"] == "mfcc/000000.tar" and (root / "mfcc" / "000000.tar").is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing else rewritten


def test_an_add_task_with_no_fields_left_probes_nothing(tmp_path):
    gone = VideoInput(tmp_path / "gone.mp4", "gone.mp4", key="ab" * 12)  # would fail any probe
    part = run_task(tmp_path, "webdataset", Task("000007", "add", [], [gone]), Encoders({}, {}))
    assert part == {"shard": "000007", "samples": None, "fields": {}, "failures": []}


def test_the_journal_keeps_a_partly_added_field_and_reuses_only_files_that_check_out(two_shards, tmp_path):
    root, manifest, _, videos = two_shards
    root = shutil.copytree(root, tmp_path / "cache")
    manifest = json.loads(json.dumps(manifest))
    encoders = Encoders(ARGS, manifest["fields"])
    add0 = Task("000000", "add", ["mfcc"], videos["000000"][:2])
    pending = Pending(root, "webdataset")
    pending.add(manifest, run_task(root, "webdataset", add0, encoders))
    assert pending.complete(manifest) == [] and "mfcc" not in manifest["fields"]  # shard 000001 still lacks it
    pending.save()
    assert json.loads((root / PENDING).read_text())["fields"]["mfcc"]["files"]["000000"]["path"] == "mfcc/000000.tar"

    rest, done = Pending.load(root, manifest).reuse(add0, Encoders(ARGS, manifest["fields"]))
    assert rest.fields == [] and list(done) == ["mfcc"]  # an interrupted run resumes without redoing it
    other = Encoders({**ARGS, "mfcc": "mfcc:fps=4,window=0.5"}, manifest["fields"])
    assert Pending.load(root, manifest).reuse(add0, other)[0].fields == ["mfcc"]  # other settings: redone
    with open(root / "mfcc" / "000000.tar", "ab") as f:
        f.write(b"\0")
    assert Pending.load(root, manifest).reuse(add0, Encoders(ARGS, manifest["fields"]))[0].fields == ["mfcc"]


def test_the_journal_drops_malformed_entries(two_shards, tmp_path):
    root, manifest, _, _ = two_shards
    good = {"path": "mfcc/000000.tar", "bytes": 10, "sha256": "a" * 64, "count": 1, "steps": 2, "missing": {}}
    fields = {
        "mfcc": {"fingerprint": "b" * 64, "files": {"000000": good, "999999": good}},  # 999999 is no shard
        "bad-count": {"fingerprint": "b" * 64, "files": {"000000": {**good, "count": True}}},
        "bad-path": {"fingerprint": "b" * 64, "files": {"000000": {**good, "path": "../x.tar"}}},
        "bad-fp": {"fingerprint": "nothex", "files": {"000000": good}},
        "Bad Name": {"fingerprint": "b" * 64, "files": {"000000": good}},
        "logmel": {"fingerprint": "b" * 64, "files": {"000000": good}},  # listed: the manifest's business
    }
    (tmp_path / PENDING).write_text(json.dumps({"version": 1, "fields": fields}))
    pending = Pending.load(tmp_path, manifest)
    assert list(pending.fields) == ["mfcc"] and list(pending.fields["mfcc"]["files"]) == ["000000"]
    (tmp_path / PENDING).write_text(json.dumps({"version": 2, "fields": fields}))
    assert Pending.load(tmp_path, manifest).fields == {}


def test_save_removes_the_journal_when_nothing_is_pending(tmp_path):
    (tmp_path / PENDING).write_text("{}")
    Pending(tmp_path, "hdf5").save()
    assert not (tmp_path / PENDING).exists()


def test_task_round_trips_through_json_with_absolute_paths(tmp_path, monkeypatch, clips):
    monkeypatch.chdir(clips)
    (v,) = keyed([clips / "ocean.mp4"])
    v.path, v.meta, v.id = v.path.relative_to(clips), {"label": "ocean"}, "x1"
    task = Task("000003", "new", ["logmel", "mfcc"], [v], {v.key: ["copy.mp4"]})
    back = Task.from_json(json.loads(json.dumps(task.to_json())))
    assert back.videos[0].path == clips / "ocean.mp4" and back.videos[0].path.is_absolute()
    assert (back.shard, back.kind, back.fields, back.aliases) == (task.shard, task.kind, task.fields, task.aliases)
    assert (back.videos[0].key, back.videos[0].meta, back.videos[0].id) == (v.key, {"label": "ocean"}, "x1")


def test_probe_jobs_fail_each_unusable_input_with_its_reason(tmp_path, clips, bad_files):
    os.mkfifo(tmp_path / "pipe.mp4")
    videos = keyed([clips / "ocean.mp4", bad_files["zero"], bad_files["audio_only"], tmp_path / "pipe.mp4"])
    videos += keyed([tmp_path / "gone.mp4"])
    jobs, failed = probe_jobs(videos, 30, Progress())
    assert [j.video.source for j in jobs] == ["ocean.mp4"] and jobs[0].info.video.width == 160
    reasons = [failed[v.key] for v in videos[1:]]
    assert reasons == [
        "zero_bytes.mp4: empty file (0 bytes)",
        "audio_only.mp4: no video stream (audio-only or not a video)",
        "pipe.mp4: not a regular file",
        "gone.mp4: file missing or unreadable",
    ]


def test_failure_reasons_name_the_input_as_given(tmp_path):
    v = VideoInput(tmp_path / "sub" / "a.mp4", "sub/a.mp4")
    assert with_source(f"{v.path}: moov atom not found", v) == "sub/a.mp4: moov atom not found"
    assert with_source("decoder stalled", v) == "decoder stalled"


def test_a_sample_row_records_the_failure_and_aliases_only_when_there_are_some(clips):
    (v,) = keyed([clips / "ocean.mp4"])
    failed = sample_row(v, None, "ocean.mp4: broken", [])
    assert (failed["status"], failed["error"], failed["duration"], failed["streams"]) == (
        "failed",
        "ocean.mp4: broken",
        None,
        None,
    )
    assert "aliases" not in failed and failed["sha256"] == v.sha256
    assert sample_row(v, None, None, ["copy.mp4"])["aliases"] == ["copy.mp4"]


def test_parts_are_written_and_read_back(tmp_path):
    part = {"shard": "000002", "samples": None, "fields": {}, "failures": [["a.mp4", "why"]]}
    assert read_part(tmp_path, "000002") is None
    write_part(tmp_path, part)
    assert read_part(tmp_path, "000002") == part
    (tmp_path / "parts" / "000002.json").write_text("{cut")
    with pytest.raises(CacheError, match=r"000002\.json: unreadable part"):
        read_part(tmp_path, "000002")


def test_hints_that_are_not_small_regular_files_read_as_nothing(tmp_path):
    (tmp_path / "hint.json").write_text('{"a": 1}')
    assert read_hint(tmp_path / "hint.json") == b'{"a": 1}' and load_hint_json(tmp_path / "hint.json") == {"a": 1}
    assert read_hint(tmp_path / "hint.json", limit=3) is None
    (tmp_path / "link.json").symlink_to(tmp_path / "hint.json")
    os.mkfifo(tmp_path / "fifo.json")  # nobody writes it: reading must not wait
    for name in ["link.json", "fifo.json", "gone.json"]:
        assert read_hint(tmp_path / name) is None
    for text in ["{cut", "[" * 100_000, "1" * 5000]:  # bad JSON, too deep, an integer past the digit limit
        (tmp_path / "bad.json").write_text(text)
        assert load_hint_json(tmp_path / "bad.json") is None


def test_a_full_disk_is_named_as_such_and_other_write_errors_plainly(tmp_path):
    path = tmp_path / "logmel" / "000000.tar"
    assert "disk full while writing it" in write_error(path, OSError(errno.ENOSPC, "No space left on device"))
    assert "disk full (quota exceeded)" in write_error(path, OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(RuntimeError("Can't write data (file write failed: errno = 28, error message = ...)"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert write_error(path, OSError(errno.EACCES, "Permission denied")) == f"{path}: cannot write (Permission denied)"
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheError, match=r"/file/x\.json: cannot write \("):
        write_file(tmp_path / "file" / "x.json", b"{}")
