"""Caches shared by the merge, diff, stats and remote-reading tests, a plugin (`pytest_plugins =
["sharing_fixtures"]` in the files using them): the caches are made once per session (they are only
read: every test copies what it changes), and a loopback http.server serves copies of them (one
server per test file)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from sharing_helpers import FIELDS

import mmcache
from mmcache.synth import CLASSES, make_clip


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Caches made from short clips: a (3 ok + 1 failed, 2 shards), b (ocean again as sea.mp4 +
    forest), fps4 (logmel:fps=4 under the same name), mfcc_only, and an HDF5 copy of b."""
    d = tmp_path_factory.mktemp("sharing")
    sunrise, ocean, forest = CLASSES
    for name, files in {
        "va": [("sunrise.mp4", sunrise, True), ("ocean.mp4", ocean, True), ("silent.mp4", sunrise, False)],
        "vb": [("sea.mp4", ocean, True), ("forest.mp4", forest, True)],
    }.items():
        for fname, style, audio in files:
            make_clip(d / name / fname, duration=1.0, style=style, audio=audio)
    (d / "va" / "broken.mp4").write_text("not a video\n")
    shutil.copy(d / "va" / "ocean.mp4", d / "vb" / "sea.mp4")  # the same content under another name
    mmcache.extract([d / "va"], FIELDS, d / "a", shard_size=2)
    mmcache.extract([d / "vb"], FIELDS, d / "b", shard_size=2)
    mmcache.extract([d / "vb"], FIELDS, d / "b_h5", shard_size=1, backend="hdf5")
    mmcache.extract([d / "vb" / "forest.mp4"], ["logmel:fps=4"], d / "fps4")
    mmcache.extract([d / "vb" / "forest.mp4"], ["mfcc:fps=2"], d / "mfcc_only")
    return d


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """`python -m http.server` on 127.0.0.1 serving copies of the caches; yields (base URL, dir)."""
    d = tmp_path_factory.mktemp("www")
    for name in ("a", "b_h5"):
        shutil.copytree(world / name, d / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/a/manifest.json", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("http.server did not start")
    yield base, d
    proc.terminate()
    proc.wait(timeout=10)
