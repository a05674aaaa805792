"""The heap bound that keeps a long extraction's peak RSS down (mmcache/runtime.py)."""

import os
import subprocess
import sys

import pytest

CODE = """
from mmcache.encoders import build_encoder
import mmcache.runtime as m
build_encoder("logmel")
print(m._applied)
"""


def _applied(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MMCACHE_MMAP_THRESHOLD"}
    if env_value is not None:
        env["MMCACHE_MMAP_THRESHOLD"] = env_value
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_building_an_encoder_pins_the_mmap_threshold_unless_disabled():
    assert _applied(None) == str(128 * 1024)
    assert _applied("1048576") == "1048576"
    assert _applied("0") == "0"  # disabled: glibc's own dynamic threshold stays
