"""Where a cache's bytes come from: a local directory, an http(s):// URL, or a `pipe:` command.

A *source* reads files by the relative paths of a validated manifest (`samples/NNNNNN.jsonl`,
`<field>/NNNNNN.(tar|h5)`, and `manifest.json` itself); no other path is ever formed, so a crafted
manifest cannot make a reader fetch anything outside the cache.

* `http://host/cache/` (or `.../cache/manifest.json`): files are fetched with urllib; tar shards
  are streamed into `iter_tar(fileobj=...)`, HDF5 shards (h5py needs random access) are downloaded
  to a temp file that is deleted after reading.
* `pipe:CMD ... {path} ...`: the command is split with `shlex.split` (never a shell) and run once
  per file with `{path}` replaced by the file's relative path in each argument, its stdout being
  the file, e.g. `pipe:aws s3 cp s3://bucket/cache/{path} -` or `pipe:ssh host cat /data/cache/{path}`.

Remote bytes are checked as they arrive against the size and sha256 the manifest records, so a cut
or altered transfer is an error, never silently fewer samples. Local reads keep the plain path
(verify checks them).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import __version__
from .errors import CacheError
from .store.atomic import sha256_file
from .store.files import MissingFile, check_size, checked_path, open_listed
from .store.hdf5 import iter_h5
from .store.manifest import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest, parse_samples
from .store.mapped import map_fd, prefetch, read_fd
from .store.tar import iter_tar, parse_tar

CHUNK = 1 << 20
HTTP_TIMEOUT = float(os.environ.get("MMCACHE_HTTP_TIMEOUT", "60"))  # seconds without data before giving up
HTTP_ATTEMPTS = 3  # connection errors and 5xx answers are retried before any byte is read

Record = tuple[str, str, tuple, tuple, str, bool]  # key, dtype, feats shape, ts shape, ts dtype, ts finite


Missing = MissingFile  # the file does not exist at the source (no such file, HTTP 404)


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and (location.startswith("pipe:") or "://" in location)


def source_for(location: str | os.PathLike) -> Source:
    """The source of a cache given as a directory, file:// or http(s):// URL, or pipe: command."""
    if not isinstance(location, str):
        return LocalSource(Path(location))
    if location.startswith("pipe:"):
        return PipeSource(location[len("pipe:") :])
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme in ("http", "https"):
        return HttpSource(location)
    if scheme == "file":
        return LocalSource(Path(urllib.parse.unquote(urllib.parse.urlparse(location).path)))
    if scheme:
        raise CacheError(
            f"{location}: unsupported URL scheme {scheme!r}; use a directory, http(s)://, or a pipe: "
            "command with {path}, e.g. 'pipe:aws s3 cp s3://bucket/cache/{path} -'"
        )
    return LocalSource(Path(location))


@dataclass
class Scan:
    """What verify learns from reading one listed file once."""

    size: int
    sha256: str
    data: bytes | None = None  # samples index bytes
    records: list[Record] | None = None  # field files whose size and hash match: one per sample
    error: str | None = None  # the field file could not be parsed


class Source:
    """Reads a cache's listed files by relative path. Subclasses implement `_open` and `label`."""

    remote = True
    location: str

    def prefetch(self, entry: dict) -> None:
        """Start fetching a file that will be read next (local files only)."""

    def label(self, rel: str) -> str:
        raise NotImplementedError

    def _open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    # -- reads used by Cache -----------------------------------------------------------------

    def manifest(self) -> dict | None:
        try:
            with self._open(MANIFEST) as f:
                data = HashingReader(f, self.label(MANIFEST), MAX_MANIFEST_BYTES).read()
        except Missing:
            return None
        return parse_manifest(data, self.label(MANIFEST))

    def fetch(self, entry: dict) -> bytes:
        """A whole listed file, checked against its manifest size and sha256."""
        rel = entry["path"]
        with self._open(rel) as f:
            reader = HashingReader(f, self.label(rel), entry["bytes"])
            data = reader.read()
        reader.check(entry)
        return data

    def samples(self, entry: dict) -> list[dict]:
        return parse_samples(self.fetch(entry), self.label(entry["path"]))

    def iter_file(self, entry: dict, backend: str, check: bool = True) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(key, feats, ts) of a listed field file; raises after the last sample when the bytes do not
        match the manifest (callers that keep a whole shard see the error before using it)."""
        rel = entry["path"]
        if backend == "hdf5":
            with self.download(entry) as path:
                yield from _relabel(iter_h5(path), path, self.label(rel))
            return
        with self._open(rel) as f:
            reader = HashingReader(f, self.label(rel), entry["bytes"])
            yield from iter_tar(self.label(rel), fileobj=reader)
            reader.drain()
        if check:
            reader.check(entry)

    @contextlib.contextmanager
    def download(self, entry: dict) -> Iterator[Path]:
        """A checked local copy of a listed file in a temp file, deleted afterwards."""
        rel = entry["path"]
        fd, tmp = tempfile.mkstemp(prefix="mmcache-", suffix=Path(rel).suffix)
        try:
            with os.fdopen(fd, "wb") as out, self._open(rel) as f:
                reader = HashingReader(f, self.label(rel), entry["bytes"])
                while block := reader.read(CHUNK):
                    out.write(block)
            reader.check(entry)
            yield Path(tmp)
        finally:
            os.unlink(tmp)

    def copy_to(self, entry: dict, dest: Path) -> None:
        """Write a listed file to `dest` (a temp path the caller publishes), checking it on the way."""
        with open(dest, "wb") as out, self._open(entry["path"]) as f:
            reader = HashingReader(f, self.label(entry["path"]), entry["bytes"])
            while block := reader.read(CHUNK):
                out.write(block)
        reader.check(entry)

    # -- verify ------------------------------------------------------------------------------

    def scan(self, entry: dict, backend: str | None) -> Scan:
        """Size and sha256 of a listed file, plus its bytes (samples index, backend None) or the
        per-sample records of a field file, reading it once."""
        rel = entry["path"]
        label = self.label(rel)
        if backend is None:
            with self._open(rel) as f:
                reader = HashingReader(f, label, entry["bytes"])
                data = reader.read()
            return Scan(reader.size, reader.hexdigest(), data=data)
        if backend == "hdf5":
            fd, tmp = tempfile.mkstemp(prefix="mmcache-", suffix=".h5")
            try:
                with os.fdopen(fd, "wb") as out, self._open(rel) as f:
                    reader = HashingReader(f, label, entry["bytes"])
                    while block := reader.read(CHUNK):
                        out.write(block)
                scan = Scan(reader.size, reader.hexdigest())
                if (scan.size, scan.sha256) == (entry["bytes"], entry["sha256"]):
                    scan.records, scan.error = records(_relabel(iter_h5(Path(tmp)), tmp, label))
                return scan
            finally:
                os.unlink(tmp)
        with self._open(rel) as f:  # tar: parse while hashing, then hash what the parser left
            reader = HashingReader(f, label, entry["bytes"])
            recs, error = records(iter_tar(label, fileobj=reader))
            reader.drain()
        return Scan(reader.size, reader.hexdigest(), records=recs, error=error)


class LocalSource(Source):
    """A cache directory. Every listed file is opened through store/files.py (no symlink in its path,
    a regular file) and its size compared with the manifest's before anything is read: a plain read is
    never longer than the manifest says, and verify never hashes a file of the wrong size."""

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(root)

    def label(self, rel: str) -> str:
        return str(self.root / rel)

    def prefetch(self, entry: dict) -> None:
        try:
            fd = open_listed(self.root, entry["path"])
        except CacheError:  # a hint: the read that follows names the problem
            return
        try:
            prefetch(self.root / entry["path"], fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _open(self, rel: str) -> Iterator[BinaryIO]:
        fd = open_listed(self.root, rel)
        with os.fdopen(fd, "rb") as f:
            yield f

    @contextlib.contextmanager
    def _listed(self, entry: dict) -> Iterator[int]:
        """A descriptor of a listed file whose size is the manifest's."""
        fd = open_listed(self.root, entry["path"])
        try:
            check_size(fd, entry["bytes"], self.root / entry["path"])
            yield fd
        finally:
            os.close(fd)

    def checked(self, entry: dict) -> Path:
        """The path of a listed file, checked as `_listed` checks it (for readers that open by path)."""
        return checked_path(self.root, entry["path"], entry["bytes"])

    def samples(self, entry: dict) -> list[dict]:
        path = self.root / entry["path"]
        with self._listed(entry) as fd:
            data = read_fd(fd, path)
        return parse_samples(data, str(path))

    def fetch(self, entry: dict) -> bytes:
        with self._listed(entry) as fd:
            data = bytes(read_fd(fd, self.root / entry["path"]))
        _check_digest(entry, len(data), hashlib.sha256(data).hexdigest(), self.label(entry["path"]))
        return data

    def iter_file(self, entry: dict, backend: str, check: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        path = self.root / entry["path"]
        if backend == "hdf5":
            self.checked(entry)
            if check:
                sha, size = sha256_file(path)
                _check_digest(entry, size, sha, str(path))
            yield from iter_h5(path)
            return
        with self._listed(entry) as fd:
            # plain reads of a local cache: mapped, no hashing (verify does that); checked: hash and
            # parse the same bytes, read once
            buf = read_fd(fd, path) if check else map_fd(fd, path)
        if check:
            _check_digest(entry, len(buf), hashlib.sha256(buf).hexdigest(), str(path))
        yield from parse_tar(buf, str(path))

    @contextlib.contextmanager
    def download(self, entry: dict) -> Iterator[Path]:
        path = self.checked(entry)
        sha, size = sha256_file(path)
        _check_digest(entry, size, sha, str(path))
        yield path

    def copy_to(self, entry: dict, dest: Path) -> None:
        with self._listed(entry) as fd, os.fdopen(os.dup(fd), "rb") as f, open(dest, "wb") as out:
            reader = HashingReader(f, self.label(entry["path"]), entry["bytes"])
            while block := reader.read(CHUNK):
                out.write(block)
        reader.check(entry)

    def scan(self, entry: dict, backend: str | None) -> Scan:
        path = self.root / entry["path"]
        fd = open_listed(self.root, entry["path"])
        try:
            size = os.fstat(fd).st_size
            if size != entry["bytes"]:  # the size decides first: a huge file is never hashed
                return Scan(size, "")
            if backend == "hdf5":
                with os.fdopen(os.dup(fd), "rb") as f:
                    reader = HashingReader(f, str(path), entry["bytes"])
                    reader.drain()
                scan = Scan(reader.size, reader.hexdigest())
            else:  # samples index, tar: hash and parse the same bytes, read once
                buf = read_fd(fd, path)
                scan = Scan(len(buf), hashlib.sha256(buf).hexdigest(), data=buf if backend is None else None)
        finally:
            os.close(fd)
        if backend is not None and (scan.size, scan.sha256) == (entry["bytes"], entry["sha256"]):
            # only a file that matches is parsed
            parsed = iter_h5(path) if backend == "hdf5" else _parsed(buf, str(path))
            scan.records, scan.error = records(parsed)
        return scan


class HttpSource(Source):
    def __init__(self, url: str, timeout: float = HTTP_TIMEOUT):
        parts = urllib.parse.urlsplit(url)
        if not parts.netloc:
            raise CacheError(f"{url}: no host in the URL")
        path = parts.path
        if path.endswith("/" + MANIFEST):
            path = path[: -len(MANIFEST)]
        if not path.endswith("/"):
            path += "/"
        self.base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.location, self.timeout = url, timeout

    def url(self, rel: str) -> str:
        parts = urllib.parse.urlsplit(self.base)
        return urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path + urllib.parse.quote(rel), parts.query, "")
        )

    def label(self, rel: str) -> str:
        return self.url(rel)

    @contextlib.contextmanager
    def _open(self, rel: str) -> Iterator[BinaryIO]:
        url = self.url(rel)
        resp = _urlopen(url, self.timeout)
        try:
            yield _LengthChecked(resp, url)
        finally:
            resp.close()


class PipeSource(Source):
    def __init__(self, command: str):
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise CacheError(f"pipe:{command}: cannot parse the command ({e})") from None
        if not self.argv:
            raise CacheError("pipe: URL without a command")
        if not any("{path}" in a for a in self.argv):
            raise CacheError(
                f"pipe:{command}: the command needs a {{path}} placeholder for each file's relative path, "
                "e.g. 'pipe:aws s3 cp s3://bucket/cache/{path} -'"
            )
        self.location = f"pipe:{command}"

    def command(self, rel: str) -> list[str]:
        return [a.replace("{path}", rel) for a in self.argv]

    def label(self, rel: str) -> str:
        return f"pipe:{shlex.join(self.command(rel))}"

    @contextlib.contextmanager
    def _open(self, rel: str) -> Iterator[BinaryIO]:
        argv = self.command(rel)
        label = self.label(rel)
        with tempfile.TemporaryFile() as errf:  # a file, not a pipe: a chatty stderr cannot block stdout
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
            except OSError as e:
                raise CacheError(f"{label}: cannot run {argv[0]!r} ({e.strerror or e})") from None
            done = False
            try:
                yield proc.stdout
                done = True
            finally:
                if not done:
                    proc.kill()
                proc.stdout.close()
                rc = proc.wait()
            if rc != 0:
                errf.seek(0)
                tail = errf.read()[-400:].decode("utf-8", "replace").strip().replace("\n", " / ")
                raise CacheError(f"{label}: command exited with status {rc}" + (f": {tail}" if tail else ""))


class HashingReader:
    """A read-only stream that hashes and counts what passes through it, and refuses to pass more
    than `limit` bytes (the manifest's size of the file): an endless or oversized source (an http body
    that never ends, `pipe:yes`) stops at the first byte too many, and a read asking for more than is
    left (a tar header claiming 8 GiB) allocates no more than is left."""

    def __init__(self, raw, label: str, limit: int | None = None):
        self.raw, self.label, self.limit = raw, label, limit
        self.hash, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if self.limit is not None:
            n = min(n, self.limit - self.size + 1, CHUNK)  # one byte past the limit shows there is more
        try:
            data = self.raw.read(n)
        except (http.client.HTTPException, OSError) as e:
            raise CacheError(f"{self.label}: transfer failed ({e})") from None
        self.hash.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise CacheError(f"{self.label}: more than the {self.limit} bytes the manifest says (replaced or endless)")
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def check(self, entry: dict) -> None:
        _check_digest(entry, self.size, self.hexdigest(), self.label)


class _LengthChecked:
    """An HTTP body that raises when the connection ends before Content-Length bytes arrived."""

    def __init__(self, resp, url: str):
        self.resp, self.url = resp, url
        length = resp.headers.get("Content-Length")
        self.expected = int(length) if length and length.isdigit() else None
        self.got = 0

    def read(self, n: int = -1) -> bytes:
        data = self.resp.read(n) if n is not None and n >= 0 else self.resp.read()
        self.got += len(data)
        if not data and n and self.expected is not None and self.got < self.expected:
            raise CacheError(f"{self.url}: connection closed after {self.got} of {self.expected} bytes")
        return data


def _check_digest(entry: dict, size: int, sha: str, label: str) -> None:
    if size != entry["bytes"]:
        raise CacheError(f"{label}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
    if sha != entry["sha256"]:
        raise CacheError(f"{label}: sha256 mismatch (content changed or corrupt)")


def records(it: Iterator[tuple[str, np.ndarray, np.ndarray]]) -> tuple[list[Record], str | None]:
    """Per-sample (key, dtype, feats shape, ts shape, ts dtype, ts all finite) of a field file, or what
    stopped the read."""
    out: list[Record] = []
    names: dict[np.dtype, str] = {}  # str(dtype) is slow, and a file has one or two
    try:
        for key, feats, ts in it:
            name = names.get(feats.dtype)
            if name is None:
                name = names[feats.dtype] = str(feats.dtype)
            ts_name = names.get(ts.dtype)
            if ts_name is None:
                ts_name = names[ts.dtype] = str(ts.dtype)
            finite = ts.dtype.kind != "f" or bool(np.isfinite(ts).all())
            out.append((key, name, feats.shape, ts.shape, ts_name, finite))
    except CacheError as e:
        return out, str(e)
    return out, None


def _parsed(buf: bytearray, label: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """`parse_tar` as an iterator, so that `records` sees its errors."""
    yield from parse_tar(buf, label)


def _relabel(it, tmp: str | Path, label: str):
    """Errors about a temp download name the remote file instead."""
    try:
        yield from it
    except CacheError as e:
        raise CacheError(str(e).replace(str(tmp), label)) from None


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise CacheError(f"{req.full_url}: refusing redirect to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _urlopen(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": f"mmcache/{__version__}"})
    for attempt in range(HTTP_ATTEMPTS):
        try:
            return _OPENER.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 404:
                raise Missing(f"{url}: missing (HTTP 404)") from None
            if e.code < 500 or attempt == HTTP_ATTEMPTS - 1:
                raise CacheError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
            if attempt == HTTP_ATTEMPTS - 1:
                reason = getattr(e, "reason", e)
                raise CacheError(f"{url}: cannot fetch ({reason})") from None
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")
