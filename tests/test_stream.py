"""stream.py: streamed training and evaluation give what the in-memory data gives."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmfit_helpers import cfg

from mmfit.predict import evaluate_checkpoint
from mmfit.trainer import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_streaming_gives_the_same_eval_as_in_memory(labelled, tmp_path):
    train(cfg(labelled, tmp_path))
    ckpt = tmp_path / "run" / "best.pt"
    result = train(cfg(labelled, tmp_path / "s", streaming="always", epochs=3))
    assert result.val["accuracy"] >= 0.5
    mem = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    import mmfit.predict

    orig = mmfit.predict.config_of
    mmfit.predict.config_of = lambda ck, **kw: orig(ck, streaming="always", **kw)
    try:
        streamed = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    finally:
        mmfit.predict.config_of = orig
    assert streamed["accuracy"] == mem["accuracy"] and streamed["confusion"] == mem["confusion"]


def test_segment_tagging_trains_when_streamed_like_in_memory(labelled, tmp_path):
    """Streamed step targets are filled as shards are read, after the monitor check; training a
    segment task streamed once failed there with a bare ValueError."""
    from mmfit_helpers import _labels_csv

    ids = [f"{c}_{i:03d}" for c in ("sunrise", "ocean", "forest") for i in range(8)]
    rows = [(i, 0.0, 0.75, i.split("_")[0]) for i in ids]
    seg = _labels_csv(tmp_path / "seg.csv", rows, ("id", "start", "end", "label"))
    opts = {"task": "segment", "labels": seg, "fields": ["logmel"], "fusion": "attention", "epochs": 2, "hidden": 16}
    streamed = train(cfg(labelled, tmp_path / "s", streaming="always", **opts))
    assert len(streamed.history) == 2 and all(math.isfinite(r["val/loss"]) for r in streamed.history)
    assert 0 <= streamed.val["segment_f1"] <= 1 and streamed.val["frame_accuracy"] > 0


# ---------------------------------------------------------------------------------------------
# windows of shards: a shuffle buffer across shards, read ahead in a thread, in a seeded order


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3,000 clips in 12 shards of 256 (benchmarks/synthetic.py: the library's writers), labels in meta."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import synthetic

    root = tmp_path_factory.mktemp("stream") / "cache"
    synthetic.write_cache(root, 3000, 3, "webdataset", fields={"tiny": ("tiny", "synthetic", "vision", 4)})
    return root


def _data(cache, pooled=False, **kw):
    from mmfit.config import build_config
    from mmfit.data import load_data

    return load_data(build_config(cache=str(cache), verify=False, **kw).data, pooled=pooled)


def _epoch(data, rows, gen, batch=100):
    return [
        (c.idx.numpy().copy(), {n: x.clone() for n, x in c.feats.items()}) for c in data.source.chunks(rows, batch, gen)
    ]


def test_a_streamed_epoch_visits_every_row_once_shuffled_across_shards(synthetic):
    data = _data(synthetic, streaming="always", memory_budget_gb=1.0)
    assert data.source.window > 1 and data.report["streaming"]["window"] == data.source.window
    rows = data.rows("train")
    epoch = _epoch(data, rows, torch.Generator().manual_seed(0))
    seen = np.concatenate([i for i, _ in epoch])
    assert sorted(seen.tolist()) == sorted(rows.tolist()) and all(len(i) <= 100 for i, _ in epoch)
    shards = data.samples.shard
    assert max(len(set(shards[i].tolist())) for i, _ in epoch) > 1  # one batch mixes shards
    plain = _epoch(data, rows, None)  # no generator: cache order
    assert np.concatenate([i for i, _ in plain]).tolist() == sorted(rows.tolist())


def test_streamed_batches_depend_only_on_the_generator(synthetic):
    """The same state gives the same batches (so a resumed run trains on what the first would have),
    whatever the reader thread's timing; the next epoch differs."""
    data = _data(synthetic, streaming="always", memory_budget_gb=1.0)
    rows = data.rows("train")
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    first, second = _epoch(data, rows, gen), _epoch(data, rows, gen)
    gen.set_state(state)
    again = _epoch(data, rows, gen)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("pooled", [False, True])
def test_streamed_features_are_the_in_memory_ones(synthetic, pooled):
    """Row for row, the batches streamed (pooled and normalised by the reader thread for a pooled model)
    equal the in-memory ones."""
    mem = _data(synthetic, pooled=pooled, streaming="never")
    streamed = _data(synthetic, pooled=pooled, streaming="always", memory_budget_gb=1.0)
    assert streamed.source.pool is (streamed.norm if pooled else None)
    rows = mem.rows("val")
    want = {int(b.idx[j]): b.feats["tiny"][j] for b in mem.batches(rows, 64) for j in range(len(b.idx))}
    for b in streamed.batches(rows, 64, torch.Generator().manual_seed(1)):
        for j, i in enumerate(b.idx.tolist()):
            assert torch.equal(b.feats["tiny"][j], want[i])


@pytest.mark.parametrize("reader", ["process", "thread"])
def test_a_read_error_in_the_reader_is_raised_and_leaving_early_stops_it(synthetic, tmp_path, reader, monkeypatch):
    """Local caches are read by a forked DataLoader worker, remote ones by a thread: either way an
    error while reading is raised in the training process naming the file, leaving an epoch early
    stops the reader, and torch gets its threads back."""
    import multiprocessing
    import shutil
    import threading

    from mmcache.errors import CacheError
    from mmfit.stream import StreamSource

    if reader == "thread":
        monkeypatch.setattr(StreamSource, "_read_in_process", lambda self, plan, key: self._read_in_thread(plan))
    copy = tmp_path / "cache"
    shutil.copytree(synthetic, copy)
    data = _data(copy, streaming="always", memory_budget_gb=1e-6)  # one shard a window
    rows = data.rows("train")
    threads = torch.get_num_threads()

    def stopped() -> bool:
        alive = [t for t in threading.enumerate() if t.name == "mmfit-stream"] + multiprocessing.active_children()
        return not alive and torch.get_num_threads() == threads

    chunks = data.source.chunks(rows, 50, None)
    next(chunks)
    assert not stopped()  # a reader is running
    chunks.close()  # leaving early
    assert stopped()
    last = sorted((copy / "tiny").iterdir())[-1]
    last.write_bytes(last.read_bytes()[:1000])  # cut: its read fails in the reader
    with pytest.raises(CacheError, match=last.name):
        _epoch(data, rows, None)
    assert stopped()


@pytest.mark.parametrize("aligned", [False, True])
def test_features_read_in_chunks_of_rows_are_the_same(synthetic, monkeypatch, aligned):
    """layout.field_arrays copies samples out of the shard files READ_ROWS rows at a time (so no view
    of a mapped shard outlives its chunk); any chunk size lays out the same arrays, views of no shard."""
    import mmfit.layout
    from mmfit.layout import field_arrays

    data = _data(synthetic, streaming="never")
    rows = data.samples
    whole = field_arrays(rows, ["tiny"], {"tiny": 4}, 3, aligned)
    monkeypatch.setattr(mmfit.layout, "READ_ROWS", 7)
    parts = field_arrays(rows, ["tiny"], {"tiny": 4}, 3, aligned)
    assert np.array_equal(whole[0]["tiny"], parts[0]["tiny"]) and np.array_equal(whole[1]["tiny"], parts[1]["tiny"])
    assert whole[1]["tiny"].all() and whole[0]["tiny"].base is None
    shorter = field_arrays(rows, ["tiny"], {"tiny": 4}, 2, aligned)  # subsampled: the per-sample path
    assert shorter[0]["tiny"].shape == (len(rows), 2, 4)


def test_a_pooled_model_reads_the_spill_after_the_statistics_pass_with_the_same_features(synthetic, monkeypatch):
    """For a pooled model the reader writes each row's mean over time to the spill the first time it
    reads the row (here: the pass that computes the train statistics); every epoch then reads the
    spill, never the cache again, and gives row for row the in-memory features; the spill goes with
    its data."""
    import gc

    import mmfit.stream

    mem = _data(synthetic, pooled=True, streaming="never")
    streamed = _data(synthetic, pooled=True, streaming="always", memory_budget_gb=1e-6)  # many windows
    assert streamed.report["norm"] == "train"
    both = np.concatenate([mem.rows("train"), mem.rows("val")])
    want = {int(b.idx[j]): b.feats["tiny"][j] for b in mem.batches(both, 64) for j in range(len(b.idx))}
    spill, rows = streamed.source.spill, streamed.rows("train")
    assert spill.done[rows].all() and not spill.done[streamed.rows("val")].any()
    val = list(streamed.batches(streamed.rows("val"), 64))  # not yet read: from the cache
    assert spill.done[streamed.rows("val")].all()

    def no_cache_read(*a, **k):
        raise AssertionError("read the cache")

    monkeypatch.setattr(mmfit.stream, "field_arrays", no_cache_read)
    gen = torch.Generator().manual_seed(2)
    first, second = list(streamed.batches(rows, 64, gen)), list(streamed.batches(rows, 64, gen))
    assert [b.idx.tolist() for b in first] != [b.idx.tolist() for b in second]  # reshuffled
    again = list(streamed.batches(streamed.rows("val"), 64))
    for b in first + second + val + again:
        for j, i in enumerate(b.idx.tolist()):
            assert torch.equal(b.feats["tiny"][j], want[i])
    folder = spill.dir
    del streamed, spill, first, second, val, again
    gc.collect()
    assert not folder.exists()


def test_torch_keeps_its_threads_while_the_reader_is_mostly_idle(synthetic):
    """The forked reader takes a core: torch runs one thread fewer during an epoch unless the last one
    kept the reader busy less than LIGHT_SHARE of the time."""
    from mmfit.stream import LIGHT_SHARE, pass_key

    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("one torch thread: nothing to give up")
    data = _data(synthetic, streaming="always", memory_budget_gb=1e-6)
    rows = data.rows("train")
    data.source.busy.clear()  # unknown (loading measured it already: the statistics pass streams the shards)
    seen = [torch.get_num_threads() for _ in data.source.chunks(rows, 500, None)]
    assert set(seen) == {threads - 1} and 0 < data.source.busy[pass_key(rows)] <= 1  # measured over that pass
    data.source.busy[pass_key(rows)] = LIGHT_SHARE / 2
    val = data.rows("val")
    data.source.busy[pass_key(val)] = 0.9  # another pass over other rows kept the reader busy
    seen = [torch.get_num_threads() for _ in data.source.chunks(rows, 500, None)]
    assert set(seen) == {threads} and torch.get_num_threads() == threads
    assert {torch.get_num_threads() for _ in data.source.chunks(val, 500, None)} == {threads - 1}


def test_without_room_for_the_spill_a_pooled_model_warns_and_reads_the_cache(synthetic, monkeypatch):
    """A TMPDIR without room for the spill (its space is reserved up front) is a warning that names the
    size and the folder; every pass then reads the cache and gives the same features."""
    import errno
    import os

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    mem = _data(synthetic, pooled=True, streaming="never")
    with pytest.warns(UserWarning, match=r"no spill of pooled features .* GB\) in .*No space left"):
        streamed = _data(synthetic, pooled=True, streaming="always", memory_budget_gb=1e-6)
    assert streamed.source.spill is None
    want = {int(b.idx[j]): b.feats["tiny"][j] for b in mem.batches(mem.rows("val"), 64) for j in range(len(b.idx))}
    for b in streamed.batches(streamed.rows("val"), 64):
        for j, i in enumerate(b.idx.tolist()):
            assert torch.equal(b.feats["tiny"][j], want[i])


def test_without_posix_fallocate_the_spill_is_a_sparse_file_with_the_same_features(synthetic, monkeypatch):
    """macOS has no posix_fallocate: the spill's files are sized with ftruncate instead, and a pooled
    model's batches from it are the in-memory ones."""
    import os

    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    mem = _data(synthetic, pooled=True, streaming="never")
    streamed = _data(synthetic, pooled=True, streaming="always", memory_budget_gb=1e-6)
    rows = streamed.rows("train")
    assert streamed.source.spill is not None and streamed.source.spill.done[rows].all()
    want = {int(b.idx[j]): b.feats["tiny"][j] for b in mem.batches(rows, 64) for j in range(len(b.idx))}
    for b in streamed.batches(rows, 64, torch.Generator().manual_seed(0)):
        for j, i in enumerate(b.idx.tolist()):
            assert torch.equal(b.feats["tiny"][j], want[i])
