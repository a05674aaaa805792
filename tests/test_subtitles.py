from mmcache.subtitles import find_sidecar, parse_cues

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> there

2
00:00:03,000 --> 00:00:04,000
second
line
"""

VTT = """WEBVTT

00:01.000 --> 00:02.000 align:start
first cue

intro
00:00:02.500 --> 00:00:03.000
second cue
"""


def test_srt_cues_with_times_and_tags_stripped():
    cues = parse_cues(SRT)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.5, "Hello there"), (3.0, 4.0, "second line")]


def test_vtt_short_timestamps_and_cue_ids():
    cues = parse_cues(VTT)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.0, "first cue"), (2.5, 3.0, "second cue")]


def test_broken_timing_is_repaired_not_fatal():
    broken = (
        "1\n00:00:05,000 --> 00:00:04,000\nbackwards\n\n2\nnot a time\nlost\n\n3\n00:00:01,000 --> 00:00:02,000\nok\n"
    )
    cues = parse_cues(broken)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.0, "ok"), (5.0, 5.0, "backwards")]


def test_sidecar_lookup(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert find_sidecar(video) is None
    (tmp_path / "clip.vtt").write_text(VTT)
    assert find_sidecar(video) == tmp_path / "clip.vtt"
