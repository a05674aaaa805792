"""Decoding: time grids, rotation, audio, timeouts, awkward file names."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ffmpeg

from mmcache.decode import grid_rate, iter_audio, iter_frames
from mmcache.errors import DecodeError
from mmcache.probe import probe
from mmcache.readers import read_frames
from mmcache.synth import make_clip
from mmcache.types import FrameInput, VideoInput


def frames(path: Path, **spec) -> list:
    info = probe(path)
    return list(read_frames(VideoInput(path, path.name), info, FrameInput(**spec), timeout=30))


def test_fps_grid_timestamps_come_from_decoded_frames(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=3.0, rate=25)
    steps = frames(clip, fps=2.0, resize=(64,), crop=(64, 64))
    assert [s.start for s in steps] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert all(s.end - s.start == pytest.approx(0.5) for s in steps)
    assert steps[0].payload.shape == (64, 64, 3) and steps[0].payload.dtype == np.uint8


def test_29_97_fps_source_on_a_1_fps_grid(real_videos):
    carphone = next(p for p in real_videos if p.name == "carphone_pristine.mp4")  # 30000/1001 fps, 4.004 s
    steps = frames(carphone, fps=1.0, resize=(64,), crop=(64, 64))
    # 120 frames ending at 3.971 s: one step per whole second (a step at 4.0 would hold 4 ms of video)
    assert [s.start for s in steps] == pytest.approx([0, 1, 2, 3], abs=0.02)
    steps = frames(carphone, fps=29.97, resize=(32,), crop=(32, 32))
    assert len(steps) == 120  # every decoded frame once, none invented from the header rate


def test_num_frames_spreads_exactly_n_frames(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=4.0)
    steps = frames(clip, fps=None, num_frames=8, resize=(32,), crop=(32, 32))
    assert len(steps) == 8
    assert [s.start for s in steps] == pytest.approx(np.arange(8) * 0.5, abs=0.02)


def test_variable_frame_rate_uses_real_timestamps(tmp_path):
    vfr = tmp_path / "vfr.mkv"  # frames at 0, 0.1, ..., then a 2 s gap: a header fps would lie
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=3",
        "-vf",
        "select='not(between(t,0.5,2.5))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        str(vfr),
    )
    steps = frames(vfr, fps=2.0, resize=(32,), crop=(32, 32))
    assert steps[0].start == pytest.approx(0.0)
    assert steps[-1].start >= 2.5  # the grid covers the real timeline, across the gap


def test_rotation_gives_portrait_frames_with_the_right_pixels(tmp_path):
    land = tmp_path / "land.mp4"  # left half red, right half blue, lossless
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=160x120:duration=1:rate=10,drawbox=x=80:y=0:w=80:h=120:color=blue:t=fill",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        str(land),
    )
    rot = tmp_path / "rot90.mp4"
    ffmpeg("-i", str(land), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rot))
    info = probe(rot)
    assert (info.video.width, info.video.height, info.video.rotation) == (120, 160, 90)
    frame, _ = next(iter(iter_frames(info, grid_rate(info, 1.0, None))))
    assert frame.shape == (160, 120, 3)  # portrait, size read from the filter graph
    top, bottom = frame[:70].reshape(-1, 3).mean(0), frame[90:].reshape(-1, 3).mean(0)
    assert top[2] > 200 and top[0] < 30  # blue on top ...
    assert bottom[0] > 200 and bottom[2] < 30  # ... red below: rotated, not scrambled


def test_resize_short_side_then_centre_crop(tmp_path):
    clip = make_clip(tmp_path / "wide.mp4", duration=1.0, size="320x120")
    steps = frames(clip, fps=1.0, resize=(100,), crop=(96, 80))
    assert steps[0].payload.shape == (96, 80, 3)


def test_audio_is_mono_at_the_requested_rate(real_videos):
    bunny = next(p for p in real_videos if p.name == "bigbuckbunny.mp4")  # stereo AAC 48 kHz
    info = probe(bunny)
    total = sum(len(c) for c in iter_audio(info, 16000))
    assert total == pytest.approx(info.duration * 16000, rel=0.02)


@pytest.mark.parametrize(
    "name", ["with space.mp4", "ünï cødé 视频.mp4", "-leading-dash.mp4", "semi;colon $(x).mp4", "a:b.mp4"]
)
def test_awkward_names_are_plain_arguments(tmp_path, name):
    src = make_clip(tmp_path / "src.mp4", duration=1.0)
    odd = tmp_path / name
    shutil.copy(src, odd)
    assert len(frames(odd, fps=2.0, resize=(32,), crop=(32, 32))) == 2


def test_stalled_input_is_killed_by_the_timeout(tmp_path):
    fifo = tmp_path / "stall.mp4"
    os.mkfifo(fifo)
    holder = threading.Thread(target=lambda: open(fifo, "wb").write(b"\x00" * 16) and None, daemon=True)
    holder.start()  # a writer that opens the pipe and never finishes
    from mmcache.probe import ProbeInfo, VideoStream

    info = ProbeInfo(fifo, 10.0, 0.0, VideoStream("h264", 64, 64, 0, 25.0), None)
    with pytest.raises(DecodeError, match="stalled"):
        list(iter_frames(info, grid_rate(info, 1.0, None), timeout=1.0))


@pytest.mark.parametrize("kind", ["zero", "random", "truncated", "text"])
def test_bad_files_raise_a_decode_error_naming_the_file(bad_files, kind):
    with pytest.raises(DecodeError) as e:
        info = probe(bad_files[kind])
        list(iter_frames(info, grid_rate(info, 1.0, None)))
    assert bad_files[kind].name in str(e.value)
