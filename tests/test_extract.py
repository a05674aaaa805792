"""End to end: real and synthetic videos plus bad files -> a cache that verifies and stock readers read."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import webdataset as wds
from conftest import FAST_RESNET

import mmcache
from mmcache.errors import CacheError, DecodeError, FingerprintMismatch
from mmcache.schema import schema_errors
from mmcache.store.lock import CacheLock
from mmcache.synth import make_clip

ENCODERS = [FAST_RESNET, "logmel:fps=2,window=0.5", "minilm-text"]
REASONS = {  # bad file -> words its failure row must contain
    "zero_bytes.mp4": "empty file",
    "random_bytes.mp4": "Invalid data",
    "no_moov.mp4": "moov atom not found",
    "text_file.mp4": "Invalid data",
    "audio_only.mp4": "no video stream",
}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every published file."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name not in (".lock", ".input-hashes.json")
    }


@pytest.fixture(scope="module", params=["webdataset", "hdf5"])
def mixed_cache(request, tmp_path_factory, clips, bad_files, real_videos):
    d = tmp_path_factory.mktemp(f"mixed-{request.param}")
    videos = d / "videos"
    videos.mkdir()
    for p in [*real_videos, *clips.glob("*"), *bad_files.values()]:
        shutil.copy(p, videos / p.name)
    report = mmcache.extract([videos], ENCODERS, d / "cache", shard_size=5, backend=request.param)
    return videos, d / "cache", report


def test_bad_files_become_failure_rows_and_the_run_goes_on(mixed_cache):
    _, root, report = mixed_cache
    assert (report.new_ok, report.new_failed) == (8, 5)
    rows = {r["source"]: r for r in mmcache.open_cache(root).samples()}
    for name, words in REASONS.items():
        assert rows[name]["status"] == "failed"
        assert name in rows[name]["error"] and words in rows[name]["error"], rows[name]["error"]
    assert all(r["status"] == "ok" for n, r in rows.items() if n not in REASONS)


def test_cache_verifies_and_manifest_matches_schema(mixed_cache):
    _, root, _ = mixed_cache
    assert mmcache.verify_cache(root) == []
    cache = mmcache.open_cache(root)
    assert schema_errors(cache.manifest, "cache-manifest") == []
    assert sorted(cache.fields) == ["logmel", "minilm-text", "resnet18"]
    assert cache.fields["resnet18"]["dtype"] == "float16" and cache.fields["resnet18"]["dim"] == 512


def test_no_shard_holds_a_failed_or_partial_sample(mixed_cache):
    _, root, _ = mixed_cache
    cache = mmcache.open_cache(root)
    failed = {r["key"] for r in cache.samples("failed")}
    for name in cache.fields:
        for shard in cache.shards:
            data = cache.read_field_shard(name, shard)
            assert not failed & set(data)
            for feats, ts in data.values():
                assert len(feats) == len(ts) > 0 and np.isfinite(feats).all()


def test_stock_readers_read_every_field(mixed_cache):
    _, root, _ = mixed_cache
    cache = mmcache.open_cache(root)
    if cache.backend == "hdf5":
        for field in cache.fields.values():
            n = 0
            for entry in field["files"].values():
                with h5py.File(root / entry["path"]) as f:
                    offsets = f["offsets"][()]
                    assert f["feats"].shape == (offsets[-1], field["dim"]) and f["ts"].shape == (offsets[-1], 2)
                    assert len(f["keys"]) == len(offsets) - 1 == entry["count"]
                    n += entry["count"]
            assert n > 0
        return
    for _name, field in cache.fields.items():
        n = 0
        for entry in field["files"].values():
            if entry["count"] == 0:
                continue  # a valid empty tar (no sample of the shard has this field); wds refuses empty datasets
            for sample in wds.WebDataset(str(root / entry["path"]), shardshuffle=False).decode():
                assert sample["npy"].shape[1] == field["dim"] and sample["ts.npy"].shape == (len(sample["npy"]), 2)
                n += 1
        assert n == sum(e["count"] for e in field["files"].values())


def test_timestamps_follow_the_grid(mixed_cache):
    _, root, _ = mixed_cache
    cache = mmcache.open_cache(root)
    rows = {r["key"]: r for r in cache.samples("ok")}
    vision = cache.load_field("resnet18")
    for key, ts in zip(vision.keys, vision.ts, strict=True):
        n = len(ts)
        assert np.allclose(ts[:, 0], np.arange(n) * 0.5, atol=0.02), rows[key]["source"]
        assert np.allclose(ts[:, 1] - ts[:, 0], 0.5)
        assert abs(n - rows[key]["duration"] * 2) <= 1.01  # one step per half second of video
    audio = cache.load_field("logmel")
    for ts, present in zip(audio.ts, audio.present, strict=True):
        if present:
            assert np.allclose(ts[:, 0], np.arange(len(ts)) * 0.5, atol=1e-3)


def test_missing_modalities_are_flagged_not_failed(mixed_cache):
    _, root, _ = mixed_cache
    cache = mmcache.open_cache(root)
    by_source = {r["source"]: r["key"] for r in cache.samples("ok")}
    missing = {k: v for e in cache.fields["logmel"]["files"].values() for k, v in e["missing"].items()}
    assert missing == {
        by_source["silent.mp4"]: "no audio stream",
        **{by_source[n]: "no audio stream" for n in ("carphone_distorted.mp4", "carphone_pristine.mp4", "bikes.mp4")},
    }
    text = cache.load_field("minilm-text")
    with_text = {k for k, p in zip(text.keys, text.present, strict=True) if p}
    assert with_text == {by_source[n] for n in ("sunrise.mp4", "ocean.mp4", "forest.mp4")}
    feats = text.feats[text.keys.index(by_source["ocean.mp4"])]
    assert feats.shape == (2, 384)  # one step per subtitle cue
    assert np.allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1, atol=1e-2)


def test_rerun_is_a_noop(mixed_cache):
    videos, root, _ = mixed_cache
    before = snapshot(root)
    report = mmcache.extract([videos], ENCODERS, root, shard_size=5, backend=mmcache.open_cache(root).backend)
    assert report.cached == 13 and report.shards_written == [] and report.fields_added == {}
    assert snapshot(root) == before


def test_rerun_does_not_reread_unchanged_videos(tmp_path, clips, monkeypatch):
    import mmcache.inputs

    videos = tmp_path / "v"
    shutil.copytree(clips, videos)
    mmcache.extract([videos], ["logmel"], tmp_path / "c")
    reads = []
    real = mmcache.inputs.sha256_file
    monkeypatch.setattr(mmcache.inputs, "sha256_file", lambda p: reads.append(p.name) or real(p))
    assert mmcache.extract([videos], ["logmel"], tmp_path / "c").cached == 4
    assert reads == []
    make_clip(videos / "ocean.mp4", duration=1.0, variant=3)  # same name, new content and mtime
    report = mmcache.extract([videos], ["logmel"], tmp_path / "c")
    assert reads == ["ocean.mp4"] and report.new_ok == 1


def test_new_videos_go_to_new_shards_with_every_field(tmp_path, clips):
    videos = tmp_path / "v"
    shutil.copytree(clips, videos)
    root = tmp_path / "cache"
    mmcache.extract([videos], [FAST_RESNET, "logmel"], root, shard_size=10)
    before = snapshot(root)
    make_clip(videos / "zzz_new.mp4", duration=1.0)
    report = mmcache.extract([videos], ["logmel"], root, shard_size=10)  # resnet18 is rebuilt from the manifest
    assert report.shards_written == ["000001"] and report.new_ok == 1
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before and k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    assert {"resnet18/000001.tar", "logmel/000001.tar", "samples/000001.jsonl"} <= set(after)
    assert mmcache.verify_cache(root) == []


def test_adding_an_encoder_writes_only_that_field(tmp_path, clips):
    root = tmp_path / "cache"
    mmcache.extract([clips], ["logmel"], root, shard_size=2)
    before = snapshot(root)
    report = mmcache.extract([clips], ["mfcc"], root, shard_size=2)
    after = snapshot(root)
    assert report.fields_added == {"mfcc": 2} and report.shards_written == []
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"manifest.json", "mfcc/000000.tar", "mfcc/000001.tar"}
    assert mmcache.verify_cache(root) == []


def test_adding_a_field_without_the_source_videos_is_a_clear_error(tmp_path, clips):
    root = tmp_path / "cache"
    mmcache.extract([clips], ["logmel"], root)
    other = tmp_path / "other"
    make_clip(other / "x.mp4", duration=1.0)
    with pytest.raises(mmcache.errors.InputError, match="not among the inputs"):
        mmcache.extract([other], ["mfcc"], root)


def test_hdf5_backend_holds_the_same_content(tmp_path, clips):
    tar_root, h5_root = tmp_path / "tar", tmp_path / "h5"
    mmcache.extract([clips], [FAST_RESNET, "logmel"], tar_root)
    mmcache.extract([clips], [FAST_RESNET, "logmel"], h5_root, backend="hdf5")
    assert mmcache.verify_cache(h5_root) == []
    a, b = mmcache.open_cache(tar_root), mmcache.open_cache(h5_root)
    for name in ("resnet18", "logmel"):
        fa, fb = a.load_field(name), b.load_field(name)
        assert fa.keys == fb.keys
        for x, y in zip(fa.feats + fa.ts, fb.feats + fb.ts, strict=True):
            assert np.array_equal(x, y)
    with h5py.File(h5_root / "resnet18" / "000000.h5") as f:  # stock h5py: ragged concat + offsets
        assert f["feats"].shape[1] == 512 and f["offsets"][-1] == f["feats"].shape[0] == f["ts"].shape[0]


def test_float32_is_opt_in_and_recorded(tmp_path, clips):
    root = tmp_path / "c"
    mmcache.extract([clips / "ocean.mp4"], ["logmel:store_dtype=float32", "mfcc"], root)
    cache = mmcache.open_cache(root)
    assert cache.fields["logmel"]["dtype"] == "float32" and cache.fields["mfcc"]["dtype"] == "float16"
    assert cache.load_field("logmel").feats[0].dtype == np.float32
    assert cache.fields["logmel"]["fingerprint"] != mmcache.open_cache(root).fields["mfcc"]["fingerprint"]


def test_changed_options_under_one_field_name_are_refused(tmp_path, clips):
    root = tmp_path / "c"
    mmcache.extract([clips / "ocean.mp4"], ["logmel:fps=2"], root)
    with pytest.raises(FingerprintMismatch, match="options.fps"):
        mmcache.extract([clips / "ocean.mp4"], ["logmel:fps=4"], root)
    mmcache.extract([clips / "ocean.mp4"], ["logmel:fps=4,field=logmel4"], root)  # a new name is fine
    assert sorted(mmcache.open_cache(root).fields) == ["logmel", "logmel4"]


def test_video_sheet_ids_text_and_metadata(tmp_path, clips):
    sheet = tmp_path / "sheet.csv"
    with open(sheet, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "text", "label"])
        w.writerow([str(clips / "ocean.mp4"), "vid-1", "a boat on the sea", "ocean"])
        w.writerow([str(clips / "silent.mp4"), "vid-2", "", "quiet"])
    root = tmp_path / "c"
    mmcache.extract([sheet], ["minilm-text"], root)
    cache = mmcache.open_cache(root)
    rows = {r["id"]: r for r in cache.samples()}
    assert rows["vid-1"]["meta"] == {"label": "ocean"} and rows["vid-2"]["meta"] == {"label": "quiet"}
    text = cache.load_field("minilm-text", [rows["vid-1"]["key"], rows["vid-2"]["key"]])
    assert text.feats[0].shape == (1, 384) and text.ts[0][0, 0] == 0  # the text column beats the sidecar
    assert not text.present[1]  # silent.mp4 has no text at all: flagged


def test_same_content_is_one_sample_same_name_in_two_folders_is_two(tmp_path, clips):
    a, b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    shutil.copy(clips / "ocean.mp4", a / "clip.mp4")
    shutil.copy(clips / "forest.mp4", b / "clip.mp4")  # same name, other content
    shutil.copy(clips / "ocean.mp4", b / "copy of ocean.mp4")  # same content, other name
    mmcache.extract([tmp_path / "in"], ["logmel"], tmp_path / "c")
    rows = mmcache.open_cache(tmp_path / "c").samples()
    assert len(rows) == 2
    ocean = next(r for r in rows if r["source"] == "a/clip.mp4")
    assert ocean["aliases"] == ["b/copy of ocean.mp4"]


def test_strict_raises_after_writing(tmp_path, bad_files, clips):
    root = tmp_path / "c"
    with pytest.raises(DecodeError, match="1 video"):
        mmcache.extract([clips / "ocean.mp4", bad_files["zero"]], ["logmel"], root, strict=True)
    assert mmcache.verify_cache(root) == []


def test_a_second_writer_is_refused(tmp_path, clips):
    root = tmp_path / "c"
    root.mkdir()
    with CacheLock(root), pytest.raises(CacheError, match="another mmcache process"):
        mmcache.extract([clips / "ocean.mp4"], ["logmel"], root)


def test_an_error_mid_shard_publishes_nothing_and_a_rerun_completes(tmp_path, clips, monkeypatch):
    root = tmp_path / "c"
    from mmcache.encoders.audio_frontend import FrontEndEncoder

    original = FrontEndEncoder.encode
    calls = {"n": 0}

    def flaky(self, payloads):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a shard
        return original(self, payloads)

    monkeypatch.setattr(FrontEndEncoder, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        mmcache.extract([clips], ["logmel:batch_size=1"], root, shard_size=2)
    published = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert published <= {".lock", ".input-hashes.json", "manifest.json", "samples/000000.jsonl", "logmel/000000.tar"}
    assert not any(".tmp-" in p for p in published)
    monkeypatch.setattr(FrontEndEncoder, "encode", original)
    mmcache.extract([clips], ["logmel:batch_size=1"], root, shard_size=2)
    assert mmcache.verify_cache(root) == [] and len(mmcache.open_cache(root).samples()) == 4
