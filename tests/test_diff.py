"""diff.py: comparing two caches."""

from __future__ import annotations

import json

from sharing_helpers import cli

from mmcache.sharing import diff_caches, merge_caches

pytest_plugins = ["sharing_fixtures"]  # caches made once per session, an http.server per file


def test_diff_lists_fields_keys_and_samples(world, tmp_path):
    res = cli("diff", world / "a", world / "a")
    assert res.exit_code == 0 and "same fields and samples" in res.output
    res = cli("diff", world / "a", world / "b", "--json")
    assert res.exit_code == 1
    d = json.loads(res.stdout)
    assert d["identical"] is False and d["fields"]["same"] == ["logmel", "mfcc"] and not d["fields"]["differ"]
    assert [r["source"] for r in d["samples"]["only_a"]] == ["broken.mp4", "silent.mp4", "sunrise.mp4"]
    assert [r["source"] for r in d["samples"]["only_b"]] == ["forest.mp4"] and d["samples"]["common"] == 1
    d = diff_caches(world / "a", world / "fps4")
    assert d["fields"]["only_a"] == ["mfcc"] and d["fields"]["differ"]["logmel"] == [
        {"key": "options.fps", "a": 2, "b": 4},  # what the user set comes first
        {"key": "input.fps", "a": 2, "b": 4},
    ]
    res = cli("diff", world / "a", world / "fps4")
    text = " ".join(res.output.split())
    assert res.exit_code == 1
    assert (
        "fields only in" in text
        and "mfcc" in text
        and "field logmel: fingerprint differs at options.fps (2 vs 4)" in text
    )
    assert "4 sample(s) only in" in text and "sunrise.mp4" in text
    merged = tmp_path / "m"
    merge_caches([world / "a", world / "b"], merged)
    d = diff_caches(world / "a", merged)  # the union holds a plus forest
    assert not d["samples"]["only_a"] and [r["source"] for r in d["samples"]["only_b"]] == ["forest.mp4"]
    assert cli("diff", world / "a", tmp_path / "nowhere").exit_code == 2
