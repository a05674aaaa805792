"""readers.py: one video -> the steps an encoder consumes, by the kind of its input spec (frames, clips,
audio windows, text cues)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
from conftest import ffmpeg

from mmcache.decode import iter_audio
from mmcache.errors import FieldAbsent
from mmcache.probe import probe
from mmcache.readers import READERS, read_audio, read_clips, read_text
from mmcache.synth import CLASSES, make_clip
from mmcache.types import AudioInput, ClipInput, FrameInput, InputSpec, TextInput, VideoInput

SPECS = {  # small settings of every input kind
    "frames": FrameInput(fps=2.0, resize=(32,), crop=(32, 32)),
    "clips": ClipInput(fps=4.0, clip_len=2, stride=2, resize=(32,), crop=(32, 32)),
    "audio": AudioInput(sample_rate=8000, fps=2.0, window=0.5),
    "text": TextInput(),
}


def pcm_video(path, duration: float):
    """A video with an exact-length PCM audio track at 8 kHz (AAC would pad it with priming samples)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c=red:size=32x32:rate=10:duration={duration}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}:sample_rate=8000",
        "-c:v", "libx264", "-c:a", "pcm_s16le", str(path),
    )  # fmt: skip
    return path


def audio_steps(path, **spec):
    return list(read_audio(VideoInput(path, path.name), probe(path), AudioInput(**spec), 30))


# -- moved from test_decode.py and test_pipeline.py (by concern: these are the readers' behaviour) ----


def test_clip_windows_follow_clip_len_and_stride(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=3.0)
    info = probe(clip)
    spec = ClipInput(fps=4.0, clip_len=4, stride=2, resize=(32,), crop=(32, 32))
    steps = list(read_clips(VideoInput(clip, "a.mp4"), info, spec, timeout=30))
    assert [s.start for s in steps] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])
    assert all(s.end - s.start == pytest.approx(1.0) for s in steps)
    assert steps[0].payload.shape == (4, 32, 32, 3)


def test_short_video_gives_one_padded_clip(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=0.5)
    steps = list(
        read_clips(
            VideoInput(clip, "a"), probe(clip), ClipInput(fps=4, clip_len=8, stride=8, resize=(32,), crop=(32, 32)), 30
        )
    )
    assert len(steps) == 1 and steps[0].payload.shape == (8, 32, 32, 3)


def test_audio_windows_match_the_vision_grid(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=2.0)
    steps = list(read_audio(VideoInput(clip, "a"), probe(clip), AudioInput(sample_rate=8000, fps=2.0, window=0.5), 30))
    assert [s.start for s in steps][:4] == pytest.approx([0, 0.5, 1.0, 1.5])
    assert all(len(s.payload) == 4000 for s in steps)
    tone = np.abs(np.fft.rfft(steps[1].payload))
    assert np.argmax(tone) * 8000 / 4000 == pytest.approx(330, abs=4)  # the class's sine tone survives


def test_no_audio_stream_is_absent_not_failed(tmp_path):
    clip = make_clip(tmp_path / "silent.mp4", duration=1.0, audio=False)
    with pytest.raises(FieldAbsent, match="no audio stream"):
        list(read_audio(VideoInput(clip, "s"), probe(clip), AudioInput(), 30))


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


# -- the registry and the rest of each reader ---------------------------------------------------------


def test_every_input_kind_has_a_reader():
    kinds = {spec().kind for spec in typing.get_args(InputSpec)}
    assert set(READERS) == kinds == set(SPECS)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_each_reader_gives_ordered_steps_over_the_video(clips, kind):
    clip = clips / "ocean.mp4"  # 2 s, with audio and a sidecar .srt
    steps = list(READERS[kind](VideoInput(clip, clip.name), probe(clip), SPECS[kind], 30))
    assert steps and all(0 <= s.start < s.end <= 2.1 for s in steps)
    assert [s.start for s in steps] == sorted(s.start for s in steps)


def test_audio_windows_are_cut_from_the_decoded_stream(tmp_path):
    clip = pcm_video(tmp_path / "a.mkv", 1.5)
    whole = np.concatenate(list(iter_audio(probe(clip), 8000)))
    for fps, window in [(4.0, 0.5), (2.0, 0.25), (2.0, 0.5)]:  # overlapping, skipping, tiling windows
        steps = audio_steps(clip, sample_rate=8000, fps=fps, window=window)
        win = int(window * 8000)
        for s in steps:
            at = int(round(s.start * 8000))
            part = whole[at : at + win]
            assert np.array_equal(s.payload[: len(part)], part) and not s.payload[len(part) :].any()
        assert [s.start for s in steps] == pytest.approx(np.arange(len(steps)) / fps)


@pytest.mark.parametrize("duration, n", [(2.2, 4), (2.3, 5)])
def test_a_trailing_window_is_kept_when_it_holds_half_a_window(tmp_path, duration, n):
    steps = audio_steps(pcm_video(tmp_path / "a.mkv", duration), sample_rate=8000, fps=2.0, window=0.5)
    assert len(steps) == n and all(len(s.payload) == 4000 for s in steps)
    if n == 5:  # 0.3 s of audio after 2.0 s: zero-padded, and its end is the end of the audio
        assert steps[-1].end == pytest.approx(duration) and not steps[-1].payload[2400:].any()
        assert steps[-1].payload[:2400].any()


def test_audio_shorter_than_one_window_gives_one_padded_window(tmp_path):
    steps = audio_steps(pcm_video(tmp_path / "a.mkv", 0.1), sample_rate=8000, fps=2.0, window=0.5)
    assert len(steps) == 1 and steps[0].start == 0 and steps[0].end == pytest.approx(0.1)
    assert steps[0].payload[:800].any() and not steps[0].payload[800:].any()


def test_sidecar_subtitles_are_the_text(clips):
    clip = clips / "ocean.mp4"
    steps = list(read_text(VideoInput(clip, clip.name), probe(clip), TextInput(), 30))
    words = next(s.words for s in CLASSES if s.label == "ocean")
    assert [(s.start, s.end, s.payload) for s in steps] == [(0.0, 1.0, words), (1.0, 2.0, words)]


def test_a_sheet_text_column_beats_the_sidecar_and_spans_the_video(clips):
    clip = clips / "ocean.mp4"
    info = probe(clip)
    steps = list(read_text(VideoInput(clip, clip.name, text="a boat on the sea"), info, TextInput(), 30))
    assert [(s.start, s.end, s.payload) for s in steps] == [(0.0, info.duration, "a boat on the sea")]


def test_a_video_without_any_text_is_absent(clips):
    clip = clips / "silent.mp4"
    with pytest.raises(FieldAbsent, match="no text"):
        list(read_text(VideoInput(clip, clip.name), probe(clip), TextInput(), 30))


def test_clips_tile_the_grid_when_stride_equals_clip_len(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=2.0, audio=False)
    spec = ClipInput(fps=4.0, clip_len=2, stride=2, resize=(16,), crop=(16, 16))
    steps = list(read_clips(VideoInput(clip, "a"), probe(clip), spec, 30))
    assert [(s.start, s.end) for s in steps] == pytest.approx([(i * 0.5, i * 0.5 + 0.5) for i in range(4)])
    assert all(s.payload.shape == (2, 16, 16, 3) and s.payload.dtype == np.uint8 for s in steps)
