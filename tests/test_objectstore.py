"""objectstore.py and transport.ObjectTransport: caches read from a real S3-compatible server on
loopback (moto's server, through s3fs), every byte checked; backends that are not installed, missing
buckets and missing credentials each one clear line; the fetch cache (fetched.py) keyed by sha256."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from sharing_helpers import cli, fields_equal

from mmcache.cache import open_cache, verify_cache
from mmcache.errors import CacheError
from mmcache.objectstore import ObjectStore
from mmcache.transport import ObjectTransport, configured, parse_storage_options, transport_for

pytest_plugins = ["sharing_fixtures", "s3_fixtures"]


def upload(s3, local, prefix: str) -> str:
    """The files of a cache directory copied as they are (no mmcache code), like `aws s3 sync`."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        s3.fs.pipe_file(f"{s3.bucket}/{prefix}/{path.relative_to(local)}", path.read_bytes())
    return s3.url(prefix)


@pytest.mark.parametrize("name", ["a", "b_h5"])
def test_a_cache_in_s3_reads_what_the_directory_holds(world, s3, name):
    url = upload(s3, world / name, "c")
    with configured(s3.options):
        remote = open_cache(url)
        assert isinstance(remote.transport, ObjectTransport) and remote.transport.remote
        fields_equal(remote, open_cache(world / name))
        assert verify_cache(url) == []
        assert verify_cache(url + "/manifest.json") == []  # the manifest's URL names the cache too
        remote.close()


def test_inspect_and_verify_on_the_command_line(world, s3):
    url = upload(s3, world / "a", "c")
    r = cli("inspect", url, "--json", *s3.flags)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["samples"] == json.loads(cli("inspect", world / "a", "--json").stdout)["samples"]
    r = cli("verify", url, *s3.flags)
    assert r.exit_code == 0 and f"ok: {url} verified" in r.stdout


def test_a_tampered_object_is_detected(world, s3):
    url = upload(s3, world / "a", "c")
    entry = json.loads((world / "a" / "manifest.json").read_text())["fields"]["logmel"]["files"]["000000"]
    key = f"{s3.bucket}/c/{entry['path']}"
    data = bytearray(s3.fs.cat_file(key))
    data[-600] ^= 0xFF  # same size, one byte changed
    s3.fs.pipe_file(key, bytes(data))
    with configured(s3.options):
        assert verify_cache(url) == [f"{entry['path']}: sha256 mismatch (content changed or corrupt)"]
        with pytest.raises(CacheError, match=rf"s3://{s3.bucket}/c/{entry['path']}: sha256 mismatch"):
            open_cache(url).load_field("logmel")
    r = cli("verify", url, *s3.flags)
    assert r.exit_code == 1 and "sha256 mismatch" in r.stderr


def test_a_replaced_longer_object_is_read_no_further_than_one_byte_past_its_size(world, s3):
    url = upload(s3, world / "a", "c")
    manifest = json.loads((world / "a" / "manifest.json").read_text())
    entry = manifest["fields"]["mfcc"]["files"]["000000"]
    s3.fs.pipe_file(f"{s3.bucket}/c/{entry['path']}", b"\0" * (8 << 20))  # 8 MiB where ~7 KiB is listed
    store = ObjectStore(url, s3.options)
    assert len(store.fetch(entry)) == entry["bytes"] + 1  # one ranged request: the rest never moves
    with configured(s3.options), pytest.raises(CacheError, match=rf"{entry['bytes'] + 1} bytes, manifest says"):
        open_cache(url).load_field("mfcc")


def test_a_missing_object_is_named(world, s3):
    url = upload(s3, world / "a", "c")
    s3.fs.rm(f"{s3.bucket}/c/mfcc/000001.tar")
    with configured(s3.options):
        assert verify_cache(url) == ["mfcc/000001.tar: missing"]


def test_prefetched_files_are_the_files(world, s3):
    url = upload(s3, world / "a", "c")
    manifest = json.loads((world / "a" / "manifest.json").read_text())
    entries = [f for field in manifest["fields"].values() for f in field["files"].values()]
    store = ObjectStore(url, s3.options)
    for e in entries:
        store.prefetch(e)
    assert 0 < len(store._pending) <= len(entries)
    for e in entries:
        assert store.fetch(e) == (world / "a" / e["path"]).read_bytes()
    assert store._pending == {}
    store.close()


def test_no_bucket_no_credentials_and_no_backend_are_one_line_each(world, s3, monkeypatch):
    r = cli("inspect", f"s3://no-such-bucket-{s3.bucket}/c", *s3.flags)
    assert r.exit_code == 1 and "The specified bucket does not exist" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output

    url = upload(s3, world / "a", "c")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = cli("verify", url, *s3.flags, "-S", "skip_instance_cache=true")
    assert r.exit_code == 1 and "Unable to locate credentials" in r.stderr and "--storage-option" in r.stderr
    assert r.stderr.count("\n") == 1

    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(CacheError, match=r"^gs://b/c: gs:// needs gcsfs: pip install 'mmcache\[gcs\]'$"):
            transport_for("gs://b/c")
    with pytest.raises(CacheError, match="unsupported URL scheme 'bogus'"):
        transport_for("bogus://b/c")


def test_storage_option_values_are_never_printed(s3):
    r = cli("inspect", f"s3://no-such-bucket-{s3.bucket}/c", *s3.flags, "-S", "secret=TOP-SECRET-VALUE")
    assert r.exit_code == 1 and "TOP-SECRET-VALUE" not in r.output
    r = cli("inspect", s3.url("c"), *s3.flags, "-S", "no_such_option=TOP-SECRET-VALUE")
    assert r.exit_code == 1 and "TOP-SECRET-VALUE" not in r.output and r.stderr.count("\n") == 1


def test_storage_options_parse_json_values_and_dotted_groups():
    got = parse_storage_options(
        ["anon=true", "endpoint_url=http://h:9000", "client_kwargs.region_name=eu-west-1", "max=3", "x=a=b"]
    )
    assert got == {
        "anon": True,
        "endpoint_url": "http://h:9000",
        "client_kwargs": {"region_name": "eu-west-1"},
        "max": 3,
        "x": "a=b",
    }
    with pytest.raises(CacheError, match="expected key=value"):
        parse_storage_options(["anon"])
    with pytest.raises(CacheError, match="both as a value and as a group"):
        parse_storage_options(["a=1", "a.b=2"])


def test_the_fetch_cache_serves_matching_copies_and_never_stale_ones(world, s3, tmp_path):
    url = upload(s3, world / "a", "c")
    kept = tmp_path / "fetched"
    with configured(s3.options, cache_dir=kept):
        first = open_cache(url)
        for name in first.fields:
            first.load_field(name)
    copies = sorted(p for p in kept.rglob("*") if p.is_file())
    manifest = json.loads((world / "a" / "manifest.json").read_text())
    listed = [e for e in manifest["shards"].values()] + [
        f for field in manifest["fields"].values() for f in field["files"].values()
    ]
    assert {p.parent.name + p.name for p in copies} == {e["sha256"] for e in listed}

    s3.fs.rm(f"{s3.bucket}/c/logmel", recursive=True)  # gone remotely: read from the kept copies
    with configured(s3.options, cache_dir=kept):
        again = open_cache(url)
        fields_equal(again, first)
        assert verify_cache(url) == ["logmel/000000.tar: missing", "logmel/000001.tar: missing"]  # never the copies

    upload(s3, world / "a", "c")
    good = {p: p.read_bytes() for p in copies}
    for p in copies:  # damaged on this disk, same size: dropped when its sha256 differs, fetched again
        p.write_bytes(bytes([good[p][0] ^ 0xFF]) + good[p][1:])
    with configured(s3.options, cache_dir=kept):
        fields_equal(open_cache(url), first)
    assert {p: p.read_bytes() for p in copies} == good


def test_a_changed_remote_file_is_never_served_from_an_old_copy(world, s3, tmp_path):
    kept = tmp_path / "fetched"
    url = upload(s3, world / "a", "c")
    with configured(s3.options, cache_dir=kept):
        assert sorted(open_cache(url).ok_keys())
    upload(s3, world / "b", "c")  # the same URL now holds another cache (other files, new digests)
    s3.fs.rm(f"{s3.bucket}/c/logmel/000001.tar")  # b has one shard less... and a's file is gone
    s3.fs.rm(f"{s3.bucket}/c/mfcc/000001.tar")
    s3.fs.rm(f"{s3.bucket}/c/samples/000001.jsonl")
    with configured(s3.options, cache_dir=kept):
        fields_equal(open_cache(url), open_cache(world / "b"))


def test_the_environment_names_a_default_fetch_cache(world, s3, tmp_path, monkeypatch):
    url = upload(s3, world / "b", "c")
    monkeypatch.setenv("MMCACHE_CACHE_DIR", str(tmp_path / "env-fetched"))
    with configured(s3.options):
        open_cache(url).load_field("logmel")
    assert any(p.is_file() for p in (tmp_path / "env-fetched").rglob("*"))


def test_a_cache_served_by_a_directory_url_is_read_by_fsspec_too(world, tmp_path):
    local = tmp_path / "copy"
    shutil.copytree(world / "b", local)
    t = ObjectTransport(f"file://{local}")
    assert t.label("manifest.json") == f"{local}/manifest.json"


def test_an_hdf5_shard_from_s3_is_read_in_memory_without_a_temp_file(world, s3, tmp_path, monkeypatch):
    import tempfile

    url = upload(s3, world / "b_h5", "c")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with configured(s3.options):
        fields_equal(open_cache(url), open_cache(world / "b_h5"))
        assert verify_cache(url) == []
    assert list(tmp.iterdir()) == []


def test_open_cache_takes_storage_options_from_python(world, s3):
    url = upload(s3, world / "b", "c")
    fields_equal(open_cache(url, storage_options=s3.options), open_cache(world / "b"))
    assert verify_cache(url, storage_options=s3.options) == []


def test_stats_and_merge_read_from_s3(world, s3, tmp_path):
    url = upload(s3, world / "b", "c")
    r = cli("stats", url, "--json", *s3.flags)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(cli("stats", world / "b", "--json", "--no-record").stdout)
    r = cli("merge", url, world / "a", "--out", tmp_path / "m", *s3.flags)
    assert r.exit_code == 0, r.output
    assert verify_cache(tmp_path / "m") == []


def test_hub_and_azure_urls_map_to_their_backends():
    hf = transport_for("hf://datasets/org/name/cache")
    assert type(hf.store.fs).__name__ == "HfFileSystem"  # huggingface_hub: no request until a read
    assert hf.label("manifest.json") == "hf://datasets/org/name/cache/manifest.json"
    if importlib.util.find_spec("adlfs") is None:
        with pytest.raises(CacheError, match=r"az:// needs adlfs: pip install 'mmcache\[azure\]'"):
            transport_for("az://container/cache")
