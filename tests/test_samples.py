"""mmfit/samples.py: a run's ok samples as columns (keys, caches, shards, ids, sources read lazily), and the
label sheet join on them (labels.py) by key, id, file name and stem."""

from __future__ import annotations

import numpy as np
import pytest

from mmfit.labels import from_csv
from mmfit.samples import SampleRows, ok_samples


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory, clips):
    """The conftest clips in two caches: one of every clip (shards of 2), one of the first clip only."""
    import shutil

    import mmcache

    d = tmp_path_factory.mktemp("samples")
    one = d / "one"
    one.mkdir()
    first = sorted(clips.iterdir())[0]
    shutil.copy(first, one / first.name)
    made = []
    for name, inputs in (("all", clips), ("first", one)):
        mmcache.extract([inputs], ["logmel:fps=2,window=0.5"], d / name, shard_size=2)
        made.append(d / name)
    return made


def test_ok_samples_keeps_a_key_once_and_reads_sources_only_when_asked(two_caches):
    from mmcache import open_cache

    big, small = (open_cache(p) for p in two_caches)
    rows = ok_samples([small, big])
    expected = [r for r in big.samples("ok")]
    assert len(rows) == len(expected)  # the first clip is in both caches: once, from the first cache
    assert rows.cache.tolist() == [0] + [1] * (len(expected) - 1)
    assert rows._sources is None  # not read yet
    by_key = {r["key"]: r for r in expected}
    for i in range(len(rows)):
        r = by_key[rows.key(i)]
        assert rows.source(i) == r["source"] and rows.ids[i].decode() == (r.get("id") or "")
    assert rows._sources is None  # one source at a time: still not every source
    assert [s.decode() for s in rows.sources.tolist()] == [by_key[rows.key(i)]["source"] for i in range(len(rows))]
    groups = rows.groups()
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(rows)))
    for g in groups:  # one (cache, shard) each
        assert len(set(zip(rows.cache[g].tolist(), rows.shard[g].tolist(), strict=True))) == 1
    sub = rows.take(np.array([2, 0]))
    assert [sub.key(0), sub.key(1)] == [rows.key(2), rows.key(0)] and sub.sources.tolist() == rows.sources[
        [2, 0]
    ].tolist()


def _rows(*specs) -> SampleRows:
    return SampleRows.from_dicts(
        [
            {"key": f"{i:024x}", "id": ident, "source": src, "aliases": aliases}
            for i, (ident, src, aliases) in enumerate(specs)
        ]
    )


def test_sheet_join_by_key_id_file_name_stem_and_alias(tmp_path):
    samples = _rows(
        ("a", "/v/alpha.mp4", []),
        ("", "/v/beta.mp4", ["/old/gamma.mkv"]),
        ("dup", "/v/x.mp4", []),
        ("dup", "/w/x.mp4", []),  # the same id twice: the last sample wins; the same stem: the first
    )
    sheet = tmp_path / "l.csv"
    sheet.write_text(
        "id,label\n"
        f"{2:024x},k\n"  # a key
        "a,i\n"  # an id
        "beta.mp4,f\n"  # a file name
        "gamma,f\n"  # an alias's stem: a sample named twice with one label is fine
        "dup,d\n"  # the last sample with that id
        "nothing,n\n"
    )
    table = from_csv(sheet, samples, ["label"])
    got = {samples.key(r): v.decode() for r, v in zip(table.rows.tolist(), table.values[0].tolist(), strict=True)}
    assert table.unknown == ["nothing"]
    assert got == {f"{2:024x}": "k", f"{0:024x}": "i", f"{1:024x}": "f", f"{3:024x}": "d"}
    stems = tmp_path / "s.csv"
    stems.write_text("id,label\nx,first\n/w/x.mp4,path\n")  # a stem two samples share: the first; a whole path
    table = from_csv(stems, samples, ["label"])
    assert table.rows.tolist() == [2, 3] and table.values[0].tolist() == [b"first", b"path"]
