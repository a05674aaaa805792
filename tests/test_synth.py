"""synth.py: lavfi clips whose classes differ in picture, tone and subtitles, and the labelled demo set."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from mmcache import synth
from mmcache.decode import iter_audio
from mmcache.inputs import resolve_inputs
from mmcache.probe import probe
from mmcache.subtitles import parse_cues
from mmcache.synth import CLASSES, make_clip, make_labelled_set, srt


def tone_hz(path, sr: int = 8000) -> float:
    """The strongest frequency of a clip's decoded audio."""
    audio = np.concatenate(list(iter_audio(probe(path), sr)))
    return float(np.argmax(np.abs(np.fft.rfft(audio)))) * sr / len(audio)


def test_a_clip_has_the_asked_size_rate_duration_codec_and_tracks(tmp_path):
    info = probe(make_clip(tmp_path / "a.mkv", duration=1.0, size="96x64", rate=10, codec="mpeg4", audio=False))
    assert (info.video.codec, info.video.width, info.video.height) == ("mpeg4", 96, 64)
    assert info.video.avg_fps == pytest.approx(10) and info.duration == pytest.approx(1.0, abs=0.1)
    assert info.audio is None and not (tmp_path / "a.srt").exists()


def test_each_class_has_its_own_tone_and_variants_shift_it(tmp_path):
    for style in CLASSES:
        assert tone_hz(make_clip(tmp_path / f"{style.label}.mp4", duration=1.0, style=style)) == pytest.approx(
            style.tone_hz, abs=3
        )
    shifted = make_clip(tmp_path / "v.mp4", duration=1.0, style=CLASSES[0], variant=2)
    assert tone_hz(shifted) == pytest.approx(CLASSES[0].tone_hz + 14, abs=3)
    assert shifted.read_bytes() != (tmp_path / f"{CLASSES[0].label}.mp4").read_bytes()


def test_subtitles_are_a_sidecar_of_two_cues_over_the_clip(tmp_path):
    clip = make_clip(tmp_path / "sub" / "a.mp4", duration=2.0, subtitles="hello there", audio=False)
    cues = parse_cues(clip.with_suffix(".srt").read_text())
    assert [(c.start, c.end, c.text) for c in cues] == [(0.0, 1.0, "hello there"), (1.0, 2.0, "hello there")]


def test_srt_timestamps_round_trip_through_the_parser():
    cues = [(0.0, 0.001, "a"), (59.9995, 61.25, "b"), (3725.5, 3726.0, "c d")]
    text = srt(cues)
    assert "01:02:05,500 --> 01:02:06,000" in text and text.startswith("1\n00:00:00,000 --> 00:00:00,001\na\n")
    assert [(c.start, c.end, c.text) for c in parse_cues(text)] == [(0.0, 0.001, "a"), (60.0, 61.25, "b")] + [
        (3725.5, 3726.0, "c d")
    ]


def test_the_labelled_set_has_its_clips_and_two_consistent_sheets(tmp_path):
    out = make_labelled_set(tmp_path / "set", per_class=2, duration=0.5, size="64x48")
    with open(out / "videos.csv", newline="") as f:
        videos = list(csv.DictReader(f))
    with open(out / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    assert len(videos) == 2 * len(CLASSES) and {r["label"] for r in videos} == {s.label for s in CLASSES}
    assert labels == [{"id": r["id"], "label": r["label"]} for r in videos]
    assert len({r["id"] for r in videos}) == len(videos)
    inputs = resolve_inputs([out / "videos.csv"])  # the sheet reads as mmcache input
    assert all(v.path.is_file() and v.path.with_suffix(".srt").is_file() for v in inputs)
    assert probe(inputs[0].path).video.width == 64


def test_main_writes_the_set_where_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["synth", str(tmp_path / "o"), "--per-class", "1", "--duration", "0.4"])
    synth.main()
    assert f"wrote {len(CLASSES)} clips to {tmp_path / 'o'}" in capsys.readouterr().out
    assert len(list((tmp_path / "o").glob("*.mp4"))) == len(CLASSES)
