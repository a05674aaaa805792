"""A cache's listed files read through a transport (transport.py: where the bytes come from, checked
against the manifest) and parsed by their shard format (store/formats.py: what the bytes mean).
Neither side knows the other; this module is where they meet, for plain reads (`iter_file`) and for
verify (`scan`).

How a field file is read depends only on what the two sides can do:
* a local file whose format parses buffers and streams (tar): mapped (plain reads) or read and hashed
  (checked), then parsed whole;
* a remote file read whole (object stores, and any remote with a fetch cache) whose format parses
  buffers (tar, HDF5): fetched in one request (or from the fetch cache), checked, then parsed whole in
  memory (no temp file);
* a remote file whose format parses streams (tar over http or pipe:): parsed member by member as it
  arrives, hashed on the way;
* otherwise (HDF5 locally, or over http or pipe:): the local file itself, or a checked temp copy of a
  remote one (h5py reads files fastest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CacheError
from .store.formats import ShardFormat
from .store.tar import Sample
from .transport import Transport, matches

Record = tuple[str, str, tuple, tuple, str, bool]  # key, dtype, feats shape, ts shape, ts dtype, ts finite


def iter_file(t: Transport, entry: dict, fmt: ShardFormat, check: bool | None = None) -> Iterator[Sample]:
    """(key, feats, ts) of a listed field file, in file order. `check` (default: when the transport
    is remote) compares the bytes with the manifest's size and sha256; a streamed file raises after
    its last sample when they differ (callers that keep a whole shard see the error before using it)."""
    check = t.remote if check is None else check
    label = t.label(entry["path"])
    if _buffered(t, fmt):
        yield from fmt.parse(t.read(entry, check=check, mapped=True), label)
    elif fmt.stream is not None:
        with t.stream(entry) as reader:
            yield from fmt.stream(reader, label)
            reader.drain()
        if check:
            reader.check(entry)
    else:
        with t.local_file(entry, check) as path:
            yield from _relabel(fmt.read(path), path, label)


def _buffered(t: Transport, fmt: ShardFormat) -> bool:
    """Whether a field file is read whole into memory, then parsed (see the module's docstring)."""
    if fmt.parse is None:
        return False
    return t.whole_files if t.remote else fmt.stream is not None


@dataclass
class Scan:
    """What verify learns from reading one listed file once."""

    size: int
    sha256: str
    data: bytes | None = None  # samples index bytes
    records: list[Record] | None = None  # field files whose size and hash match: one per sample
    error: str | None = None  # the field file could not be parsed


def scan(t: Transport, entry: dict, fmt: ShardFormat | None) -> Scan:
    """Size and sha256 of a listed file, plus its bytes (a samples index: `fmt` None) or the
    per-sample records of a field file, reading it once. A local file of the wrong size is neither
    read nor hashed; a field file is parsed only when size and sha256 match."""
    size = t.size(entry)
    if size is not None and size != entry["bytes"]:
        return Scan(size, "")
    label = t.label(entry["path"])
    if fmt is None or _buffered(t, fmt):  # read whole, hash, then parse
        buf = t.read(entry, check=False)
        found = Scan(len(buf), hashlib.sha256(buf).hexdigest(), data=buf if fmt is None else None)
        if fmt is not None and _matches(found, entry):
            found.records, found.error = records(_parsed(fmt, buf, label))
        return found
    if fmt.stream is not None:  # parse while hashing, then hash what the parser left
        with t.stream(entry) as reader:
            recs, error = records(fmt.stream(reader, label))
            reader.drain()
        return Scan(reader.size, reader.hexdigest(), records=recs, error=error)
    with t.hashed_copy(entry) as (path, size, sha):
        found = Scan(size, sha)
        if _matches(found, entry):
            found.records, found.error = records(_relabel(fmt.read(path), path, label))
    return found


def _matches(found: Scan, entry: dict) -> bool:
    return matches(entry, found.size, found.sha256)


def records(it: Iterator[Sample]) -> tuple[list[Record], str | None]:
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


def _parsed(fmt: ShardFormat, buf, label: str) -> Iterator[Sample]:
    """`fmt.parse` as an iterator, so that `records` sees its errors."""
    yield from fmt.parse(buf, label)


def _relabel(it: Iterator[Sample], tmp: str | Path, label: str) -> Iterator[Sample]:
    """Errors about a temp copy name the listed file instead."""
    try:
        yield from it
    except CacheError as e:
        raise CacheError(str(e).replace(str(tmp), label)) from None
