"""publish.py (`mmcache push`, `mmcache pull`) against a real S3-compatible server on loopback (moto's
server through s3fs): files first and the manifest last, resumed pushes and pulls, merge's rules over an
existing cache, and training from s3:// straight after a push."""

from __future__ import annotations

import json
import shutil

import pytest
from sharing_helpers import cli, fields_equal
from typer.testing import CliRunner

from mmcache.cache import open_cache, verify_cache
from mmcache.errors import CacheError, FingerprintMismatch, InputError
from mmcache.publish import listed_files, pull, push
from mmcache.transport import configured

pytest_plugins = ["sharing_fixtures", "s3_fixtures", "mmfit_fixtures"]


def listed(cache_dir) -> list[str]:
    m = json.loads((cache_dir / "manifest.json").read_text())
    return sorted(
        [e["path"] for e in m["shards"].values()]
        + [f["path"] for field in m["fields"].values() for f in field["files"].values()]
    )


def keys(s3, prefix: str) -> list[str]:
    return sorted(p.split(f"{s3.bucket}/{prefix}/", 1)[1] for p in s3.fs.find(f"{s3.bucket}/{prefix}"))


def test_push_then_read_verify_and_pull(world, s3, tmp_path):
    with configured(s3.options):
        r = push(world / "a", s3.url("c"))
        assert (r.copied, r.skipped) == (len(listed(world / "a")), 0)
        assert keys(s3, "c") == sorted(listed(world / "a") + ["manifest.json"])  # listed files only: no .lock
        assert verify_cache(s3.url("c")) == []
        fields_equal(open_cache(s3.url("c")), open_cache(world / "a"))
        p = pull(s3.url("c"), tmp_path / "pulled")
    assert p.copied == len(listed(world / "a")) and verify_cache(tmp_path / "pulled") == []
    for rel in listed(world / "a") + ["manifest.json"]:
        assert (tmp_path / "pulled" / rel).read_bytes() == (world / "a" / rel).read_bytes()


def test_push_and_pull_on_the_command_line_show_bytes(world, s3, tmp_path):
    r = cli("push", world / "b_h5", s3.url("h5"), *s3.flags)
    assert r.exit_code == 0, r.output
    assert f"pushed {world / 'b_h5'} to {s3.url('h5')}: {len(listed(world / 'b_h5'))} file(s) uploaded" in r.stdout
    assert "push" in r.stderr and "kB" in r.stderr  # the progress bar counts bytes
    r = cli("push", world / "b_h5", s3.url("h5"), *s3.flags)
    assert r.exit_code == 0 and f"0 file(s) uploaded (0 B), {len(listed(world / 'b_h5'))} already there" in r.stdout
    assert "manifest unchanged" in r.stdout
    r = cli("pull", s3.url("h5"), tmp_path / "got", "--fields", "mfcc", *s3.flags)
    assert r.exit_code == 0, r.output
    got = open_cache(tmp_path / "got")
    assert list(got.fields) == ["mfcc"] and verify_cache(tmp_path / "got") == []
    assert got.load_field("mfcc").keys == open_cache(world / "b_h5").load_field("mfcc").keys
    r = cli("pull", s3.url("h5"), tmp_path / "x", "--fields", "mfc", *s3.flags)
    assert r.exit_code == 1 and "no field 'mfc'; available: logmel, mfcc" in r.stderr


def test_an_interrupted_push_leaves_no_manifest_and_resumes(world, s3, tmp_path):
    src = tmp_path / "a"
    shutil.copytree(world / "a", src)
    files = [e["path"] for e in listed_files(json.loads((src / "manifest.json").read_text()))]  # upload order
    last = src / files[-1]
    good = last.read_bytes()
    last.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # the last file to go does not match its manifest
    with configured(s3.options):
        with pytest.raises(CacheError, match=rf"{files[-1]}: sha256 mismatch"):
            push(src, s3.url("c"), jobs=1)
        assert "manifest.json" not in keys(s3, "c")  # no reader sees a cache yet
        assert set(keys(s3, "c")) == set(files[:-1])  # what was checked went up, the bad file did not
        last.write_bytes(good)
        r = push(src, s3.url("c"))
        assert (r.copied, r.skipped) == (1, len(files) - 1)  # resumed: matching files are not sent again
        assert verify_cache(s3.url("c")) == []


def test_a_push_replaces_a_remote_file_that_does_not_match(world, s3):
    with configured(s3.options):
        push(world / "a", s3.url("c"))
        entry = json.loads((world / "a" / "manifest.json").read_text())["fields"]["mfcc"]["files"]["000001"]
        s3.fs.pipe_file(f"{s3.bucket}/c/{entry['path']}", b"x" * entry["bytes"])  # same size, other bytes
        assert verify_cache(s3.url("c")) == [f"{entry['path']}: sha256 mismatch (content changed or corrupt)"]
        r = push(world / "a", s3.url("c"))
        assert r.copied == 1 and verify_cache(s3.url("c")) == []


def test_pushing_over_a_cache_follows_merge_rules(world, s3, tmp_path):
    with configured(s3.options):
        push(world / "a", s3.url("c"))
        before = s3.fs.cat_file(f"{s3.bucket}/c/manifest.json")
        with pytest.raises(FingerprintMismatch, match=r"field 'logmel': fingerprint differs .*options\.fps"):
            push(world / "fps4", s3.url("c"))
        with pytest.raises(CacheError, match="has shard\\(s\\) 000001 that .* lacks: pushing would unlist them"):
            push(world / "b", s3.url("c"))
        h5 = world / "b_h5"
        with pytest.raises(CacheError, match="holds a webdataset cache and .* is hdf5"):
            push(h5, s3.url("c"))
        assert s3.fs.cat_file(f"{s3.bucket}/c/manifest.json") == before  # refused: nothing changed

        pull(s3.url("c"), tmp_path / "logmel_only", fields=["logmel"])
        r = push(tmp_path / "logmel_only", s3.url("c"))  # the destination's mfcc covers the same samples: kept
        assert r.kept_fields == ["mfcc"] and not r.manifest_written and r.copied == 0
        assert s3.fs.cat_file(f"{s3.bucket}/c/manifest.json") == before

        push(tmp_path / "logmel_only", s3.url("d"))
        r = push(world / "a", s3.url("d"))  # a new field is added beside the existing one
        assert r.fields == ["logmel", "mfcc"] and r.manifest_written
        fields_equal(open_cache(s3.url("d")), open_cache(world / "a"))


def test_a_pull_resumes_and_repairs_and_refuses_another_cache(world, s3, tmp_path):
    with configured(s3.options):
        push(world / "a", s3.url("c"))
        out = tmp_path / "out"
        pull(s3.url("c"), out)
        files = listed(out)
        (out / files[0]).unlink()
        (out / files[1]).write_bytes(b"damaged")
        r = pull(s3.url("c"), out)
        assert (r.copied, r.skipped) == (2, len(files) - 2) and not r.manifest_written
        assert verify_cache(out) == []
        with pytest.raises(InputError, match="already holds another cache"):
            pull(s3.url("c"), out, fields=["mfcc"])
        with pytest.raises(InputError, match="pull writes to a local directory"):
            pull(s3.url("c"), s3.url("elsewhere"))


def test_pull_from_an_http_server_too(served, world, tmp_path):
    base, _ = served
    pull(f"{base}/b_h5/", tmp_path / "got")
    assert verify_cache(tmp_path / "got") == []
    fields_equal(open_cache(tmp_path / "got"), open_cache(world / "b_h5"))


def test_push_refuses_destinations_it_cannot_write(world):
    with pytest.raises(InputError, match="push needs a writable location"):
        push(world / "a", "http://127.0.0.1:9/c")
    with pytest.raises(InputError, match="push needs a writable location"):
        push(world / "a", "pipe:cat {path}")


def test_push_then_train_from_s3(labelled, s3, tmp_path):
    """Done means: `mmcache push CACHE s3://bucket/c` then `mmfit train --cache s3://bucket/c` works."""
    from mmfit.cli import app as mmfit_app

    r = cli("push", labelled / "cache", s3.url("c"), *s3.flags)
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = CliRunner().invoke(
        mmfit_app,
        ["train", "--cache", s3.url("c"), *s3.flags, "--epochs", "2", "--batch-size", "8", "--out", str(run)],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((run / "report.json").read_text())
    assert summary["best_epoch"] >= 0 and (run / "best.pt").is_file()
    config = (run / "config.yaml").read_text()
    assert s3.endpoint not in config and "storage_options" not in config  # machine settings are not stored
    r = CliRunner().invoke(
        mmfit_app, ["eval", "--checkpoint", str(run / "best.pt"), "--cache", s3.url("c"), *s3.flags, "--json"]
    )
    assert r.exit_code == 0, r.output
    assert "accuracy" in json.loads(r.stdout)
