"""Scale-out engines: planned shard jobs (Snakemake's unit of work) and dask with a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_RESNET

import mmcache
from mmcache.distributed import DaskEngine
from mmcache.errors import CacheError
from mmcache.extraction import finalize, plan_to_dir, run_planned_shard
from mmcache.runtime import threads_in_use
from mmcache.synth import CLASSES, make_clip


def files(root: Path) -> dict[str, bytes]:
    skip = (".lock", ".input-hashes.json")
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(skip)
    }


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("dv")
    for i in range(6):
        make_clip(d / f"v{i}.mp4", duration=2.0, style=CLASSES[i % 3], variant=i)
    return d


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory, videos):
    root = tmp_path_factory.mktemp("local") / "cache"
    mmcache.extract([videos], ["logmel", "mfcc:fps=2"], root, shard_size=2)
    return root


def test_planned_shards_in_any_order_give_the_same_cache(tmp_path, videos, local_cache):
    root = tmp_path / "cache"
    shards = plan_to_dir([videos], ["logmel", "mfcc:fps=2"], root, shard_size=2)
    assert shards == ["000000", "000001", "000002"]
    with pytest.raises(CacheError, match="have not finished"):
        finalize(root)
    for s in reversed(shards):  # parallel jobs finish in any order
        run_planned_shard(root, s)
    assert run_planned_shard(root, "000001")["shard"] == "000001"  # a finished shard is a no-op
    report = finalize(root)
    assert report.new_ok == 6 and not (root / "plan").exists() and not (root / "parts").exists()
    assert files(root) == files(local_cache)
    assert plan_to_dir([videos], ["logmel", "mfcc:fps=2"], root, shard_size=2) == []  # nothing left to do


def test_dask_local_cluster_gives_the_same_cache(tmp_path, videos, local_cache):
    root = tmp_path / "cache"
    mmcache.extract([videos], ["logmel", "mfcc:fps=2"], root, shard_size=2, engine=DaskEngine("local:2"))
    assert not (root / ".staging").exists()
    assert files(root) == files(local_cache)  # one video per batch on dask, batches across videos locally


def test_dask_worker_killed_mid_task_is_rerun_elsewhere(tmp_path, videos):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    killed = []

    def kill_one_worker_once_work_started():
        staging = tmp_path / "cache" / ".staging"
        deadline = time.time() + 120
        while time.time() < deadline and not any(staging.rglob("*.json")):
            time.sleep(0.05)
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)  # the nanny restarts it; the scheduler re-runs its task elsewhere
        killed.append(pid)

    killer = threading.Thread(target=kill_one_worker_once_work_started, daemon=True)
    killer.start()
    try:
        mmcache.extract(
            [videos],
            [FAST_RESNET, "logmel"],
            tmp_path / "cache",
            shard_size=3,
            engine=DaskEngine(cluster.scheduler_address),
        )
    finally:
        killer.join(timeout=10)
        client.close()
        cluster.close()
    assert killed, "the worker was never killed"
    assert mmcache.verify_cache(tmp_path / "cache") == []
    mmcache.extract([videos], [FAST_RESNET, "logmel"], tmp_path / "local", shard_size=3)
    a, b = mmcache.open_cache(tmp_path / "cache"), mmcache.open_cache(tmp_path / "local")
    for name in ("resnet18", "logmel"):
        fa, fb = a.load_field(name), b.load_field(name)
        assert fa.keys == fb.keys
        for x, y in zip(fa.feats, fb.feats, strict=True):
            assert np.allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3)
    assert (tmp_path / "cache" / "logmel" / "000000.tar").read_bytes() == (
        tmp_path / "local" / "logmel" / "000000.tar"
    ).read_bytes()


def ffmpeg_recorder(tmp_path: Path) -> tuple[dict, Path]:
    """An environment whose `ffmpeg` (first on PATH) writes its arguments to a file, then runs ffmpeg."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ffmpeg-args.txt"
    bin_dir.mkdir()
    shim = bin_dir / "ffmpeg"
    shim.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "{log}"\nexec "{shutil.which("ffmpeg")}" "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def test_run_shard_keeps_to_its_threads_and_the_features_do_not_change(tmp_path, videos):
    """`mmcache run-shard --threads N` (what a Snakemake job runs) in a real process: torch and every
    ffmpeg it starts keep to N threads, and the files are byte-identical for N = 1 and 2."""
    env, log = ffmpeg_recorder(tmp_path)
    caches = {}
    for n in (1, 2):
        root = caches[n] = tmp_path / f"cache-{n}"
        assert plan_to_dir([videos], [FAST_RESNET, "logmel"], root, shard_size=6) == ["000000"]
        log.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "mmcache.cli", "run-shard", str(root), "000000", "--threads", str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"torch {n} thread(s) ({n} inter-op), ffmpeg {n} thread(s)" in res.stdout, res.stdout
        decodes = [line for line in log.read_text().splitlines() if "-filter_complex" in line]
        assert len(decodes) == 12, decodes  # 6 videos x (frames, audio)
        for line in decodes:
            assert f"-threads {n} -i " in line and line.endswith(f"-filter_complex_threads {n}"), line
        finalize(root)
    assert files(caches[1]) == files(caches[2])


def test_dask_local_workers_have_one_thread_each():
    from mmcache.distributed import connect

    client, cluster = connect("local:2")
    try:
        assert sorted(client.nthreads().values()) == [1, 1]
    finally:
        client.close()
        cluster.close()


def test_dask_tasks_run_on_one_thread_whatever_the_worker_environment(tmp_path, videos, monkeypatch):
    """A worker whose environment lets torch use 2 threads: each mmcache task still runs on one
    (asked in the worker's task thread, where torch's OpenMP thread count is kept)."""
    from dask.distributed import Client, LocalCluster

    # dask's nanny gives workers 1 (its pre-spawn-environ, which the environment overrides); torch reads both
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    try:
        before = client.submit(threads_in_use, pure=False).result()
        assert before.startswith("torch 2 thread(s)") and before.endswith("ffmpeg default thread(s)"), before
        mmcache.extract(
            [videos], ["logmel"], tmp_path / "cache", shard_size=3, engine=DaskEngine(cluster.scheduler_address)
        )
        after = client.submit(threads_in_use, pure=False).result()
        assert after == "torch 1 thread(s) (1 inter-op), ffmpeg 1 thread(s)", after
    finally:
        client.close()
        cluster.close()
