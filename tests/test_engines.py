"""engines.py: `extract(..., engine=...)` hands the shard tasks to any object with prepare/finish and uses
the outcomes function it returns; LocalEngine, the default, encodes in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmcache
from mmcache import shards
from mmcache.cache import open_cache, verify_cache
from mmcache.engines import LocalEngine
from mmcache.errors import MMCacheError
from mmcache.synth import CLASSES, make_clip


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("engine-videos")
    for style in CLASSES:
        make_clip(d / f"{style.label}.mp4", duration=1.0, style=style)
    return d


class Recording:
    """An engine that records what extract gives it and encodes locally, counting the jobs it encodes."""

    def __init__(self, fail: bool = False):
        self.prepared: list[tuple] = []
        self.finished: list[Path] = []
        self.encoded: list[str] = []
        self.fail = fail

    def prepare(self, root, tasks, args, timeout, progress):
        self.prepared.append((root, tasks, args, timeout))

        def outcomes(enc, jobs, timeout):
            if self.fail:
                raise MMCacheError("the cluster went away")
            self.encoded += [Path(job.video.path).name for job in jobs]
            return shards.encode_locally(enc, jobs, timeout)

        return outcomes

    def finish(self, root):
        self.finished.append(root)


def test_local_engine_encodes_in_this_process(tmp_path):
    engine = LocalEngine()
    assert engine.prepare(tmp_path, [], {}, 1.0, shards.Progress()) is shards.encode_locally
    assert engine.finish(tmp_path) is None


def test_extract_uses_the_engine_it_is_given(videos, tmp_path):
    root = tmp_path / "cache"
    engine = Recording()
    mmcache.extract([videos], ["logmel:fps=2"], root, shard_size=2, timeout=77.0, engine=engine)
    ((prep_root, tasks, args, timeout),) = engine.prepared  # prepared once, with every task
    assert prep_root == root and timeout == 77.0 and args == {"logmel": "logmel:fps=2"}
    new = [(t.shard, t.kind, t.fields) for t in tasks]
    assert new == [("000000", "new", ["logmel"]), ("000001", "new", ["logmel"])]
    assert sorted(Path(v.path).name for t in tasks for v in t.videos) == ["forest.mp4", "ocean.mp4", "sunrise.mp4"]
    assert sorted(engine.encoded) == ["forest.mp4", "ocean.mp4", "sunrise.mp4"]  # its outcomes were used
    assert engine.finished == [root]
    assert verify_cache(root) == [] and len(open_cache(root).samples("ok")) == 3
    # a new field: one "add" task per shard; nothing left to do: not prepared, still finished
    mmcache.extract([videos], ["logmel:fps=2", "mfcc:fps=2"], root, shard_size=2, engine=engine)
    assert [(t.kind, t.fields) for t in engine.prepared[1][1]] == [("add", ["mfcc"]), ("add", ["mfcc"])]
    mmcache.extract([videos], ["logmel:fps=2", "mfcc:fps=2"], root, shard_size=2, engine=engine)
    assert len(engine.prepared) == 2 and engine.finished == [root] * 3
    assert sorted(open_cache(root).fields) == ["logmel", "mfcc"] and verify_cache(root) == []


def test_an_engine_failing_stops_the_run_before_finish(videos, tmp_path):
    engine = Recording(fail=True)
    with pytest.raises(MMCacheError, match="the cluster went away"):
        mmcache.extract([videos], ["logmel:fps=2"], tmp_path / "cache", engine=engine)
    assert len(engine.prepared) == 1 and engine.finished == []  # what an engine keeps lets a re-run resume
