"""Moving a cache's bytes: a local directory, an http(s):// URL, an object store or the Hugging Face
Hub through fsspec (s3://, gs://, az://, hf://, ...: objectstore.py), or a `pipe:` command. A transport
knows relative paths, sizes and sha256 digests; it knows nothing of shard formats (reading.py
composes a transport with a format, store/formats.py).

A transport reads files by the relative paths of a validated manifest (`samples/NNNNNN.jsonl`,
`<field>/NNNNNN.(tar|h5)`, and `manifest.json` itself); no other path is ever formed, so a crafted
manifest cannot make a reader fetch anything outside the cache.

* a directory (or `file://`): every listed file is opened through store/files.py (no symlink on its
  path, a regular file) and its size compared with the manifest's before anything is read; plain
  reads map the file and do not hash (verify does), checked reads hash what they read.
* `http://host/cache/` (or `.../cache/manifest.json`): files are fetched with urllib (redirects only
  to http/https, retries on connection errors and 5xx before any byte is read).
* `s3://bucket/cache/`, `gs://`, `az://`, `hf://datasets/org/name/...` and any other fsspec URL:
  each file fetched whole in one bounded request, several in flight (objectstore.py);
  `storage_options` (e.g. an S3 `endpoint_url`) go to the backend, credentials come from its usual
  places.
* `pipe:CMD ... {path} ...`: the command is split with `shlex.split` (never a shell) and run once
  per file with `{path}` replaced by the file's relative path in each argument, its stdout being
  the file, e.g. `pipe:aws s3 cp s3://bucket/cache/{path} -` or `pipe:ssh host cat /data/cache/{path}`.

Remote bytes are hashed as they arrive and checked against the size and sha256 the manifest records,
and no read goes past the listed size, so a cut, altered or endless transfer is an error, never
silently fewer samples. With a fetch cache (`--cache-dir`, `MMCACHE_CACHE_DIR`; fetched.py) a remote
file that matched its manifest is kept locally under its sha256 and read from there next time.

Where a cache comes from is one `transport_for(location)`; the options a command line or a config
gives (`storage_options`, `cache_dir`) apply to every transport made inside `configured(...)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import json
import os
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import __version__
from .errors import CacheError
from .fetched import FetchedFiles
from .objectstore import PREFETCH_WORKERS, ObjectStore
from .store.atomic import sha256_file
from .store.files import MissingFile, check_size, checked_path, open_listed
from .store.manifest import MANIFEST, MAX_MANIFEST_BYTES
from .store.mapped import map_fd, prefetch, read_fd

CHUNK = 1 << 20
HTTP_TIMEOUT = float(os.environ.get("MMCACHE_HTTP_TIMEOUT", "60"))  # seconds without data before giving up
HTTP_ATTEMPTS = 3  # connection errors and 5xx answers are retried before any byte is read

Missing = MissingFile  # the file does not exist at the source (no such file, HTTP 404)


@dataclass(frozen=True)
class Settings:
    """How remote caches are reached: options for the fsspec backend (never printed) and the folder
    of fetched files (None: no fetch cache; default $MMCACHE_CACHE_DIR)."""

    storage_options: dict = field(default_factory=dict)
    cache_dir: Path | None = None


_SETTINGS: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("mmcache_transport", default=None)


def current_settings() -> Settings:
    s = _SETTINGS.get()
    if s is not None:
        return s
    env = os.environ.get("MMCACHE_CACHE_DIR")
    return Settings(cache_dir=Path(env) if env else None)


@contextlib.contextmanager
def configured(storage_options: dict | None = None, cache_dir: str | os.PathLike | None = None) -> Iterator[Settings]:
    """Transports made inside use these storage options and fetch cache (cache_dir None: the
    environment's MMCACHE_CACHE_DIR, if any)."""
    base = current_settings()
    s = Settings(
        storage_options={**base.storage_options, **(storage_options or {})},
        cache_dir=Path(cache_dir) if cache_dir else base.cache_dir,
    )
    token = _SETTINGS.set(s)
    try:
        yield s
    finally:
        _SETTINGS.reset(token)


def parse_storage_options(items: list[str] | None) -> dict:
    """`key=value` pairs (a command line's `--storage-option`) as backend options: values read as JSON
    when they are JSON (true, 3, null, {"a": 1}), else as text; `a.b=v` nests ({"a": {"b": v}})."""
    opts: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CacheError(f"--storage-option {item.split('=')[0]!r}: expected key=value")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, last = key.strip().split(".")
        node = opts
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CacheError(f"--storage-option {key}: {p} is given both as a value and as a group")
        node[last] = value
    return opts


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and (location.startswith("pipe:") or "://" in location)


def transport_for(location: str | os.PathLike, settings: Settings | None = None) -> Transport:
    """The transport of a cache given as a directory, a file:// or http(s):// URL, an fsspec URL
    (s3://, gs://, az://, hf://, ...), or a pipe: command."""
    if not isinstance(location, str):
        return LocalTransport(Path(location))
    settings = settings or current_settings()
    if location.startswith("pipe:"):
        t: Transport = PipeTransport(location[len("pipe:") :])
    else:
        scheme = location.split("://", 1)[0].lower() if "://" in location else ""
        if not scheme:
            return LocalTransport(Path(location))
        if scheme == "file":
            return LocalTransport(Path(urllib.parse.unquote(urllib.parse.urlparse(location).path)))
        t = (
            HttpTransport(location)
            if scheme in ("http", "https")
            else ObjectTransport(location, settings.storage_options)
        )
    if settings.cache_dir is not None:
        t.fetched = FetchedFiles(settings.cache_dir)
    return t


class Transport:
    """Reads a cache's listed files by manifest entry ({"path", "bytes", "sha256", ...}). Subclasses
    implement `open` and `label`; the checked reads below work on any byte stream."""

    remote = True
    location: str
    fetched: FetchedFiles | None = None  # remote files kept locally by sha256 (fetched.py)

    @property
    def whole_files(self) -> bool:
        """Whether readers should ask for whole files (`read`) rather than streams: true for object
        stores (one request per file) and whenever fetched files are kept locally."""
        return self.fetched is not None

    def close(self) -> None:
        """Stop background fetches (remote transports)."""

    def label(self, rel: str) -> str:
        """How errors name the file `rel`."""
        raise NotImplementedError

    def open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The raw bytes of `rel` as a stream (Missing when the file does not exist)."""
        raise NotImplementedError

    def prefetch(self, entry: dict) -> None:
        """Start fetching a file that will be read next (a hint; local files only)."""

    def manifest(self, missing_ok: bool = True) -> bytes | None:
        """The bytes of manifest.json (at most MAX_MANIFEST_BYTES), or None when there is none
        (`missing_ok`; else Missing, saying why, e.g. no such bucket)."""
        try:
            with self.open(MANIFEST) as f:
                return HashingReader(f, self.label(MANIFEST), MAX_MANIFEST_BYTES).read()
        except Missing:
            if missing_ok:
                return None
            raise

    def size(self, entry: dict) -> int | None:
        """The file's size when it is known without reading it (local files), else None."""
        return None

    def read(self, entry: dict, check: bool = True, mapped: bool = False):
        """A whole listed file in memory (a writable buffer), compared with its manifest size and
        sha256 when `check`. `mapped`: an unchecked local read may map the file instead. A remote file
        that matches is kept in the fetch cache, and read from there next time."""
        label = self.label(entry["path"])
        if self.fetched is not None:
            hit = self.fetched.get(entry)
            if hit is not None:
                data = bytearray(hit.read_bytes())
                if hashlib.sha256(data).hexdigest() == entry["sha256"]:
                    return data
                self.fetched.drop(entry)  # damaged on this disk: fetch it again
        data = self.fetch(entry)
        if check or self.fetched is not None:
            sha = hashlib.sha256(data).hexdigest()
            if self.fetched is not None and matches(entry, len(data), sha):
                self.fetched.put(entry, data)
            if check:
                check_digest(entry, len(data), sha, label)
        return data

    def fetch(self, entry: dict) -> bytearray:
        """The bytes of a listed file, unchecked, reading no more than one byte past its listed size."""
        with self.stream(entry) as reader:
            return bytearray(reader.read())

    @contextlib.contextmanager
    def stream(self, entry: dict) -> Iterator[HashingReader]:
        """The file as a stream that hashes what passes and stops past the listed size; the caller
        drains it and calls `check(entry)` when it wants the digest compared."""
        rel = entry["path"]
        with self.open(rel) as f:
            yield HashingReader(f, self.label(rel), entry["bytes"])

    @contextlib.contextmanager
    def local_file(self, entry: dict, check: bool = True) -> Iterator[Path]:
        """A local copy of a listed file (a temp file deleted afterwards), checked when `check`."""
        with self.hashed_copy(entry) as (path, size, sha):
            if check:
                check_digest(entry, size, sha, self.label(entry["path"]))
            yield path

    @contextlib.contextmanager
    def hashed_copy(self, entry: dict) -> Iterator[tuple[Path, int, str]]:
        """(a local copy of the file, its size, its sha256), not compared with the manifest (verify
        reports differences itself). The copy is a temp file deleted afterwards, or, with a fetch
        cache, the kept copy (a matching file is kept there)."""
        if self.fetched is None:
            fd, tmp = tempfile.mkstemp(prefix="mmcache-", suffix=Path(entry["path"]).suffix)
            os.close(fd)
            try:
                size, sha = self._copy(entry, Path(tmp))
                yield Path(tmp), size, sha
            finally:
                os.unlink(tmp)
            return
        hit = self.fetched.get(entry)
        if hit is not None:
            sha, size = sha256_file(hit)
            if matches(entry, size, sha):
                yield hit, size, sha
                return
            self.fetched.drop(entry)
        with self.fetched.temp(entry) as tmp:
            size, sha = self._copy(entry, tmp)
            if matches(entry, size, sha):
                tmp = self.fetched.keep(entry, tmp)
            yield tmp, size, sha

    def _copy(self, entry: dict, dest: Path) -> tuple[int, str]:
        with open(dest, "wb") as out, self.stream(entry) as reader:
            while block := reader.read(CHUNK):
                out.write(block)
        return reader.size, reader.hexdigest()

    def copy_to(self, entry: dict, dest: Path) -> None:
        """Write a listed file to `dest` (a temp path the caller publishes), checking it on the way."""
        with open(dest, "wb") as out, self.stream(entry) as reader:
            while block := reader.read(CHUNK):
                out.write(block)
        reader.check(entry)


class ObjectTransport(Transport):
    """A cache in an object store or on the Hub (objectstore.ObjectStore: fsspec): each file is
    fetched whole in one request bounded by its listed size, the next ones in the background."""

    ahead = PREFETCH_WORKERS  # files a reader asks for ahead of the one it reads

    def __init__(self, url: str, storage_options: dict | None = None):
        self.store = ObjectStore(url, storage_options)
        self.location = url

    @property
    def whole_files(self) -> bool:
        return True

    def label(self, rel: str) -> str:
        return self.store.label(rel)

    def open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.store.open(rel)

    def fetch(self, entry: dict) -> bytearray:
        return bytearray(self.store.fetch(entry))

    def prefetch(self, entry: dict) -> None:
        if self.fetched is None or self.fetched.get(entry) is None:
            self.store.prefetch(entry)

    def close(self) -> None:
        self.store.close()


class LocalTransport(Transport):
    """A cache directory. Every listed file is opened through store/files.py (no symlink in its path,
    a regular file) and its size compared with the manifest's before anything is read: a plain read is
    never longer than the manifest says, and verify never hashes a file of the wrong size."""

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(root)

    def label(self, rel: str) -> str:
        return str(self.root / rel)

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        with os.fdopen(open_listed(self.root, rel), "rb") as f:
            yield f

    def prefetch(self, entry: dict) -> None:
        try:
            fd = open_listed(self.root, entry["path"])
        except CacheError:  # a hint: the read that follows names the problem
            return
        try:
            prefetch(self.root / entry["path"], fd)
        finally:
            os.close(fd)

    def size(self, entry: dict) -> int:
        fd = open_listed(self.root, entry["path"])
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

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

    def read(self, entry: dict, check: bool = True, mapped: bool = False):
        path = self.root / entry["path"]
        with self._listed(entry) as fd:
            buf = map_fd(fd, path) if mapped and not check else read_fd(fd, path)
        if check:
            check_digest(entry, len(buf), hashlib.sha256(buf).hexdigest(), str(path))
        return buf

    @contextlib.contextmanager
    def stream(self, entry: dict) -> Iterator[HashingReader]:
        with self._listed(entry) as fd, os.fdopen(os.dup(fd), "rb") as f:
            yield HashingReader(f, self.label(entry["path"]), entry["bytes"])

    @contextlib.contextmanager
    def local_file(self, entry: dict, check: bool = True) -> Iterator[Path]:
        """The file itself (no copy); hashed first only when `check`."""
        if check:
            with super().local_file(entry, check) as path:
                yield path
        else:
            yield self.checked(entry)

    @contextlib.contextmanager
    def hashed_copy(self, entry: dict) -> Iterator[tuple[Path, int, str]]:
        """The file itself (no copy), hashed as a stream."""
        path = self.checked(entry)
        with self.stream(entry) as reader:
            reader.drain()
        yield path, reader.size, reader.hexdigest()


class HttpTransport(Transport):
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
    def open(self, rel: str) -> Iterator[BinaryIO]:
        url = self.url(rel)
        resp = _urlopen(url, self.timeout)
        try:
            yield _LengthChecked(resp, url)
        finally:
            resp.close()


class PipeTransport(Transport):
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
    def open(self, rel: str) -> Iterator[BinaryIO]:
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
        check_digest(entry, self.size, self.hexdigest(), self.label)


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


def matches(entry: dict, size: int, sha: str) -> bool:
    """Whether `size` and `sha` are the manifest entry's."""
    return (size, sha) == (entry["bytes"], entry["sha256"])


def check_digest(entry: dict, size: int, sha: str, label: str) -> None:
    """Raise unless `size` and `sha` are the manifest entry's."""
    if size != entry["bytes"]:
        raise CacheError(f"{label}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
    if sha != entry["sha256"]:
        raise CacheError(f"{label}: sha256 mismatch (content changed or corrupt)")


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
