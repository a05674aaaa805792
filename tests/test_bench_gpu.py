"""benchmarks/gpu.sh in its CI-sized form on the CPU, so the GPU script cannot rot where no GPU is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def run_script(tmp_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORK_DIR": str(tmp_path / "work"), "OUT_DIR": str(tmp_path / "out"), **env}
    return subprocess.run(
        [str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_gpu_script_runs_in_its_ci_sized_form_on_the_cpu(tmp_path):
    assert os.access(SCRIPT, os.X_OK)
    res = run_script(tmp_path, 420, DEVICE="cpu", QUICK="1", DECODERS="2")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    out = tmp_path / "out"
    results = out / "RESULTS-gpu-cpu-quick.md"
    assert results.is_file() and (tmp_path / "work" / results.name).is_file()
    text = results.read_text()
    for row in (
        "<!-- bench_gpu:begin -->",
        "| decode (2 decoders, no encoding) |",
        "| encode only (cpu, pre-decoded) |",
        "| pipeline (run_encoder, decoders=2) |",
        "| pipeline / min(decode, encode) |",
        "| encoder busy share of pipeline wall time |",
        "| features byte-identical over 1 round and one pass with decoders=1 | yes |",
        "<!-- bench_train:begin -->",
    ):
        assert row in text, row
    raw = json.loads((out / "bench_gpu-results-cpu-d2-quick.json").read_text())
    assert raw["params"]["decoders"] == 2 and raw["params"]["dtype"] == "bfloat16" and raw["params"]["channels_last"]
    (r,) = raw["rounds"]
    assert all(r[k]["fps"] > 0 and r[k]["steps"] > 0 for k in ("decode", "encode", "pipeline"))
    assert r["decode"]["steps"] == r["pipeline"]["steps"] and 0 < r["pipeline"]["busy"] <= 1
    assert raw["one_decoder"]["sha256"] == r["pipeline"]["sha256"]  # decoders=2 and 1: the same bytes
    assert list(out.glob("bench_train-results*.json"))
    assert (out / "bench_gpu.log").is_file() and (out / "bench_train.log").is_file()
    assert "device=cpu decoders=2 quick=1" in (out / "summary.txt").read_text()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_gpu_script_refuses_cuda_without_a_gpu(tmp_path):
    res = run_script(tmp_path, 60, DEVICE="cuda", SETUP="0")
    assert res.returncode == 1
    assert "nvidia-smi is not on PATH" in res.stderr and "DEVICE=cpu QUICK=1" in res.stderr
    assert not (tmp_path / "out").exists()  # nothing was run
