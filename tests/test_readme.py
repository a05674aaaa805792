"""The README's command lines that combine a Snakemake target with --configfile do what it says
(issue 13, row 17): each is dry-run against a real config, and the order it warns about fails."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_snakemake_lines() -> list[list[str]]:
    lines = []
    for line in (ROOT / "README.md").read_text("utf-8").splitlines():
        words = shlex.split(line.split("#")[0]) if line.startswith("snakemake ") else []
        if any(w.startswith("--configfile") for w in words) and any(w == "extract_features" for w in words):
            lines.append(words)
    return lines


def _dry_run(words: list[str], config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    args = [re.sub(r"my\.yaml$", str(config), w) for w in words[1:]]
    args = [str(config) if a == "my.yaml" else a for a in args]
    cmd = [sys.executable, "-m", "snakemake", "-n", *args, "--config", f"out={tmp_path / 'out'}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_readme_target_with_configfile_lines_dry_run(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text((ROOT / "workflows" / "config" / "test.yaml").read_text())
    lines = _readme_snakemake_lines()
    assert lines, "the README shows no target together with --configfile"
    for words in lines:
        res = _dry_run(words, config, tmp_path)
        assert res.returncode == 0, (words, res.stderr[-2000:])
        assert "extract_features" in res.stdout + res.stderr
    wrong = _dry_run(["snakemake", "--cores", "1", "--configfile", "my.yaml", "extract_features"], config, tmp_path)
    assert wrong.returncode != 0 and "extract_features" in wrong.stdout + wrong.stderr  # as the README warns
