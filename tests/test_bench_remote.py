"""Smoke test of benchmarks/bench_remote.py --quick: a small synthetic cache uploaded to moto's S3 server on
loopback, read with plain s3fs (with and without sha256) and with mmcache (load_field, verify, the fetch
cache); its section, rows and ratio, and --from-json re-rendering it."""

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


def section(path: Path) -> str | None:
    """bench_remote's section of a results file (None when it has none)."""
    text = path.read_text() if path.is_file() else ""
    found = re.search(r"<!-- bench_remote:begin -->.*?<!-- bench_remote:end -->", text, re.S)
    return found.group(0) if found else None


def test_quick_run_writes_its_section(tmp_path):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    results = tmp_path / "R.md"
    before = section(REPO / "benchmarks" / "RESULTS.md")
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_remote.py"), "--quick", "--results", str(results)]
    res = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert section(REPO / "benchmarks" / "RESULTS.md") == before  # a quick run never rewrites the real one
    text = results.read_text()
    assert "<!-- bench_remote:begin -->" in text and "<!-- bench_remote:end -->" in text
    assert "## bench_remote (--quick smoke run)" in text
    assert "300 synthetic clips" in text and "2 shards: 8 listed files" in text
    assert re.search(rf"\| plain \| plain s3fs: `cat_file` .*\| {NUM} \| 1 \(baseline\) \|", text)
    row = rf"\| load_field \| mmcache: `open_cache\(url\)` .*\| {NUM} \| {NUM} \| 1 round \| >= 0.8 \| (PASS|FAIL) \|"
    assert re.search(row, text), row
    for way in ("plain_nosha", "verify", "fetch_first", "fetch_second"):
        row = rf"\| {way} \| .* \| {NUM} \| {NUM} \| 1 round \| \(context\) \|  \|"
        assert re.search(row, text), row
    for way in ("plain", "plain_nosha", "load_field", "verify", "fetch_first", "fetch_second"):
        assert re.search(rf"\| {way} \| {NUM} \| {NUM} \| {NUM} \| {NUM}% \|", text), way
    assert re.search(rf"reads the cache at \*\*{NUM}x\*\* the plain s3fs read with sha256", text)
    raw_path = tmp_path / "out" / "bench_remote" / "results-quick.json"
    raw = json.loads(raw_path.read_text())
    assert len(raw["rounds"]) == 1 and raw["params"]["quick"]
    (rnd,) = raw["rounds"]
    assert set(rnd["measures"]) == {"plain", "plain_nosha", "load_field", "verify", "fetch_first", "fetch_second"}
    assert all(m["wall"] > 0 for m in rnd["measures"].values())
    assert raw["machine"]["moto"] and raw["machine"]["s3fs"]
    again = tmp_path / "again.md"  # --from-json re-renders the same section from the raw JSON alone
    rerender = [*cmd[:2], "--from-json", str(raw_path), "--results", str(again)]
    res = subprocess.run(rerender, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert again.read_text() == text
