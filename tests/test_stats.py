"""stats.py: out-of-core feature statistics."""

from __future__ import annotations

import json
import shutil

import numpy as np
from sharing_helpers import FIELDS, cli

import mmcache
from mmcache.cache import open_cache, verify_cache
from mmcache.sharing import fresh_stats
from mmcache.synth import CLASSES, make_clip

pytest_plugins = ["sharing_fixtures"]  # caches made once per session, an http.server per file


def test_stats_are_float64_mean_std_of_every_step_and_recorded(world, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(world / "a", root)
    res = cli("stats", root)
    assert res.exit_code == 0, res.output
    manifest = json.loads((root / "manifest.json").read_text())
    cache = open_cache(root)
    for name in ("logmel", "mfcc"):
        x = np.concatenate([f for f in cache.load_field(name).feats if len(f)]).astype(np.float64)
        st = manifest["fields"][name]["stats"]
        assert st["steps"] == len(x) == sum(e["steps"] for e in manifest["fields"][name]["files"].values())
        np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(st["std"], x.std(0), rtol=1e-12, atol=1e-12)
        assert fresh_stats(cache.fields[name]) == st
    assert verify_cache(root) == [] and cli("stats", root, "-f", "nope").exit_code == 1
    # one field, printed only: the manifest is untouched
    before = (root / "manifest.json").read_bytes()
    res = cli("stats", root, "--field", "mfcc", "--no-record", "--json")
    assert res.exit_code == 0 and list(json.loads(res.stdout)) == ["mfcc"]
    assert (root / "manifest.json").read_bytes() == before
    # new shards make recorded stats stale (readers check the files they describe)
    make_clip(tmp_path / "more" / "forest.mp4", duration=1.0, style=CLASSES[2])
    mmcache.extract([tmp_path / "more"], FIELDS, root)
    assert fresh_stats(open_cache(root).fields["mfcc"]) is None
