"""The shard formats a cache can use, as one table: everything else in mmcache reaches tar and HDF5
shards through `FORMATS[backend]` (or `shard_format(backend)`), never by branching on the name.

A format is its file suffix, its writer class, and its readers:
* `read(path)`: every (key, feats, ts) of a whole local file, in file order, checked;
* `parse(buf, label)`: the same from the file's bytes held in memory (a remote file fetched whole and
  checked), or None when the format cannot;
* `stream(fileobj, label)`: the same from a byte stream, member by member (remote shards arrive that
  way), or None when the format needs random access (then a transport saves a checked temp copy);
* `open(path)`: a handle for random access by key (`len`, `read(key)`, `index`, `close()`).

Adding a format = a reader module and a writer module beside these, plus one line in FORMATS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import CacheError
from .hdf5 import H5Shard, parse_h5, read_h5
from .hdf5_writer import H5ShardWriter
from .tar import Sample, TarShard, iter_tar, parse_tar, read_tar
from .tar_writer import TarShardWriter


def _stream_tar(fileobj: BinaryIO, label: str) -> Iterator[Sample]:
    return iter_tar(label, fileobj=fileobj)


@dataclass(frozen=True)
class ShardFormat:
    name: str
    suffix: str
    writer: type
    read: Callable[[Path | str], list[Sample]]
    parse: Callable[..., list[Sample]] | None
    stream: Callable[[BinaryIO, str], Iterator[Sample]] | None
    open: Callable[[Path | str], object]


FORMATS = {
    "webdataset": ShardFormat("webdataset", ".tar", TarShardWriter, read_tar, parse_tar, _stream_tar, TarShard),
    "hdf5": ShardFormat("hdf5", ".h5", H5ShardWriter, read_h5, parse_h5, None, H5Shard),
}


def shard_format(backend: str) -> ShardFormat:
    """The format named by a manifest's `backend` (the schema admits only FORMATS' names)."""
    try:
        return FORMATS[backend]
    except KeyError:
        raise CacheError(f"unknown shard format {backend!r}; known: {', '.join(FORMATS)}") from None
