"""Smoke test of benchmarks/bench_read.py --quick: tiny synthetic caches (tar and an HDF5 copy),
sequential read against a raw read, random access, streaming vs in-memory training and peak RSS;
its section and rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

NUM = r"[\d.]+"


def test_quick_run_writes_its_section(tmp_path):
    results = tmp_path / "R.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_read.py"), "--quick", "--results", str(results)]
    res = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = results.read_text()
    assert "<!-- bench_read:begin -->" in text and "<!-- bench_read:end -->" in text
    assert "## bench_read (--quick smoke run)" in text
    for cache in ("webdataset, 300 clips x 16 steps", "hdf5, 300 clips x 16 steps", "webdataset, 64 clips x 128 steps"):
        for reader in (r"`load_field\(name\)` for every field", r"`iter_samples\(\)` \(all fields\)"):
            row = rf"\| {cache} \| cold \| {reader} \| {NUM} \| 1 round \| >= 0.8 \| (PASS|FAIL) \|"
            assert re.search(row, text), row
            row = rf"\| {cache} \| warm \| {reader} \| {NUM} \| 1 round \| \(context\) \|  \|"
            assert re.search(row, text), row
        speeds = rf"\| {cache} \| (cold|warm) \|" + rf" {NUM} \|" * 6
        assert len(re.findall(speeds, text)) == 2, speeds
    for backend in ("hdf5", "webdataset"):
        assert re.search(rf"\| {backend} \| ast \(768-d\) \| {NUM} \| {NUM} \| {NUM} \|", text), backend
    for fusion in ("concat", "attention"):
        for mode in ("in memory", "streaming"):
            row = rf"\| {fusion} \| {mode} \(`streaming: \w+`\) \| {NUM} s \| {NUM} s \| {NUM} s \| {NUM} \|"
            assert re.search(row, text), row
        assert re.search(rf"\| {fusion} \| {NUM} \| 1 round \| >= 0.8 \| (PASS|FAIL) \|", text), fusion
    for clips in (256, 512):
        assert re.search(rf"\| {clips} \| {NUM} MB \| {NUM} MB \| -?{NUM} MB \| {NUM} MB \| -?{NUM} MB \|", text)
    assert re.search(r"Streaming stays flat as the cache grows .*: \*\*(yes|no)\*\* \((PASS|FAIL)\)", text)
    raw = json.loads((tmp_path / "out" / "bench_read" / "results-quick.json").read_text())
    assert [s["backend"] for s in raw["sequential"]] == ["webdataset", "hdf5", "webdataset"]
    assert all(set(s["ratios"]) == {"cold", "warm"} for s in raw["sequential"])
    assert set(raw["streaming"]) == {"concat", "attention"}
    assert all(len(r["ratios"]) == 1 and r["ratios"][0] > 0 for r in raw["streaming"].values())
    assert {r["mode"] for r in raw["memory"]["rows"]} == {"never", "always"}
    assert all(r["streaming"] == (r["mode"] == "always") for r in raw["memory"]["rows"])
    again = tmp_path / "again.md"  # --from-json re-renders the same section from the raw JSON alone
    raw_path = tmp_path / "out" / "bench_read" / "results-quick.json"
    rerender = [*cmd[:2], "--from-json", str(raw_path), "--results", str(again)]
    res = subprocess.run(rerender, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert again.read_text() == text
