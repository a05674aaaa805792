"""The opt-in heap bound of mmcache/runtime.py (MMCACHE_MMAP_THRESHOLD)."""

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
def test_the_mmap_threshold_is_glibcs_own_unless_pinned_by_the_environment():
    assert _applied(None) == "0"  # default: glibc's dynamic threshold (buffers are reused instead)
    assert _applied("131072") == "131072"
    assert _applied("1048576") == "1048576"
    assert _applied("0") == "0"
    assert _applied("lots") == "0"  # not a number: the default
