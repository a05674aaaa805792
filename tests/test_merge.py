"""merge.py: merging caches (CLI and API)."""

from __future__ import annotations

import numpy as np
import pytest
from sharing_helpers import cli

import mmcache
from mmcache.cache import open_cache, verify_cache
from mmcache.errors import CacheError, FingerprintMismatch
from mmcache.sharing import merge_caches

pytest_plugins = ["sharing_fixtures"]  # caches made once per session, an http.server per file


def test_merge_is_a_deduplicated_union_that_verifies(world, tmp_path):
    out = tmp_path / "c"
    res = cli("merge", world / "a", world / "b", "--out", out)
    assert res.exit_code == 0, res.output
    assert "5 samples (4 ok, 1 failed), 1 duplicate row(s) dropped" in " ".join(res.output.split())
    res = cli("verify", out)
    assert res.exit_code == 0, res.output
    c, a, b = open_cache(out), open_cache(world / "a"), open_cache(world / "b")
    rows = {r["source"]: r for r in c.samples()}
    assert sorted(rows) == ["broken.mp4", "forest.mp4", "ocean.mp4", "silent.mp4", "sunrise.mp4"]
    assert rows["ocean.mp4"]["aliases"] == ["sea.mp4"]  # b's name for the same content
    assert rows["broken.mp4"]["status"] == "failed"
    assert sorted(c.fields) == ["logmel", "mfcc"] and c.shards == ["000000", "000001", "000002"]
    assert "stats" not in c.fields["mfcc"] and (out / "manifest.json").is_file()
    for name in c.fields:  # every sample's features are the input's, byte for byte
        merged = c.load_field(name)
        for key, feats, present in zip(merged.keys, merged.feats, merged.present, strict=True):
            src = a if key in {r["key"] for r in a.samples()} else b
            ref = src.load_field(name, [key])
            assert present == ref.present[0] and np.array_equal(feats, ref.feats[0])
    assert c.fields["logmel"]["fingerprint"] == a.fields["logmel"]["fingerprint"]
    # merging into an existing cache is refused; the same inputs again give the same manifest
    with pytest.raises(mmcache.errors.InputError, match="already holds a cache"):
        merge_caches([world / "a"], out)
    again = merge_caches([world / "a", world / "b"], tmp_path / "c2")
    assert (again.copied, again.rewritten) == (4, 2)  # b's shard loses the duplicate ocean in both fields
    assert (out / "manifest.json").read_bytes() == (tmp_path / "c2" / "manifest.json").read_bytes()


def test_merge_refuses_mismatched_fingerprints_naming_the_key(world, tmp_path):
    with pytest.raises(FingerprintMismatch, match=r"options\.fps \(2 vs 4\)"):
        merge_caches([world / "a", world / "fps4"], tmp_path / "c")
    res = cli("merge", world / "a", world / "fps4", "--out", tmp_path / "c")
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "options.fps" in res.output and "logmel" in res.output
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_partial_fields_need_allow_partial_and_are_dropped(world, tmp_path):
    with pytest.raises(CacheError, match="field 'logmel' is in .* but not in .*mfcc_only.*--allow-partial"):
        merge_caches([world / "a", world / "mfcc_only"], tmp_path / "c")
    res = cli("merge", world / "a", world / "mfcc_only", "--out", tmp_path / "c", "--allow-partial")
    assert res.exit_code == 0, res.output
    assert "dropped field: logmel" in res.output
    c = open_cache(tmp_path / "c")
    assert list(c.fields) == ["mfcc"] and len(c.samples()) == 5
    assert verify_cache(tmp_path / "c") == []
