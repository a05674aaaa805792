"""Smoke test of benchmarks/bench_scale.py --quick: two small one-field caches written through the library's
writers, open + index, verify and one concat epoch in memory and streamed, each in a child process; its
section (rows, growth per clip, projections, targets), raw JSON, and --from-json re-rendering it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

NUM = r"-?[\d,.]+"


def section(path: Path) -> str | None:
    text = path.read_text() if path.is_file() else ""
    found = re.search(r"<!-- bench_scale:begin -->.*?<!-- bench_scale:end -->", text, re.S)
    return found.group(0) if found else None


def test_quick_run_writes_its_section(tmp_path):
    results, out = tmp_path / "R.md", tmp_path / "out"
    before = section(REPO / "benchmarks" / "RESULTS.md")
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_scale.py"), "--quick", "--results", str(results)]
    res = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert section(REPO / "benchmarks" / "RESULTS.md") == before  # a quick run never rewrites the real one
    text = results.read_text()
    assert "## bench_scale (--quick smoke run)" in text
    for clips, shards in (("2,000", 8), ("6,000", 24)):
        row = rf"\| {clips} \| {shards} \| {NUM} MB \| {NUM} s \| {NUM} MB \({NUM} B/clip\) \| {NUM} s \|"
        row += rf" {NUM} s \({NUM} s\) \| {NUM} MB \|" * 2 + rf" {NUM} \|" * 3
        assert re.search(row, text), row
    for what in ("open \\+ index", "`mmcache verify`", "train in memory: peak RSS", "train streamed: wall"):
        growth = rf"\| [^|]*{what} \| {NUM} (B|us) \| {NUM} (s|MB) \|( {NUM} (s|MB) \(projected\) \|){{2}}"
        assert re.search(growth, text), growth
    for target in ("open \\+ index < 10 s", "< 60 s", "its peak RSS < 2 GB"):
        assert re.search(rf"\| [^|]*{target} \| {NUM} (s|MB) \(projected\) \| (PASS|FAIL) \|", text), target
    raw_path = out / "bench_scale" / "results-quick.json"
    raw = json.loads(raw_path.read_text())
    assert [r["clips"] for r in raw["rows"]] == [2000, 6000]
    for r in raw["rows"]:
        assert r["open"]["samples"] == r["clips"] and sum(r["open"]["splits"].values()) == r["clips"]
        assert r["verify"]["problems"] == []
        assert not r["never"]["streaming"] and r["always"]["streaming"]
        assert r["never"]["samples_per_s"] > 0 and r["never"]["peak"] > r["never"]["base"]
    assert set(raw["fit"]) >= {"open_s", "open_rss", "verify_s", "train_s", "train_rss"}
    assert (out / "bench_scale" / "cache-6000x4" / "manifest.json").is_file()  # synthetic.ensure_cache: 4 steps
    again = tmp_path / "again.md"  # --from-json re-renders the same section from the raw JSON alone
    res = subprocess.run(
        [*cmd[:2], "--from-json", str(raw_path), "--results", str(again)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert again.read_text() == text
