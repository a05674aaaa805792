"""probe.py: ffprobe's view of a file as plain data (streams, duration, rotation), and ffmpeg's log cut
down to its reason."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ffmpeg, stalling_fifo

from mmcache.errors import DecodeError
from mmcache.probe import FFPROBE, ffmpeg_input, ffmpeg_reason, ffmpeg_version, probe
from mmcache.synth import make_clip


def test_a_lavfi_clip_probes_as_it_was_made(clips):
    info = probe(clips / "ocean.mp4")  # 160x120 at 25 fps, 2 s, 44.1 kHz mono AAC, sidecar .srt only
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 160, 120)
    assert info.video.rotation == 0 and info.video.avg_fps == pytest.approx(25.0)
    assert info.audio == {"codec": "aac", "sample_rate": 44100, "channels": 1}
    assert info.duration == pytest.approx(2.0, abs=0.1) and info.start_time >= 0
    assert info.subtitles == []


def test_real_samples_report_their_rates_and_channels(real_videos):
    by_name = {p.name: p for p in real_videos}
    carphone = probe(by_name["carphone_pristine.mp4"])
    assert carphone.video.avg_fps == pytest.approx(30000 / 1001)
    assert carphone.duration == pytest.approx(4.004, abs=0.01)
    bunny = probe(by_name["bigbuckbunny.mp4"])
    assert (bunny.audio["codec"], bunny.audio["sample_rate"], bunny.audio["channels"]) == ("aac", 48000, 6)  # 5.1


def test_summary_is_the_json_kept_in_the_samples_index(clips):
    info = probe(clips / "silent.mp4")
    summary = json.loads(json.dumps(info.summary()))
    assert summary["audio"] is None and summary["subtitles"] == []
    assert summary["video"] == {"codec": "h264", "width": 160, "height": 120, "rotation": 0, "avg_fps": 25.0}


def test_rotation_swaps_the_display_size(tmp_path):
    clip = make_clip(tmp_path / "land.mp4", duration=0.5, size="160x96", audio=False)
    for degrees, size in [(90, (96, 160)), (180, (160, 96)), (270, (96, 160))]:
        rotated = tmp_path / f"rot{degrees}.mp4"
        ffmpeg("-i", str(clip), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(rotated))
        video = probe(rotated).video
        assert (video.width, video.height) == size and video.rotation % 360 == degrees


def test_audio_only_and_cover_art_have_no_video(tmp_path, bad_files):
    assert probe(bad_files["audio_only"]).video is None
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=32x32", "-frames:v", "1", str(cover))
    song = tmp_path / "song.m4a"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1",
        "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(song),
    )  # fmt: skip
    listed = subprocess.run([FFPROBE, "-v", "error", "-of", "json", "-show_streams", str(song)], capture_output=True)
    raw = json.loads(listed.stdout)
    assert any(s["codec_type"] == "video" for s in raw["streams"])  # ffprobe lists the picture as a stream ...
    info = probe(song)
    assert info.video is None and info.audio["codec"] == "aac"  # ... which is not a video


def test_embedded_subtitle_streams_are_listed(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", duration=1.0, subtitles="hi")
    mkv = tmp_path / "a.mkv"
    ffmpeg("-i", str(clip), "-i", str(clip.with_suffix(".srt")), "-map", "0", "-map", "1", "-c", "copy", str(mkv))
    assert probe(mkv).subtitles == ["subrip"]


def test_awkward_relative_names_are_read_as_plain_files(tmp_path, clips, monkeypatch):
    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "-i:x y.mp4"  # an option, a protocol prefix and a space
    odd.write_bytes((clips / "ocean.mp4").read_bytes())
    arg = ffmpeg_input(odd.relative_to(tmp_path))
    assert arg.startswith("file:/") and arg.endswith("/-i:x y.mp4")
    assert probe(odd.relative_to(tmp_path)).video.width == 160


@pytest.mark.parametrize(
    "kind, reason", [("zero", "Invalid data"), ("random", "Invalid data"), ("truncated", "moov atom not found")]
)
def test_unreadable_files_raise_naming_the_file_once_and_the_reason(bad_files, kind, reason):
    path = bad_files[kind]
    with pytest.raises(DecodeError, match=reason) as e:
        probe(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and message.count(path.name) == 1 and "@ 0x" not in message


def test_a_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="No such file"):
        probe(tmp_path / "gone.mp4")


def test_a_stalled_input_times_out(tmp_path):
    with stalling_fifo(tmp_path / "stall.mp4") as fifo, pytest.raises(DecodeError, match="timed out after 1 s"):
        probe(fifo, timeout=1.0)


def test_ffmpeg_reason_keeps_the_last_distinct_messages_without_prefixes(bad_files):
    path = bad_files["truncated"]
    res = subprocess.run([FFPROBE, "-v", "error", ffmpeg_input(path)], capture_output=True, text=True)
    lines = res.stderr.splitlines()
    assert any("@ 0x" in line for line in lines) and any(line.startswith("file:") for line in lines)
    reason = ffmpeg_reason(lines + lines, path)  # repeated lines count once
    assert reason == "moov atom not found; Invalid data found when processing input"
    assert ffmpeg_reason(lines, path, keep=1) == "Invalid data found when processing input"
    banner = ["Input #0, mov,mp4 from 'x':", "  Duration: 00:00:01.00", "  Stream #0:0: Video: h264", ""]
    assert ffmpeg_reason(banner, path) == ""  # stream listings are not reasons


def test_ffmpeg_version_is_the_first_line_without_the_copyright():
    version = ffmpeg_version()
    assert version.startswith("ffmpeg version ") and "Copyright" not in version
    assert version == ffmpeg_version()
