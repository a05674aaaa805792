"""Sharing caches: merge, diff, out-of-core stats, and reading caches over http:// and pipe: URLs."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

import mmcache
from mmcache.cache import open_cache, verify_cache
from mmcache.cli import app
from mmcache.errors import CacheError, FingerprintMismatch
from mmcache.sharing import compute_stats, diff_caches, fresh_stats, merge_caches
from mmcache.synth import CLASSES, make_clip, make_labelled_set

FIELDS = ["logmel:fps=2", "mfcc:fps=2"]
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Caches made from short clips: a (3 ok + 1 failed, 2 shards), b (ocean again as sea.mp4 +
    forest), fps4 (logmel:fps=4 under the same name), mfcc_only, and an HDF5 copy of b."""
    d = tmp_path_factory.mktemp("sharing")
    sunrise, ocean, forest = CLASSES
    for name, files in {
        "va": [("sunrise.mp4", sunrise, True), ("ocean.mp4", ocean, True), ("silent.mp4", sunrise, False)],
        "vb": [("sea.mp4", ocean, True), ("forest.mp4", forest, True)],
    }.items():
        for fname, style, audio in files:
            make_clip(d / name / fname, duration=1.0, style=style, audio=audio)
    (d / "va" / "broken.mp4").write_text("not a video\n")
    shutil.copy(d / "va" / "ocean.mp4", d / "vb" / "sea.mp4")  # the same content under another name
    mmcache.extract([d / "va"], FIELDS, d / "a", shard_size=2)
    mmcache.extract([d / "vb"], FIELDS, d / "b", shard_size=2)
    mmcache.extract([d / "vb"], FIELDS, d / "b_h5", shard_size=1, backend="hdf5")
    mmcache.extract([d / "vb" / "forest.mp4"], ["logmel:fps=4"], d / "fps4")
    mmcache.extract([d / "vb" / "forest.mp4"], ["mfcc:fps=2"], d / "mfcc_only")
    return d


def fields_equal(x, y):
    """Same keys, features and timestamps for every field of two caches."""
    assert x.samples() == y.samples()
    for name in x.fields:
        fx, fy = x.load_field(name), y.load_field(name)
        assert fx.keys == fy.keys and fx.present.tolist() == fy.present.tolist()
        for a, b in zip(fx.feats + fx.ts, fy.feats + fy.ts, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


# -- merge ------------------------------------------------------------------------------------------


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


# -- diff -------------------------------------------------------------------------------------------


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


# -- stats ------------------------------------------------------------------------------------------


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


# -- remote: http:// and pipe: -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """`python -m http.server` on 127.0.0.1 serving copies of the caches; yields (base URL, dir)."""
    d = tmp_path_factory.mktemp("www")
    for name in ("a", "b_h5"):
        shutil.copytree(world / name, d / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/a/manifest.json", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("http.server did not start")
    yield base, d
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("name", ["a", "b_h5"])
def test_http_cache_reads_and_verifies_like_the_local_one(world, served, name):
    base, _ = served
    remote = open_cache(f"{base}/{name}/")
    fields_equal(remote, open_cache(world / name))
    assert open_cache(f"{base}/{name}/manifest.json").manifest == remote.manifest
    assert verify_cache(f"{base}/{name}") == []
    got = [(s["key"], s["mfcc"] is None) for s in remote.iter_samples(["mfcc"])]
    assert got == [(s["key"], s["mfcc"] is None) for s in open_cache(world / name).iter_samples(["mfcc"])]
    assert cli("verify", f"{base}/{name}/").exit_code == 0
    res = cli("inspect", f"{base}/{name}/", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["fields"]["mfcc"]["dim"] == 20


def test_http_verify_names_a_corrupt_or_missing_file(world, served):
    base, d = served
    shutil.copytree(world / "a", d / "bad")
    tar = d / "bad" / "mfcc" / "000001.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # inside the first member's array: still a readable tar
    tar.write_bytes(bytes(data))
    (d / "bad" / "logmel" / "000000.tar").unlink()
    problems = verify_cache(f"{base}/bad/")
    assert "mfcc/000001.tar: sha256 mismatch (content changed or corrupt)" in problems
    assert "logmel/000000.tar: missing" in problems and len(problems) == 2
    res = cli("verify", f"{base}/bad/")
    assert res.exit_code == 1 and "mfcc/000001.tar: sha256 mismatch" in res.output
    with pytest.raises(CacheError, match=r"mfcc/000001\.tar: sha256 mismatch"):  # plain reads check too
        open_cache(f"{base}/bad/").load_field("mfcc")
    with pytest.raises(CacheError, match="is not an mmcache cache"):
        open_cache(f"{base}/nowhere/")


def test_a_crafted_remote_manifest_cannot_point_outside_the_cache(world, served):
    base, d = served
    shutil.copytree(world / "a", d / "evil")
    m = json.loads((d / "evil" / "manifest.json").read_text())
    m["fields"]["mfcc"]["files"]["000000"]["path"] = "mfcc/../../a/mfcc/000000.tar"
    (d / "evil" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match="invalid manifest"):
        open_cache(f"{base}/evil/")


def test_pipe_url_runs_an_argument_list_per_file(world, tmp_path):
    root = world / "b_h5"
    url = f"pipe:cat {shlex.quote(str(root))}/{{path}}"
    fields_equal(open_cache(url), open_cache(root))
    assert verify_cache(url) == []
    res = cli("stats", url, "--json")  # remote: printed, not recorded
    assert res.exit_code == 0 and "not recorded" in res.stderr
    assert json.loads(res.stdout)["mfcc"]["steps"] == sum(
        e["steps"] for e in open_cache(root).fields["mfcc"]["files"].values()
    )
    assert compute_stats(url)["mfcc"]["mean"] == compute_stats(root)["mfcc"]["mean"]
    with pytest.raises(CacheError, match=r"needs a \{path\} placeholder"):
        open_cache(f"pipe:cat {root}/manifest.json")
    with pytest.raises(CacheError, match="command exited with status 1"):
        open_cache(f"pipe:cat {tmp_path}/nowhere/{{path}}")
    marker = tmp_path / "pwned"  # no shell: `;` and `touch` are just arguments to cat
    with pytest.raises(CacheError):
        open_cache(f"pipe:cat {root}/{{path}}; touch {marker}")
    assert not marker.exists()
    with pytest.raises(CacheError, match="unsupported URL scheme 's3'"):
        open_cache("s3://bucket/cache/")


# -- mmfit over http ---------------------------------------------------------------------------------


def test_mmfit_trains_over_http_with_cache_stats(served, tmp_path_factory):
    from mmfit.cli import app as mmfit_app
    from mmfit.config import build_config
    from mmfit.data import load_data

    base, d = served
    videos = make_labelled_set(tmp_path_factory.mktemp("lab") / "videos", per_class=3, duration=1.0)
    mmcache.extract([videos / "videos.csv"], FIELDS, d / "lab", shard_size=4)
    url = f"{base}/lab/"
    cfg = build_config(cache=url, out=str(d / "unused"))
    data = load_data(cfg.data)
    assert data.report["norm"] == "train" and len(data.keys) == 9
    assert cli("stats", d / "lab").exit_code == 0  # recorded where the cache lives, then read over http
    data = load_data(cfg.data)
    assert data.report["norm"] == "cache"
    st = open_cache(url).fields["mfcc"]["stats"]
    np.testing.assert_allclose(data.norm["mfcc"][0], st["mean"], rtol=1e-6)
    np.testing.assert_allclose(data.norm["mfcc"][1], np.array(st["std"]) + 1e-6, rtol=1e-6)
    run = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(
        mmfit_app, ["train", "--cache", url, "--epochs", "2", "--hidden", "8", "--batch-size", "4", "--out", str(run)]
    )
    assert res.exit_code == 0, res.output
    assert (run / "best.pt").is_file()
