"""store/lock.py: one writer per cache; a second refuses at once, and a crashed writer leaves no lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mmcache.errors import CacheError
from mmcache.store.lock import CacheLock

HOLD = """
import sys, time
from pathlib import Path
from mmcache.store.lock import CacheLock
with CacheLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_lock_is_refused_while_the_first_is_held(tmp_path):
    with CacheLock(tmp_path):
        with pytest.raises(CacheError, match=f"cache {tmp_path} is being written by another mmcache process"):
            CacheLock(tmp_path).__enter__()
    with CacheLock(tmp_path):  # released on exit: taken again at once
        assert (tmp_path / ".lock").is_file()


def test_locks_of_other_names_are_independent(tmp_path):
    with CacheLock(tmp_path), CacheLock(tmp_path, ".lock-000001"), CacheLock(tmp_path, ".lock-000002"):
        with pytest.raises(CacheError, match="another mmcache process"):
            CacheLock(tmp_path, ".lock-000001").__enter__()


def test_a_missing_cache_folder_is_a_cache_error(tmp_path):
    with pytest.raises(CacheError, match=r"nope/\.lock: cannot open the cache lock"):
        CacheLock(tmp_path / "nope").__enter__()


def test_a_writer_in_another_process_blocks_us_until_it_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CacheError, match="another mmcache process"):
            CacheLock(tmp_path).__enter__()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no __exit__ runs
        holder.wait(timeout=10)
    with CacheLock(tmp_path):  # the kernel dropped the dead process's lock
        pass
