"""transport.py: where a cache's bytes come from (a directory, http(s)://, a pipe: command), each read
checked against the size and sha256 a manifest entry lists. Real files, a loopback http.server (http.server's
own handler, or one that misbehaves), real commands."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shlex
import shutil
from pathlib import Path

import pytest
from http_helpers import serve
from sharing_helpers import cli, fields_equal

from mmcache.cache import open_cache, verify_cache
from mmcache.errors import CacheError
from mmcache.sharing import compute_stats
from mmcache.store.files import MissingFile
from mmcache.transport import (
    HashingReader,
    HttpTransport,
    LocalTransport,
    PipeTransport,
    check_digest,
    transport_for,
)

pytest_plugins = ["sharing_fixtures"]  # caches made once per session, an http.server per file

DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: more than one read of a small buffer


def entry_of(rel: str, data: bytes) -> dict:
    """A manifest entry listing `data` at `rel`."""
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def files(tmp_path) -> Path:
    """A directory holding DATA at sub/a.bin, and an empty file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(DATA)
    (tmp_path / "empty.bin").write_bytes(b"")
    return tmp_path


# -- check_digest -------------------------------------------------------------------------------------


def test_check_digest_names_a_size_or_content_difference():
    entry = entry_of("x.bin", DATA)
    check_digest(entry, len(DATA), entry["sha256"], "L")  # the listed size and digest: no error
    with pytest.raises(CacheError, match=r"^L: 10243 bytes, manifest says 10244 \(truncated or replaced\)"):
        check_digest(entry, len(DATA) - 1, entry["sha256"], "L")
    with pytest.raises(CacheError, match=r"^L: sha256 mismatch"):
        check_digest(entry, len(DATA), hashlib.sha256(b"other").hexdigest(), "L")


# -- which transport ----------------------------------------------------------------------------------


def test_transport_for_picks_by_location(tmp_path):
    assert isinstance(transport_for(tmp_path), LocalTransport) and transport_for(tmp_path).root == tmp_path
    assert isinstance(transport_for(str(tmp_path)), LocalTransport)
    local = transport_for(f"file://{tmp_path}/with%20space")
    assert isinstance(local, LocalTransport) and local.root == tmp_path / "with space"
    http = transport_for("http://host:8/c/manifest.json?sig=a,b")
    assert isinstance(http, HttpTransport) and http.base == "http://host:8/c/?sig=a,b"
    assert http.url("f 1/000000.tar") == "http://host:8/c/f%201/000000.tar?sig=a,b"
    assert HttpTransport("https://host/c").base == "https://host/c/"
    pipe = transport_for("pipe:cat '/data dir/{path}'")
    assert isinstance(pipe, PipeTransport) and pipe.command("a/b.tar") == ["cat", "/data dir/a/b.tar"]
    with pytest.raises(CacheError, match="unsupported URL scheme 'gopher'"):
        transport_for("gopher://host/c/")
    with pytest.raises(CacheError, match=r"^ftp://host\.invalid/c/: "):  # other fsspec protocols: one line
        transport_for("ftp://host.invalid/c/")
    with pytest.raises(CacheError, match="no host"):
        HttpTransport("http:///c/")
    with pytest.raises(CacheError, match="without a command"):
        PipeTransport("   ")
    with pytest.raises(CacheError, match="cannot parse"):
        PipeTransport("cat '{path}")


# -- LocalTransport -----------------------------------------------------------------------------------


def test_local_reads_checked_and_unchecked(files):
    t = LocalTransport(files)
    entry = entry_of("sub/a.bin", DATA)
    assert not t.remote and t.size(entry) == len(DATA) and t.label("sub/a.bin") == str(files / "sub" / "a.bin")
    checked = t.read(entry)
    assert bytes(checked) == DATA
    checked[0] ^= 1  # a writable buffer of its own: the file never changes
    assert (files / "sub" / "a.bin").read_bytes() == DATA
    assert bytes(t.read(entry, check=False, mapped=True)) == DATA
    assert bytes(t.read(entry_of("empty.bin", b""))) == b""
    with t.local_file(entry) as path:
        assert path == files / "sub" / "a.bin"  # the file itself, hashed first
    with t.hashed_copy(entry) as (path, size, sha):
        assert (path, size, sha) == (files / "sub" / "a.bin", len(DATA), entry["sha256"])
    # the same bytes listed with another digest: a checked read refuses them, an unchecked one does not hash
    altered = {**entry, "sha256": hashlib.sha256(b"x").hexdigest()}
    with pytest.raises(CacheError, match=r"a\.bin: sha256 mismatch"):
        t.read(altered)
    with pytest.raises(CacheError, match="sha256 mismatch"), t.local_file(altered):
        pass
    assert bytes(t.read(altered, check=False)) == DATA
    with t.local_file(altered, check=False) as path:
        assert path.read_bytes() == DATA


def test_local_reads_compare_the_size_before_reading(files):
    t = LocalTransport(files)
    for listed in (len(DATA) - 1, len(DATA) + 1):  # a file longer or shorter than listed: never read
        entry = {**entry_of("sub/a.bin", DATA), "bytes": listed}
        for read in (
            lambda e=entry: t.read(e, check=False),
            lambda e=entry: t.read(e, check=False, mapped=True),
            lambda e=entry: t.stream(e).__enter__(),
            lambda e=entry: t.checked(e),
        ):
            with pytest.raises(CacheError, match=f"{len(DATA)} bytes, manifest says {listed}"):
                read()
    with pytest.raises(MissingFile, match="missing"):
        t.read(entry_of("sub/nope.bin", DATA))
    assert t.manifest() is None  # no manifest.json here
    t.prefetch(entry_of("sub/nope.bin", DATA))  # a hint: nothing to say about a missing file
    (files / "link.bin").symlink_to(files / "sub" / "a.bin")
    with pytest.raises(CacheError, match="symlink"):
        t.read(entry_of("link.bin", DATA))
    with pytest.raises(CacheError, match="not a path inside the cache"):
        t.read(entry_of("../outside.bin", DATA))


def test_local_stream_hashes_and_stops_at_the_listed_size(files):
    t = LocalTransport(files)
    entry = entry_of("sub/a.bin", DATA)
    with t.stream(entry) as reader:
        parts = [reader.read(1000) for _ in range(11)]
        assert reader.read(1000) == b""
    assert b"".join(parts) == DATA and reader.size == len(DATA) and reader.hexdigest() == entry["sha256"]
    reader.check(entry)
    dest = files / "copy.bin"
    t.copy_to(entry, dest)
    assert dest.read_bytes() == DATA
    # the limit itself: a source with more bytes than listed stops at the first byte too many
    limited = HashingReader(io.BytesIO(DATA), "L", limit=100)
    with pytest.raises(CacheError, match="L: more than the 100 bytes the manifest says"):
        limited.read()
    assert limited.size == 101
    exact = HashingReader(io.BytesIO(DATA[:100]), "L", limit=100)
    assert exact.read(10**9) == DATA[:100] and exact.read(10**9) == b""


# -- HttpTransport ------------------------------------------------------------------------------------


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """/cut: promises len(DATA) bytes, sends half and hangs up; /long: more than listed; /fail: HTTP 500;
    anything else: 404. Counts requests per path."""

    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        Misbehaving.hits[self.path] = Misbehaving.hits.get(self.path, 0) + 1
        if self.path == "/c/cut.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[: len(DATA) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/c/long.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA) + 10))
            self.end_headers()
            self.wfile.write(DATA + b"0123456789")
        elif self.path == "/c/fail.bin":
            self.send_error(500, "broken")
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


def test_http_reads_what_the_server_sends_and_checks_it(files):
    with serve(files) as base:
        t = HttpTransport(f"{base}/")
        entry = entry_of("sub/a.bin", DATA)
        assert t.remote and t.size(entry) is None
        assert bytes(t.read(entry)) == DATA
        with t.local_file(entry) as path:
            assert path.read_bytes() == DATA and path != files / "sub" / "a.bin"  # a checked temp copy
        assert not path.exists()
        with pytest.raises(CacheError, match=r"sub/a\.bin: sha256 mismatch"):
            t.read({**entry, "sha256": "0" * 64})
        with pytest.raises(CacheError, match="10244 bytes, manifest says 20000"):
            t.read({**entry, "bytes": 20000})
        with pytest.raises(MissingFile, match=r"nope\.bin: missing \(HTTP 404\)"):
            t.read(entry_of("sub/nope.bin", DATA))
        assert t.manifest() is None  # no manifest.json: a 404 is "no cache here"
        (files / "manifest.json").write_text("{}")
        assert t.manifest() == b"{}"


def test_http_refuses_a_cut_body_a_long_body_and_server_errors():
    Misbehaving.hits.clear()
    with serve(handler=Misbehaving) as base:
        t = HttpTransport(f"{base}/c/")
        cut = r"cut\.bin: connection closed after 5122 of 10244 bytes"  # Content-Length promised more
        with pytest.raises(CacheError, match=cut):
            t.read(entry_of("cut.bin", DATA))
        with pytest.raises(CacheError, match=cut), t.stream(entry_of("cut.bin", DATA)) as reader:
            reader.drain()
        with pytest.raises(CacheError, match=r"long\.bin: more than the 10244 bytes"):
            t.read(entry_of("long.bin", DATA))
        with pytest.raises(CacheError, match=r"fail\.bin: HTTP 500"):
            t.read(entry_of("fail.bin", DATA))
        assert Misbehaving.hits["/c/fail.bin"] == 3  # 5xx answers are retried before giving up
        with pytest.raises(MissingFile, match="HTTP 404"):
            t.read(entry_of("gone.bin", DATA))
        assert Misbehaving.hits["/c/gone.bin"] == 1  # a 404 is an answer, never retried


# -- PipeTransport ------------------------------------------------------------------------------------


def test_pipe_runs_the_command_per_file_and_reports_its_failure(files):
    t = PipeTransport(f"cat {shlex.quote(str(files))}/{{path}}")
    entry = entry_of("sub/a.bin", DATA)
    assert t.remote and t.label("sub/a.bin") == f"pipe:cat {files}/sub/a.bin"
    assert bytes(t.read(entry)) == DATA
    with pytest.raises(CacheError, match="sha256 mismatch"):
        t.read({**entry, "sha256": "0" * 64})
    with pytest.raises(CacheError, match=r"command exited with status 1: cat: .*nope\.bin"):
        t.read(entry_of("sub/nope.bin", DATA))
    with pytest.raises(CacheError, match="cannot run 'no-such-program-here'"):
        PipeTransport("no-such-program-here {path}").read(entry)
    with pytest.raises(CacheError, match=r"exited with status 3"):
        PipeTransport("sh -c 'cat \"$0\"; exit 3' " + f"{shlex.quote(str(files))}/{{path}}").read(entry)


def test_pipe_stops_an_endless_command_at_the_listed_size():
    t = PipeTransport("yes {path}")  # never ends by itself
    with pytest.raises(CacheError, match="more than the 1000 bytes"):
        t.read({"path": "x", "bytes": 1000, "sha256": "0" * 64})


# -- whole caches over http:// and pipe: ------------------------------------------------------------


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
    with pytest.raises(CacheError, match="unsupported URL scheme 'gopher'"):
        open_cache("gopher://bucket/cache/")
