"""dask.distributed as a second engine: per-video, per-field feature tasks on a cluster.

Each task decodes and encodes one video for one field and publishes its result atomically under
<cache>/.staging/<field>/<key>.* (features .npy, timestamps .npy, then a .json status written last).
A task whose status file exists returns at once, so a task re-run after a worker dies, or a whole
re-run of `extract`, is idempotent. The client then packs the staged results into shards in the
usual order (shards.run_task with `outcomes`), so the cache is the same as a local run's.

A worker runs `nthreads` tasks at once, one per thread it was given, so each task keeps to one
thread: torch's and ffmpeg's (runtime.use_threads(1), set by the task itself, whatever the
environment of the worker). `local:N` starts N single-threaded worker processes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from .encoders import Encoder, build_encoder
from .errors import InputError
from .pipeline import Job, Outcome, run_encoder
from .probe import probe
from .runtime import use_threads
from .shards import Progress, Task, write_file
from .store.arrays import load_npy, npy_bytes
from .types import VideoInput

STAGING = ".staging"
TASK_THREADS = 1  # torch and ffmpeg threads of one task: a worker's thread is one core's worth of work
_ENCODERS: dict[str, Encoder] = {}  # per worker process: each model is loaded once


def _paths(root: Path, field: str, key: str) -> tuple[Path, Path, Path]:
    base = root / STAGING / field
    return base / f"{key}.npy", base / f"{key}.ts.npy", base / f"{key}.json"


def stage_video(root: str, video: dict, arg: str, field: str, timeout: float) -> str:
    """Runs on a worker: one video, one field -> staged files. Returns the status."""
    feats_p, ts_p, status_p = _paths(Path(root), field, video["key"])
    if status_p.is_file():
        return json.loads(status_p.read_text())["status"]
    use_threads(TASK_THREADS)  # in the task's own thread: OpenMP keeps a thread count per thread
    enc = _ENCODERS.get(arg) or _ENCODERS.setdefault(arg, build_encoder(arg))
    v = VideoInput(**{**video, "path": Path(video["path"])})
    try:
        info = probe(v.path, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - recorded as the video's failure; the client probes again
        status = {"status": "failed", "reason": str(e)}
    else:
        (o,) = run_encoder(enc, [Job(v.key, v, info)], timeout=timeout)
        if o.status == "ok":
            write_file(feats_p, npy_bytes(o.feats))
            write_file(ts_p, npy_bytes(o.ts))
        status = {"status": o.status, "reason": o.reason}
    write_file(status_p, json.dumps(status).encode())  # last: its presence means done
    return status["status"]


def staged_outcomes(root: Path):
    """An `outcomes` function for shards.run_task that reads staged results instead of encoding."""

    def outcomes(enc: Encoder, jobs: list[Job], timeout: float) -> Iterator[Outcome]:
        for job in jobs:
            feats_p, ts_p, status_p = _paths(root, enc.field, job.key)
            status = json.loads(status_p.read_text())
            if status["status"] == "ok":
                yield Outcome(
                    job, "ok", load_npy(feats_p.read_bytes(), str(feats_p)), load_npy(ts_p.read_bytes(), str(ts_p))
                )
            else:
                yield Outcome(job, status["status"], reason=status["reason"])

    return outcomes


def connect(address: str):
    """(client, cluster): a scheduler address, or 'local:N' for a LocalCluster of N processes on loopback."""
    from dask.distributed import Client, LocalCluster

    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--dask {address!r}: expected local:N with N workers") from None
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except OSError as e:
        raise InputError(f"cannot reach dask scheduler {address}: {e}") from None


def stage_on_dask(
    address: str, root: Path, tasks: list[Task], args: dict[str, str], timeout: float, progress: Progress
):
    """Compute every (video, field) of `tasks` on the cluster; returns the outcomes reader."""
    from dask.distributed import as_completed

    client, cluster = connect(address)
    try:
        futures = []
        for task in tasks:
            for v, video in zip(task.videos, task.to_json()["videos"], strict=True):
                if not v.sha256 or not v.bytes:
                    continue  # unreadable or empty: the client records the failure while packing
                for f in task.fields:
                    futures.append(
                        client.submit(
                            stage_video,
                            str(root.absolute()),
                            video,
                            args[f],
                            f,
                            timeout,
                            key=f"mmcache-stage-{f}-{v.key}",
                            retries=3,
                        )
                    )
        progress.start("dask", len(futures))
        for _ in as_completed(futures):
            progress.advance("dask")
        client.gather(futures)  # re-raises a task that failed for good
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return staged_outcomes(root)


__all__ = ["connect", "stage_on_dask", "stage_video", "staged_outcomes"]


class DaskEngine:
    """The dask engine (engines.py's interface): `address` is a scheduler address (tcp://host:8786)
    or 'local:N' for a LocalCluster of N single-threaded worker processes."""

    def __init__(self, address: str):
        self.address = address

    def prepare(self, root: Path, tasks: list[Task], args: dict[str, str], timeout: float, progress: Progress):
        return stage_on_dask(self.address, root, tasks, args, timeout, progress)

    def finish(self, root: Path) -> None:
        shutil.rmtree(root / STAGING, ignore_errors=True)
