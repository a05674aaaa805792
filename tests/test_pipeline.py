"""The decode/encode pipeline: batches span videos without changing results; order is kept."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ffmpeg

from mmcache.encoders import build_encoder
from mmcache.pipeline import Job, run_encoder
from mmcache.probe import probe
from mmcache.readers import read_text
from mmcache.synth import make_clip
from mmcache.types import TextInput, VideoInput


def jobs_for(paths):
    return [Job(f"{i:024x}", VideoInput(p, p.name), probe(p)) for i, p in enumerate(paths)]


def test_batches_spanning_videos_give_the_same_features_in_order(clips, bad_files):
    paths = [clips / "ocean.mp4", bad_files["text"], clips / "forest.mp4", clips / "silent.mp4"]
    good = jobs_for([p for p in paths if p != bad_files["text"]])
    spanning = list(run_encoder(build_encoder("logmel:fps=4,window=0.25,batch_size=3"), good))
    single = list(run_encoder(build_encoder("logmel:fps=4,window=0.25,batch_size=1"), good))
    assert [o.job.video.source for o in spanning] == ["ocean.mp4", "forest.mp4", "silent.mp4"]
    assert [o.status for o in spanning] == ["ok", "ok", "absent"]
    for a, b in zip(spanning[:2], single[:2], strict=True):
        assert a.feats.shape == (8, 64) and np.allclose(a.feats, b.feats, atol=1e-4)
        assert np.array_equal(a.ts, b.ts)


def test_a_video_failing_mid_decode_does_not_stop_the_others(tmp_path, clips):
    good = make_clip(tmp_path / "good.mp4", duration=3.0)
    cut = tmp_path / "cut.mkv"  # probes fine, then the stream ends in garbage
    ffmpeg("-i", str(good), "-c", "copy", str(cut))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 3] + np.random.default_rng(0).bytes(len(data) // 3))
    jobs = jobs_for([cut, clips / "ocean.mp4"])
    out = list(run_encoder(build_encoder("resnet18:weights=random,fps=2,batch_size=4"), jobs, timeout=20))
    assert [o.job.video.source for o in out] == ["cut.mkv", "ocean.mp4"]
    assert out[1].status == "ok" and out[1].feats.shape == (4, 512)
    assert out[0].status in ("ok", "failed")  # ffmpeg may salvage frames before the damage; never a crash
    if out[0].status == "ok":
        assert 1 <= len(out[0].feats) <= 6


def test_embedded_subtitle_stream_gives_cues(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=2.0, subtitles="hello from the sidecar")
    mkv = tmp_path / "embedded.mkv"
    ffmpeg(
        "-i",
        str(clip),
        "-i",
        str(clip.with_suffix(".srt")),
        "-map",
        "0",
        "-map",
        "1",
        "-c",
        "copy",
        "-c:s",
        "srt",
        str(mkv),
    )
    info = probe(mkv)
    assert info.subtitles == ["subrip"]
    steps = list(read_text(VideoInput(mkv, "embedded.mkv"), info, TextInput(), 30))
    # remuxing shifts the stream by the mp4's 23 ms audio priming: the cues keep the file's own timeline
    assert [s.payload for s in steps] == ["hello from the sidecar"] * 2
    assert [t for s in steps for t in (s.start, s.end)] == pytest.approx([0.0, 1.0, 1.0, 2.0], abs=0.03)
