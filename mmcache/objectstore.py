"""Caches in object stores and on the Hugging Face Hub, through fsspec: `s3://` (s3fs), `gs://`
(gcsfs), `az://` / `abfs://` (adlfs), `hf://datasets/...` (huggingface_hub), and any other protocol an
installed fsspec backend registers. `ObjectStore` moves the bytes of files by relative path, knowing
no shard format and no manifest rules; transport.ObjectTransport checks them against the manifest,
and publish.py writes through it (`mmcache push`).

* **Whole-file reads, bounded**: a listed file is fetched with one ranged request for at most one byte
  more than the manifest's size, so a replaced or endless object costs one extra byte, never a
  download of whatever is there. Every read is compared with the manifest's size and sha256.
* **Several files in flight**: `prefetch(entry)` starts fetching a file that will be read soon in a
  small thread pool (at most PREFETCH_WORKERS files held in memory beyond the one being read).
* **Credentials** come from the backend's usual places (environment variables, profiles, instance
  metadata) or from `storage_options` (`--storage-option key=value`, a config's `storage_options`);
  mmcache passes them to the backend and never prints or stores them. Errors name the file and the
  backend's reason (missing credentials, missing bucket), in one line.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from .errors import CacheError
from .store.files import MissingFile
from .store.manifest import MANIFEST

PREFETCH_WORKERS = 4

# protocol -> (package, extra): what `pip install 'mmcache[extra]'` brings
EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "adl": ("adlfs", "azure"),
    "hf": ("huggingface_hub", "hf"),
}

# errors of the backends' own libraries (credentials, endpoints, throttling) become one line
_BACKEND_MODULES = (
    "botocore",
    "aiobotocore",
    "s3fs",
    "gcsfs",
    "google",
    "adlfs",
    "azure",
    "huggingface_hub",
    "aiohttp",
)


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, path inside it) for `url`; a backend that is not installed is one line
    naming the extra to install."""
    import fsspec.core

    scheme = scheme_of(url)
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError:
        package, extra = EXTRAS.get(scheme, (None, None))
        if package:
            raise CacheError(f"{url}: {scheme}:// needs {package}: pip install 'mmcache[{extra}]'") from None
        raise CacheError(f"{url}: the fsspec backend for {scheme}:// is not installed") from None
    except ValueError as e:
        if "not known" in str(e).lower():
            raise CacheError(
                f"{url}: unsupported URL scheme {scheme!r}; use a directory, http(s)://, s3://, gs://, az://, "
                "hf://, another fsspec URL, or a pipe: command with {path}"
            ) from None
        raise CacheError(f"{url}: {e}") from None
    except TypeError as e:  # an option the backend does not take; the message names the option, not its value
        raise CacheError(f"{url}: storage options not accepted by the {scheme}:// backend ({e})") from None
    except Exception as e:  # backends that connect at once (ftp, sftp) fail here
        if not is_backend_error(e):
            raise
        raise CacheError(f"{url}: {reason(e)}") from None


def reason(e: BaseException) -> str:
    """The backend's reason in a few words, with a hint for missing credentials."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "credential" in type(e).__name__.lower() or "credential" in text.lower():
        text += (
            " (credentials come from the backend's usual places: environment variables, a profile, or --storage-option)"
        )
    return text


def is_backend_error(e: BaseException) -> bool:
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in _BACKEND_MODULES


@contextlib.contextmanager
def backend_errors(label: str) -> Iterator[None]:
    """FileNotFoundError becomes MissingFile, other backend errors a CacheError naming `label`."""
    try:
        yield
    except FileNotFoundError as e:
        detail = str(e).strip()
        hint = f" ({detail})" if detail and "does not exist" in detail.lower() else ""
        raise MissingFile(f"{label}: missing{hint}") from None
    except CacheError:
        raise
    except TypeError as e:  # backends pass storage options on lazily: a wrong one fails at the first request
        if "keyword argument" not in str(e):
            raise
        raise CacheError(f"{label}: a storage option is not accepted by the backend ({e})") from None
    except Exception as e:
        if not is_backend_error(e):
            raise
        raise CacheError(f"{label}: {reason(e)}") from None


class ObjectStore:
    """Reads (and, for publishing, writes) the files of a cache under one fsspec URL."""

    def __init__(self, url: str, storage_options: dict | None = None):
        fs, path = filesystem(url, storage_options)
        path = path.rstrip("/")
        if path.endswith("/" + MANIFEST) or path == MANIFEST:
            path = path[: -len(MANIFEST)].rstrip("/")
        self.fs, self.base, self.location = fs, path, url
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        self.scheme = scheme_of(url) if "://" in url else protocol
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def label(self, rel: str) -> str:
        path = self.path(rel)
        return f"{self.scheme}://{path}" if self.scheme != "file" else path

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        label = self.label(rel)
        with backend_errors(label):
            f = self.fs.open(self.path(rel), "rb")
        try:
            yield _Reads(f, label)
        finally:
            with contextlib.suppress(Exception):
                f.close()

    def fetch(self, entry: dict) -> bytes:
        """The bytes of a listed file: at most one byte more than the manifest says (so a longer
        object shows as too long without downloading it)."""
        rel = entry["path"]
        with self._lock:
            pending = self._pending.pop(rel, None)
        if pending is not None:
            return pending.result()
        return self._get(rel, entry["bytes"])

    def _get(self, rel: str, size: int) -> bytes:
        with backend_errors(self.label(rel)):
            if size == 0:  # a range on an empty object is refused by some stores
                return self.fs.cat_file(self.path(rel))
            return self.fs.cat_file(self.path(rel), start=0, end=size + 1)

    def prefetch(self, entry: dict) -> None:
        rel = entry["path"]
        with self._lock:
            if rel in self._pending or len(self._pending) >= PREFETCH_WORKERS:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="mmcache-fetch")
            self._pending[rel] = self._pool.submit(self._get, rel, entry["bytes"])

    def close(self) -> None:
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            pool, self._pool = self._pool, None
        for f in pending:
            f.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # writing (publish.py)

    def exists_with_size(self, rel: str) -> int | None:
        """The size of `rel` at the destination, or None when there is none."""
        with backend_errors(self.label(rel)):
            try:
                self.fs.invalidate_cache(self.path(rel))  # another writer may have changed it since we listed
                info = self.fs.info(self.path(rel))
            except FileNotFoundError:
                return None
        return None if info.get("type") == "directory" else int(info.get("size") or 0)

    def put(self, rel: str, data: bytes) -> None:
        """Write one whole file (an object store makes it visible in one step)."""
        with backend_errors(self.label(rel)):
            self.fs.pipe_file(self.path(rel), bytes(data))

    def ensure_root(self) -> None:
        """Make the destination's folder (a bucket on S3 when it does not exist yet and may be made)."""
        with backend_errors(self.location):
            if self.base and not self.fs.exists(self.base):
                with contextlib.suppress(FileExistsError, NotImplementedError):
                    self.fs.makedirs(self.base, exist_ok=True)


class _Reads:
    """A backend file whose read errors are CacheErrors naming the file."""

    def __init__(self, f, label: str):
        self.f, self.label = f, label

    def read(self, n: int = -1) -> bytes:
        with backend_errors(self.label):
            return self.f.read(n)
