"""cache.py: padded field arrays, random access by key, whole-shard reads and their checks."""

from __future__ import annotations

import numpy as np
import pytest

from mmcache.errors import CacheError
from mmcache.store import H5ShardWriter


def test_padded_matches_a_per_sample_copy():
    from mmcache.cache import FieldArrays

    rng = np.random.default_rng(0)
    lengths = [3, 0, 5, 1, 5]
    feats = [rng.normal(size=(n, 4)).astype(np.float16) for n in lengths]
    ts = [rng.random((n, 2)) for n in lengths]
    arr = FieldArrays("f", list("abcde"), feats, ts, np.array([n > 0 for n in lengths]))
    for max_steps in (None, 2, 8):
        x, t, mask = arr.padded(max_steps)
        steps = max(lengths) if max_steps is None else max_steps
        assert x.shape == (5, steps, 4) and x.dtype == np.float32 and t.shape == (5, steps, 2)
        for i, n in enumerate(lengths):
            k = min(n, steps)
            assert np.array_equal(x[i, :k], feats[i][:k].astype(np.float32)) and not x[i, k:].any()
            assert np.array_equal(t[i, :k], ts[i][:k]) and mask[i].tolist() == [True] * k + [False] * (steps - k)
    empty = FieldArrays("f", ["a"], [np.zeros((0, 4), np.float32)], [np.zeros((0, 2))], np.array([False]))
    x, t, mask = empty.padded()
    assert x.shape == (1, 1, 4) and not mask.any()


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory, clips):
    """The conftest clips plus one unreadable file, extracted with both backends (shards of 2)."""
    import shutil

    import mmcache

    d = tmp_path_factory.mktemp("random-access")
    inputs = d / "inputs"
    shutil.copytree(clips, inputs)
    (inputs / "broken.mp4").write_text("not a video")
    made = {}
    for backend in ("webdataset", "hdf5"):
        root = d / backend
        mmcache.extract([inputs], ["logmel:fps=2,window=0.5", "minilm-text"], root, shard_size=2, backend=backend)
        made[backend] = root
    return made


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_read_sample_returns_what_iter_samples_returns(two_backends, backend):
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    fields = list(cache.fields)
    seen = list(cache.iter_samples())
    assert any(s[f] is None for s in seen for f in fields)  # the silent clip: no audio/text for some field
    with cache:
        for s in reversed(seen):  # any order
            for f in fields:
                got, want = cache.read_sample(f, s["key"]), s[f]
                if want is None:
                    assert got is None
                else:
                    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, want, strict=True))
    with cache.field_reader(fields[0], max_open=1) as reader:  # one file open at a time still reads all
        assert [reader.read(s["key"]) is None for s in seen] == [s[fields[0]] is None for s in seen]
        assert len(reader._open) == 1
    failed = cache.samples("failed")
    assert failed
    with pytest.raises(CacheError, match="not an ok sample"):
        cache.read_sample(fields[0], failed[0]["key"])
    for bad in ("0123456789abcdef0123", "../x", 5):
        with pytest.raises(CacheError, match="has no sample"):
            cache.read_sample(fields[0], bad)
    with pytest.raises(CacheError, match="has no field 'nope'"):
        cache.read_sample("nope", seen[0]["key"])


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_reading_ok_samples_at_random_parses_no_samples_rows(two_backends, backend, monkeypatch):
    """read_sample finds a key's shard and status in the columnar samples index: it never parses a
    shard's samples rows (JSON) for an ok sample. Parsing them on every read once made random reads
    across more shards than ROWS_KEPT 100x slower (500 samples/s on bench_read's 40 shards)."""
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    keys, field = cache.ok_keys(), next(iter(cache.fields))
    parsed = []
    parse = cache._parse_rows
    monkeypatch.setattr(cache, "_parse_rows", lambda shard: parsed.append(shard) or parse(shard))
    with cache:
        got = [cache.read_sample(field, k) for k in reversed(keys)]
        assert parsed == [] and any(g is not None for g in got)
        with pytest.raises(CacheError, match="not an ok sample"):  # a failed one: its error, from its rows
            cache.read_sample(field, cache.samples("failed")[0]["key"])


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_read_sample_refuses_a_cut_shard(two_backends, backend, tmp_path):
    import shutil

    from mmcache import open_cache

    root = tmp_path / "cache"
    shutil.copytree(two_backends[backend], root)
    cache = open_cache(root)
    key = cache.samples("ok")[0]["key"]
    path = root / cache.fields["logmel"]["files"][cache.locate(key)[0]]["path"]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CacheError, match=path.name):
        cache.read_sample("logmel", key)


def test_a_shard_file_repeating_a_sample_instead_of_another_is_refused(two_backends, tmp_path):
    """HDF5 shards can hold a key twice: whole-shard reads count distinct samples, so a file that
    repeats one sample where the manifest promises two is an error naming it, never a silently
    missing sample."""
    import json
    import shutil

    from mmcache import open_cache

    root = tmp_path / "cache"
    shutil.copytree(two_backends["hdf5"], root)
    cache = open_cache(root)
    shard = next(s for s, e in sorted(cache.manifest["shards"].items()) if e["ok"] >= 2)
    name = "logmel"
    entry = cache.fields[name]["files"][shard]
    (key, (feats, ts)), *_ = cache.read_field_shard(name, shard).items()
    path = root / entry["path"]
    path.unlink()
    w = H5ShardWriter(path, cache.fields[name]["dim"], cache.fields[name]["dtype"])
    w.add(key, feats, ts)
    w.add(key, feats, ts)  # in place of the shard's other ok sample
    w.close()
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["fields"][name]["files"][shard].update(count=2, missing={})  # the manifest promises both
    (root / "manifest.json").write_text(json.dumps(manifest))
    cache = open_cache(root)
    for read in (lambda: list(cache.iter_samples()), lambda: cache.load_field(name)):
        with pytest.raises(CacheError, match=f"{path.name}: 1 samples read, manifest says 2"):
            read()


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_whole_shard_reads_ask_for_the_next_files_ahead(two_backends, backend):
    """iter_samples reads shard by shard, every field of a shard in turn; load_field one field's shards.
    Every file after the first is asked for (prefetched) once, while one of the two files before it is
    read."""
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    events: list[tuple[str, str]] = []
    cache.transport.prefetch = lambda entry: events.append(("ask", entry["path"]))
    iter_file = cache.iter_file
    cache.iter_file = lambda entry: (events.append(("read", entry["path"])), iter_file(entry))[1]

    def check(files):
        assert [p for e, p in events if e == "read"] == files
        assert [p for e, p in events if e == "ask"] == files[1:]
        for i, path in enumerate(files[1:], 1):  # asked for before it is read, and at most 2 files ahead
            reads_before = [p for e, p in events[: events.index(("ask", path))] if e == "read"]
            assert i - 2 <= len(reads_before) <= i - 1, (path, reads_before)
        events.clear()

    fields = list(cache.fields)
    list(cache.iter_samples())
    check([cache.fields[n]["files"][s]["path"] for s in cache.shards for n in fields])
    for name in fields:
        cache.load_field(name)
        check([cache.fields[name]["files"][s]["path"] for s in cache.shards])


# ---------------------------------------------------------------------------------------------
# the samples index as columns


def _synthetic(root, clips: int):
    """A synthetic cache of `clips` clips (benchmarks/synthetic.py: the library's writers, 256 a shard,
    labels in the samples meta), one tiny field."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import synthetic

    synthetic.write_cache(root, clips, 2, "webdataset", fields={"tiny": ("tiny", "synthetic", "vision", 4)})
    return root


@pytest.mark.parametrize("backend", ["webdataset", "hdf5"])
def test_table_columns_agree_with_the_samples_rows(two_backends, backend):
    from mmcache import open_cache

    cache = open_cache(two_backends[backend])
    rows = cache.samples()
    assert any(r["status"] == "failed" for r in rows)  # broken.mp4
    every = cache.table(("id", "source", "error", "meta.none"), status=None)
    assert every["key"].tolist() == [r["key"].encode() for r in rows]
    assert [cache.shards[i] for i in every["shard"]] == [r["shard"] for r in rows]
    assert every["source"].tolist() == [r["source"].encode() for r in rows]
    assert every["error"].tolist() == [(r.get("error") or "").encode() for r in rows]
    assert set(every["meta.none"].tolist()) == {b""}  # a meta value no row has
    ok = cache.table(("source",))
    assert ok["source"].tolist() == [r["source"].encode() for r in rows if r["status"] == "ok"]
    assert cache.ok_keys() == [r["key"] for r in rows if r["status"] == "ok"]
    index = cache.index()
    assert index.ok.tolist() == [r["status"] == "ok" for r in rows] and index.starts[-1] == len(rows)


def test_locate_and_load_field_by_key_use_the_columns(two_backends):
    from mmcache import open_cache

    cache = open_cache(two_backends["webdataset"])
    rows = cache.samples()
    for r in rows:
        shard, row = cache.locate(r["key"])
        assert shard == r["shard"] and row["key"] == r["key"] and row["source"] == r["source"]
    for missing in ("0" * 24, "not-a-key", "é" * 24, "", r["key"][:-1]):
        with pytest.raises(CacheError, match="has no sample"):
            cache.locate(missing)
    failed = next(r["key"] for r in rows if r["status"] == "failed")
    ok = [r["key"] for r in rows if r["status"] == "ok"]
    name = sorted(cache.fields)[0]
    picked = [ok[-1], failed, "f" * 24, ok[0]]  # out of order, a failed sample and an unknown key
    arr = cache.load_field(name, picked)
    assert arr.keys == picked and arr.present.tolist()[1:3] == [False, False]
    whole = cache.load_field(name)
    at = {k: i for i, k in enumerate(whole.keys)}
    for j in (0, 3):
        assert arr.present[j] == whole.present[at[picked[j]]]
        assert np.array_equal(arr.feats[j], whole.feats[at[picked[j]]])


def test_the_index_holds_columns_not_a_python_object_per_sample(tmp_path):
    """Opening a cache of N samples and listing its ok keys and a meta column keeps O(shards) Python
    objects, not O(N) (the dict per row it used to keep): counted with the garbage collector."""
    import gc

    from mmcache import open_cache

    root = _synthetic(tmp_path / "c", 3000)  # 12 shards
    cache = open_cache(root)
    gc.collect()
    before = len(gc.get_objects())
    table = cache.table(("id", "meta.label"))
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert len(table["key"]) == 3000 and table["meta.label"][0].startswith(b"class-")
    assert grown < 100, grown  # a few per shard at most
    size = sum(a.nbytes for a in (*table.values(), cache.index().keys, cache.index().ok))
    assert size / 3000 < 100  # bytes a sample: keys 24, id 10, label 7, shard 4, ok 1...


def test_parse_samples_fast_path_gives_what_the_row_by_row_path_gives(two_backends, tmp_path):
    import json
    from pathlib import Path

    from mmcache.store.manifest import _parse_rows, parse_samples

    for path in sorted(Path(two_backends["hdf5"], "samples").glob("*.jsonl")):
        data = path.read_bytes()
        assert parse_samples(data, "x") == _parse_rows(data.decode().split("\n")[:-1], "x")
    row = json.loads(path.read_bytes().splitlines()[0])
    nan = json.dumps({**row, "duration": float("nan")}).encode() + b"\n"  # orjson refuses NaN: the json module reads it
    assert np.isnan(parse_samples(nan + data, "x")[0]["duration"])
    two = json.dumps(row).encode() + b"," + json.dumps(row).encode() + b"\n"  # two values on one line
    with pytest.raises(CacheError, match=r"x:2: bad samples row"):
        parse_samples(data[: data.index(b"\n") + 1] + two, "x")
    bad = json.dumps({**row, "key": "../../etc"}).encode() + b"\n"
    with pytest.raises(CacheError, match=r"x:2: bad samples row .*does not match"):
        parse_samples(data[: data.index(b"\n") + 1] + bad, "x")


def test_a_key_holding_a_line_break_is_refused_like_any_bad_key(two_backends):
    """The column check joins a shard's keys with "\n" and matches them at once: a key that holds a
    "\n" itself must not pass as two good keys."""
    import json
    from pathlib import Path

    from mmcache.store.manifest import parse_samples

    path = sorted(Path(two_backends["webdataset"], "samples").glob("*.jsonl"))[0]
    row = json.loads(path.read_bytes().splitlines()[0])
    bad = json.dumps({**row, "key": "0123abcd\n4567cdef"}).encode() + b"\n"
    with pytest.raises(CacheError, match=r"x:1: bad samples row"):
        parse_samples(bad, "x")
