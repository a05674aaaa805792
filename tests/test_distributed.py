"""Scale-out engines: planned shard jobs (Snakemake's unit of work) and dask with a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_RESNET

import mmcache
from mmcache.errors import CacheError
from mmcache.extraction import finalize, plan_to_dir, run_planned_shard
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
    mmcache.extract([videos], ["logmel", "mfcc:fps=2"], root, shard_size=2, dask="local:2")
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
            [videos], [FAST_RESNET, "logmel"], tmp_path / "cache", shard_size=3, dask=cluster.scheduler_address
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
