"""Smoke test of benchmarks/bench_decode.py: a --quick run on tiny videos writes its results section,
with a row per decoder per video, and the three decoders agree on the frames of the time grid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_decode.py"
DECODERS = ("mmcache", "OpenCV", "PyAV")

pytest.importorskip("cv2", reason="opencv-python-headless is not installed (pip install -e .[dev])")
pytest.importorskip("av", reason="PyAV is not installed (pip install -e .[dev])")
pytest.importorskip("skvideo", reason="scikit-video is not installed (pip install -e .[dev])")


def test_bench_decode_quick(tmp_path):
    results = tmp_path / "R.md"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--results", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    text = results.read_text()
    assert text.count("<!-- bench_decode:begin -->") == 1 and text.count("<!-- bench_decode:end -->") == 1
    section = text.split("<!-- bench_decode:begin -->")[1].split("<!-- bench_decode:end -->")[0]
    assert "## bench_decode (--quick smoke run)" in section

    # the context table: | video | decoder | frames | frames/s | CPU ms/frame | ... | mean abs diff | ...
    rows = re.findall(
        r"^\| (\S+\.mp4) \| (mmcache|OpenCV|PyAV) \| (\d+) \| ([\d.]+) \| ([\d.]+) \|(.*)$", section, re.M
    )
    videos = sorted({r[0] for r in rows})
    assert len(videos) == 2, rows
    for video in videos:
        mine = {r[1]: r for r in rows if r[0] == video}
        assert set(mine) == set(DECODERS), (video, mine)
        counts = {int(r[2]) for r in mine.values()}
        assert len(counts) == 1 and counts.pop() > 0, (video, mine)  # same number of frames from every decoder
        assert all(float(r[3]) > 0 and float(r[4]) > 0 for r in mine.values())
    # one ratio row per peer per video
    for peer in DECODERS[1:]:
        assert len(re.findall(rf"^\| \S+\.mp4 \| {peer} \| [\d.]+ \| 1 round \|", section, re.M)) == 2
    assert "every decoder gives the same number of frames" in section

    # the raw numbers agree with the table; the synthetic video is 4 s, so the 8 frames/s grid has 32 steps
    raw = json.loads((out / "bench_decode" / "results-quick.json").read_text())
    assert raw["params"]["quick"] is True and len(raw["rounds"]) == 2
    for name, v in raw["videos"].items():
        assert len(set(v["frames"].values())) == 1, (name, v["frames"])
        if name.startswith("testsrc2"):
            assert v["frames"]["mmcache"] == 4 * raw["params"]["grid_fps"]
        # the peers decode the same grid and crop: far closer to mmcache's frames than consecutive frames are
        for peer in DECODERS[1:]:
            diff = v["diff"][peer]
            assert diff is not None and diff["max"] < 5, (name, peer, diff)
            assert diff["mean"] < v["consecutive_diff"] / 2, (name, peer, diff, v["consecutive_diff"])
        assert v["stats"]["OpenCV"]["lookahead_misses"] == 0
        assert v["shapes"]["mmcache"] == v["shapes"]["OpenCV"] == v["shapes"]["PyAV"] == [224, 224, 3]
