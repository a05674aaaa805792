"""Engines: where a shard task's features are computed. `extract(..., engine=...)` takes any object
with this interface and never asks which one it is:

* `prepare(root, tasks, args, timeout, progress)` -> an `outcomes` function for `shards.run_task`
  (encoder, jobs, timeout -> one Outcome per job, in job order), called once before the tasks run
  with the tasks that have fields to encode;
* `finish(root)`: clean up once every task was recorded (after an error, what an engine keeps lets a
  re-run resume: the dask engine's staged results).

`LocalEngine` (the default) encodes in this process through the pipeline; `distributed.DaskEngine`
computes every (video, field) on a dask cluster first and hands back the staged results. Process
settings (threads, heap) are runtime.py's, the same for every engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .shards import Outcomes, Progress, Task, encode_locally


class Engine(Protocol):
    def prepare(
        self, root: Path, tasks: list[Task], args: dict[str, str], timeout: float, progress: Progress
    ) -> Outcomes: ...

    def finish(self, root: Path) -> None: ...


class LocalEngine:
    """Encode in this process: decode threads and the encoder's batches (pipeline.py)."""

    def prepare(
        self, root: Path, tasks: list[Task], args: dict[str, str], timeout: float, progress: Progress
    ) -> Outcomes:
        return encode_locally

    def finish(self, root: Path) -> None:
        pass
