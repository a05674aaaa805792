"""synth.py: lavfi clips whose classes differ in picture, tone and subtitles, the labelled set, and the demo's
combo set (class = picture x tone)."""

from __future__ import annotations

import csv
import sys
from fractions import Fraction

import numpy as np
import pytest

from mmcache import synth
from mmcache.decode import iter_audio, iter_frames
from mmcache.inputs import resolve_inputs
from mmcache.probe import probe
from mmcache.subtitles import parse_cues
from mmcache.synth import (
    CLASSES,
    COMBO_CLASSES,
    NEUTRAL_WORDS,
    PICTURES,
    TONES,
    make_clip,
    make_fusion_set,
    make_labelled_set,
    srt,
)


def tone_hz(path, sr: int = 8000) -> float:
    """The strongest frequency of a clip's decoded audio."""
    return peak_hz(np.concatenate(list(iter_audio(probe(path), sr))), sr)


def peak_hz(audio: np.ndarray, sr: int = 8000) -> float:
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


# The combo design of the demo (make_fusion_set): class = picture x tone, subtitles neutral.


def combo_rows(out) -> list[dict[str, str]]:
    with open(out / "videos.csv", newline="") as f:
        return list(csv.DictReader(f))


def frames(path) -> np.ndarray:
    return np.stack([f for f, _ in iter_frames(probe(path), Fraction(2))]).astype(np.int16)


def audio(path) -> np.ndarray:
    return np.concatenate(list(iter_audio(probe(path), 8000)))


def test_the_combo_set_is_picture_times_tone_on_real_files(tmp_path):
    """Decoded from the files: the picture follows the picture factor only, the tone the tone factor
    only, and the subtitles neither; each group is one draw of nuisances rendered as all 4 classes."""
    out = make_fusion_set(tmp_path / "combo", per_class=2, duration=1.0, size="64x48")
    rows = combo_rows(out)
    assert [r["label"] for r in rows] == [c for c in COMBO_CLASSES for _ in range(2)]
    assert set(COMBO_CLASSES) == {f"{p}-{t}" for p in PICTURES for t in TONES} and len(COMBO_CLASSES) == 4
    assert len({r["id"] for r in rows}) == 8 and {r["split"] for r in rows} == {""}  # < 5 groups: no split
    clip = {tuple(r["id"].replace("_", "-").split("-")): out / r["path"] for r in rows}  # (picture, tone, group)
    for g in ("000", "001"):
        video = {(p, t): frames(clip[p, t, g]) for p in PICTURES for t in TONES}
        sound = {(p, t): audio(clip[p, t, g]) for p in PICTURES for t in TONES}
        for p in PICTURES:  # the tone does not change the picture
            assert np.abs(video[p, "low"] - video[p, "high"]).max() <= 2
        for t in TONES:  # the picture does not change the sound
            np.testing.assert_allclose(sound["day", t], sound["night", t], atol=1e-4)
        day, night = video["day", "low"].mean((0, 1, 2)), video["night", "low"].mean((0, 1, 2))
        assert day[0] > day[2] + 50 and night[2] > night[0] + 20  # orange day, navy night (R, G, B)
        for (p, t), a in sound.items():
            low, high = TONES[t]
            assert low - 3 <= peak_hz(a) <= high + 3, (p, t, g)
        words = {parse_cues(clip[p, t, g].with_suffix(".srt").read_text())[0].text for p in PICTURES for t in TONES}
        assert len(words) == 1 and words <= set(NEUTRAL_WORDS)
    assert np.abs(frames(clip["day", "low", "000"]) - frames(clip["day", "low", "001"])).max() > 10  # nuisances


def test_combo_groups_go_whole_to_one_split_and_the_seed_draws_them(tmp_path, monkeypatch):
    """Without rendering: every split holds whole groups (all 4 classes of a nuisance draw), 20% of
    them test and 20% val; a style's video depends on picture and group only, its audio on tone and
    group only; the same seed gives the same set."""
    made = {}
    monkeypatch.setattr(synth, "make_clip", lambda path, **kw: made.setdefault(path.name, kw["style"]))
    rows = combo_rows(make_fusion_set(tmp_path / "a", per_class=10, seed=3))
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["id"].split("_")[1], r["split"]) == r["split"]
    assert sorted(split_of.values()) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    for split in ("train", "val", "test"):
        labels = [r["label"] for r in rows if r["split"] == split]
        assert labels and len({labels.count(c) for c in COMBO_CLASSES}) == 1  # 4 classes, equally
    for g in range(10):
        s = {(p, t): made[f"{p}-{t}_{g:03d}.mp4"] for p in PICTURES for t in TONES}
        assert s["day", "low"].source == s["day", "high"].source != s["night", "low"].source
        assert s["day", "low"].audio == s["night", "low"].audio != s["day", "high"].audio
        assert len({st.words for st in s.values()}) == 1
    again = dict(made)
    made.clear()
    assert combo_rows(make_fusion_set(tmp_path / "b", per_class=10, seed=3)) == rows and made == again
    made.clear()
    make_fusion_set(tmp_path / "c", per_class=10, seed=4)
    assert made != again


def test_main_writes_the_combo_design_when_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(synth, "make_clip", lambda path, **kw: path)
    argv = ["synth", str(tmp_path / "o"), "--design", "combo", "--per-class", "5", "--seed", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    synth.main()
    assert f"wrote 20 clips to {tmp_path / 'o'}" in capsys.readouterr().out
    assert {r["split"] for r in combo_rows(tmp_path / "o")} == {"train", "val", "test"}
