"""store/mapped.py: shards mapped copy-on-write, and arrays that outlive the interpreter's exit handlers."""

from __future__ import annotations

import numpy as np
from shard_helpers import _runs, _write_runs

from mmcache.store.tar import iter_tar


def test_arrays_stay_readable_at_interpreter_exit(tmp_path):
    """A mapped shard is never unmapped at exit while arrays may still be read (atexit handlers, __del__)."""
    import subprocess
    import sys

    path = _write_runs(tmp_path / "runs.tar")
    code = (
        "import atexit, sys\n"
        "state = {}\n"
        "atexit.register(lambda: print('sum', float(state['x'].sum())))\n"
        "from mmcache.store.tar import iter_tar\n"
        "class Keeper:\n"
        "    def __del__(self):\n"
        "        print('del', float(self.x.sum()))\n"
        f"got = list(iter_tar({str(path)!r}))\n"
        "state['x'] = got[0][1]\n"
        "keeper = Keeper(); keeper.x = got[1][1]\n"
        "del got\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sum " in res.stdout


def test_shards_are_mapped_copy_on_write(tmp_path, monkeypatch):
    import gc
    from pathlib import Path

    from mmcache.store import mapped

    def mapped_now():
        return str(path) in Path("/proc/self/maps").read_text()

    path = _write_runs(tmp_path / "runs.tar")
    before = path.read_bytes()
    got = list(iter_tar(path))
    assert mapped_now()  # the arrays view the file's pages (Linux)
    feats = got[0][1]
    assert feats.flags.writeable
    feats[:] = 7  # a private copy of that page: the file never changes
    assert path.read_bytes() == before and np.all(feats == 7)
    assert list(iter_tar(path))[0][1][0, 0] != 7
    del got, feats
    gc.collect()
    assert not mapped_now()  # unmapped once nothing views it
    monkeypatch.setenv("MMCACHE_MAP_SHARDS", "0")
    assert isinstance(mapped.map_file(path), bytearray)
    got = list(iter_tar(path))
    assert not mapped_now()
    assert [k for k, _, _ in got] == [k for k, _, _ in _runs()] and got[0][1].flags.writeable
