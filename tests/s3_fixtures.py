"""A real S3-compatible server on loopback for the object-store tests, a plugin (`pytest_plugins =
["s3_fixtures"]`): moto's standalone server (`moto[server]`, the same HTTP API as S3) in a thread on a
free port, started once per session; s3fs reaches it through `endpoint_url`. Nothing leaves the machine.

`s3` gives each test its own bucket, test credentials in the environment (and no profile files or
instance metadata to fall back on), and the storage options and `-S` flags that point at the server."""

from __future__ import annotations

import itertools
import logging
import socket
from dataclasses import dataclass

import pytest

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request lines on the test output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class S3:
    endpoint: str
    bucket: str

    @property
    def options(self) -> dict:
        return {"endpoint_url": self.endpoint}

    @property
    def flags(self) -> list[str]:
        return ["-S", f"endpoint_url={self.endpoint}"]

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    @property
    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MMCACHE_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    store = S3(s3_endpoint, f"bucket-{next(_buckets)}")
    store.fs.mkdir(store.bucket)
    return store
