"""Smoke test of benchmarks/bench_scaling.py --quick: the real workflow and dask, 1 vs 2 ways, on tiny
clips; its section, rows and the check that the 1- and 2-way caches are identical."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("ffmpeg") is None or shutil.which("mmcache") is None, reason="needs ffmpeg and mmcache on PATH"
    ),
]


def test_quick_run_writes_its_section(tmp_path):
    results = tmp_path / "R.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_scaling.py"), "--quick", "--results", str(results)]
    res = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = results.read_text()
    assert "<!-- bench_scaling:begin -->" in text and "<!-- bench_scaling:end -->" in text
    assert "## bench_scaling (--quick smoke run)" in text
    for row in (r"\| snakemake --cores 2 vs --cores 1 \|", r"\| extract --dask local:2 vs local:1 \|"):
        assert re.search(row + r" [\d.]+ \| [\d.]+ \| [\d.]+x \| .* \| >= 1.7 \| (PASS|FAIL) \|", text), row
    for run in ("snakemake --cores 1", "snakemake --cores 2", "--dask local:1", "--dask local:2"):
        assert re.search(rf"\| 1 \| [^|]*{run} \| [\d.]+ \|", text), run
    for engine in ("snakemake", "dask"):
        assert f"Caches, {engine} 1-way vs 2-way: identical in all 2 runs: same field fingerprints (resnet18 " in text
    raw_path = tmp_path / "out" / "bench_scaling" / "results-quick.json"
    raw = json.loads(raw_path.read_text())
    assert {e: s["identical"] for e, s in raw["summary"].items()} == {"snakemake": True, "dask": True}
    shards = {j["arg"] for r in raw["runs"] if r["engine"] == "snakemake" for j in r["jobs"] if j["cmd"] == "run-shard"}
    assert shards == {"000000", "000001"}  # 2 shard jobs, so 2 can run at once
    again = tmp_path / "again.md"  # --from-json re-renders the same section from the raw JSON alone
    res = subprocess.run(
        [sys.executable, cmd[1], "--from-json", str(raw_path), "--results", str(again)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert again.read_text() == text
