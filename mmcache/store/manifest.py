"""manifest.json and the samples index: load, validate, save atomically."""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import os
import re
from pathlib import Path

import orjson

from .. import __version__
from ..errors import CacheError, EncoderError, FingerprintMismatch
from ..schema import load_schema, schema_errors
from .atomic import sha256_file, write_atomic
from .files import MissingFile, open_listed, read_listed

MANIFEST = "manifest.json"
BACKENDS = ("webdataset", "hdf5")
# a manifest holds ~250 bytes per field file: 64 MiB is ~250,000 of them (a 6M-video cache with 1,000
# videos a shard and 5 fields needs ~9 MB); more is not a manifest
MAX_MANIFEST_BYTES = int(os.environ.get("MMCACHE_MAX_MANIFEST_BYTES", 64 << 20))
# line separators other than \n that str.splitlines() and some JSONL readers split on, and that
# json.dumps(ensure_ascii=False) leaves raw inside strings
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def new_manifest(backend: str) -> dict:
    return {
        "format": "mmcache",
        "format_version": 1,
        "backend": backend,
        "mmcache_version": __version__,
        "shards": {},
        "fields": {},
    }


def load_manifest(root: Path) -> dict | None:
    """The validated manifest, or None when `root` holds no cache yet. A manifest.json that is a
    symlink, a FIFO or a device, or larger than MAX_MANIFEST_BYTES, is refused."""
    try:
        data = read_listed(root, MANIFEST, MAX_MANIFEST_BYTES)
    except MissingFile:
        return None
    return parse_manifest(data, str(Path(root) / MANIFEST))


def loads(text: str | bytes, where: str):
    """json.loads for untrusted bytes: every way it can fail (bad UTF-8, bad JSON, nesting deep enough
    to exhaust the recursion limit, an integer of more digits than Python converts) is a CacheError
    naming `where`, and so is nesting deeper than MAX_JSON_DEPTH."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CacheError(f"{where}: not valid JSON ({str(e).splitlines()[0][:200]})") from None
    check_depth(doc, text, where)
    return doc


# Nothing mmcache writes nests deeper than ~8 levels. Deeper documents that json.loads still parses
# (up to ~1000 levels) would recurse through every later step instead: schema validation, the
# validator's error message (pprint), json.dumps when a cache is merged
MAX_JSON_DEPTH = 64


def check_depth(doc, text: str, where: str) -> None:
    """Refuse `doc` (parsed from `text`) when it nests deeper than MAX_JSON_DEPTH. Text with fewer
    brackets than that cannot: the walk is skipped (every samples row)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    level = [doc]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for c in level if isinstance(c, dict | list) for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return
    if any(isinstance(v, dict | list) for v in level):
        raise CacheError(f"{where}: JSON nested more than {MAX_JSON_DEPTH} levels deep: refused")


def parse_manifest(data: bytes, where: str) -> dict:
    """Validate manifest bytes (from a file or a URL) against the schema and the path rules."""
    manifest = loads(data, where)
    try:
        errs = schema_errors(manifest, "cache-manifest")
    except RecursionError:  # nesting that json parsed but the validator recurses through too deeply
        raise CacheError(f"{where}: invalid manifest (nested too deeply)") from None
    if errs:
        raise CacheError(f"{where}: invalid manifest: {errs[0]}")
    for name, field in manifest["fields"].items():
        for shard, entry in field["files"].items():
            if entry["path"] != f"{name}/{shard}{'.tar' if manifest['backend'] == 'webdataset' else '.h5'}":
                raise CacheError(f"{where}: field {name} shard {shard} points at {entry['path']!r}")
    for shard, entry in manifest["shards"].items():
        if entry["path"] != f"samples/{shard}.jsonl":
            raise CacheError(f"{where}: shard {shard} points at {entry['path']!r}")
    return manifest


# -- manifest entries: every writer of a cache (extraction, merge, benchmarks) builds them here --------


def samples_entry(shard: str, data: bytes, rows: list[dict]) -> dict:
    """The `shards` entry of a samples index file holding `data` (samples_bytes(rows))."""
    ok = sum(r["status"] == "ok" for r in rows)
    return {
        "path": f"samples/{shard}.jsonl",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "count": len(rows),
        "ok": ok,
        "failed": len(rows) - ok,
    }


def field_file_entry(field: str, writer, missing: dict) -> dict:
    """The `fields.<field>.files` entry of the file a shard writer published (hashed from disk);
    `missing` maps the shard's ok samples without data in it to the reason."""
    sha, size = sha256_file(writer.path)
    return {
        "path": f"{field}/{writer.path.name}",
        "bytes": size,
        "sha256": sha,
        "count": len(writer.keys),
        "steps": writer.steps,
        "missing": dict(sorted(missing.items())),
    }


def field_header(encoder: str, options: dict, modality: str, dim: int, dtype: str, parts: dict) -> dict:
    """A field's manifest entry without its files: what made it and the fingerprint of how (`parts`,
    copied as plain JSON data)."""
    return {
        "encoder": encoder,
        "options": options,
        "modality": modality,
        "dim": dim,
        "dtype": dtype,
        "fingerprint": fingerprint_of(parts),
        "fingerprint_parts": json.loads(json.dumps(parts)),
    }


def fingerprint_of(parts: dict) -> str:
    """A field's fingerprint: sha256 of the canonical JSON of its `fingerprint_parts`; a part that is
    not plain JSON data is an error, never skipped."""
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise EncoderError(f"fingerprint part is not plain JSON data: {e}") from e
    return hashlib.sha256(text.encode()).hexdigest()


def files_digest(field_entry: dict) -> str:
    """sha256 of the canonical JSON of {shard: file sha256}: which bytes a field's stats describe."""
    files = {s: e["sha256"] for s, e in field_entry["files"].items()}
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fresh_stats(field_entry: dict) -> dict | None:
    """The field's recorded stats when they describe its current files (else None: stale or absent)."""
    st = field_entry.get("stats")
    if not st or st.get("files_digest") != files_digest(field_entry):
        return None
    dim = field_entry["dim"]
    if len(st.get("mean", [])) != dim or len(st.get("std", [])) != dim:
        return None
    if st.get("steps") != sum(e["steps"] for e in field_entry["files"].values()):
        return None
    return st


def save_manifest(root: Path, manifest: dict) -> None:
    errs = schema_errors(manifest, "cache-manifest")
    if errs:  # a bug, not a user error: never publish an invalid contract
        raise CacheError(f"refusing to write an invalid manifest: {errs[0]}")
    write_atomic(Path(root) / MANIFEST, dumps(manifest).encode())


def dumps(obj) -> str:
    """Canonical, diff-friendly JSON (sorted keys) so identical caches have identical bytes."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def differing_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<value>"]


def check_same_fingerprint(field: str, recorded: dict, parts: dict, fingerprint: str, where: str) -> None:
    """Raise naming the first differing key when a field would mix two fingerprints."""
    if recorded["fingerprint"] == fingerprint:
        return
    parts = json.loads(json.dumps(parts))  # tuples -> lists, as recorded
    keys = differing_keys(recorded["fingerprint_parts"], parts) or ["fingerprint"]
    raise FingerprintMismatch(
        f"field {field!r}: fingerprint differs from {where} at {', '.join(keys[:3])} "
        f"({value_at(recorded['fingerprint_parts'], keys[0])!r} vs {value_at(parts, keys[0])!r}); "
        "use another field name (field=NAME) or a new cache"
    )


def value_at(parts: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(parts, dict):
            return None
        parts = parts.get(k)
    return parts


def read_samples(path: Path, size: int | None = None) -> list[dict]:
    """Rows of a samples index file (a regular file, not a symlink; of `size` bytes when given), each
    checked against the schema's sample definition."""
    path = Path(path)
    fd = open_listed(path.parent, path.name)
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if size is not None and st.st_size != size:
                raise CacheError(f"{path}: {st.st_size} bytes, manifest says {size} (truncated or replaced)")
            data = f.read(st.st_size + 1)
    except OSError as e:
        raise CacheError(f"{path}: cannot read samples index ({e.strerror or e})") from None
    return parse_samples(data, str(path))


@functools.cache
def _row_validator():
    """The samples index row schema's validator, built once (and the schema checked once)."""
    import jsonschema

    defs = load_schema("cache-manifest")["$defs"]
    schema = {**defs["sample"], "$defs": defs}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# sha256 of the canonical JSON of the schema definitions `_plain_row` mirrors ($defs sample, key, sha256)
_ROW_SCHEMA_SHA256 = "0be2c8ef763e9feae5d398632c580f8dc593cc1daac519972481d7c1df5af1d8"
_KEY = re.compile(r"[0-9a-f]{8,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEYS = re.compile(r"[0-9a-f]{8,64}(?:\n[0-9a-f]{8,64})*")  # _KEY of every line
_SHA256S = re.compile(r"[0-9a-f]{64}(?:\n[0-9a-f]{64})*")
_OPTIONAL = {"id": (str, type(None)), "duration": (int, float, type(None)), "streams": (dict, type(None))}
_OPTIONAL.update(error=(str, type(None)), meta=(dict,))


@functools.cache
def _row_schema_known() -> bool:
    defs = load_schema("cache-manifest")["$defs"]
    snap = json.dumps({k: defs[k] for k in ("sample", "key", "sha256")}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(snap.encode()).hexdigest() == _ROW_SCHEMA_SHA256


def _plain_row(row) -> bool:
    """True only for a row the schema certainly accepts (the usual row, checked in microseconds);
    anything else goes to jsonschema, which decides and words the error. Used only while the schema
    is the one this mirrors (`_row_schema_known`)."""
    if type(row) is not dict:
        return False
    key, sha, nbytes = row.get("key"), row.get("sha256", ""), row.get("bytes")
    if type(key) is not str or not _KEY.fullmatch(key) or type(row.get("source")) is not str:
        return False
    if not (sha is None or type(sha) is str and _SHA256.fullmatch(sha)):
        return False
    if type(nbytes) is not int or nbytes < 0 or row.get("status") not in ("ok", "failed"):
        return False
    for name, types in _OPTIONAL.items():
        if name in row and type(row[name]) not in types:
            return False
    aliases = row.get("aliases", [])
    return type(aliases) is list and all(type(a) is str for a in aliases)


def parse_samples(data: bytes, where: str) -> list[dict]:
    """Rows of samples index bytes (from a file or a URL), each checked against the schema. The rows
    of a shard are parsed in one call (orjson) and checked column by column (`_plain_rows`: about
    1 s for a million rows); a shard with any other row (or one orjson refuses: NaN, huge integers)
    goes row by row, where the json module parses and jsonschema decides and names the line (the
    validator is built once: `jsonschema.validate` per row would rebuild it, about 15 ms a row)."""
    # rows end with exactly "\n" (what samples_bytes writes): never splitlines(), which also splits
    # inside a row at U+2028, U+0085, \x1c... that older writers left raw in names
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    try:  # one array of every row: a line holding two values, or none, makes the count differ
        with gc_paused():
            rows = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        rows = None
    if rows is not None and len(rows) == len(lines) and _row_schema_known() and _plain_rows(rows):
        if not any(line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH for line in lines):
            return rows
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CacheError(f"{where}: cannot read samples index ({e})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return _parse_rows(lines, where)


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection inside: parsed rows hold no cycles, and the collections their
    new dicts trigger walk the whole heap (torch's objects too), doubling the time of a parse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_rows(lines: list[str], where: str) -> list[dict]:
    """Row by row: the first bad one is a CacheError naming its line and the schema's complaint."""
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = _row_validator()
    plain = _plain_row if _row_schema_known() else None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            check_depth(row, line, f"{where}:{i}")
            error = None if plain is not None and plain(row) else best_match(validator.iter_errors(row))
            if error is not None:
                raise error
        except (ValueError, RecursionError, jsonschema.ValidationError) as e:  # ValueError: JSON, huge ints
            raise CacheError(f"{where}:{i}: bad samples row ({str(e).splitlines()[0][:200]})") from None
        rows.append(row)
    return rows


def _plain_rows(rows: list) -> bool:
    """`_plain_row` of every row, column by column (a set of types per column, one regex per
    column): True only when each row would pass it."""
    if not rows:
        return True
    if {type(r) for r in rows} != {dict}:
        return False
    try:
        keys, sources, sizes = [r["key"] for r in rows], [r["source"] for r in rows], [r["bytes"] for r in rows]
        status = {r["status"] for r in rows}
    except (KeyError, TypeError):  # TypeError: an unhashable status
        return False
    if not status <= {"ok", "failed"} or {type(v) for v in (*keys, *sources)} != {str}:
        return False
    if {type(v) for v in sizes} != {int} or min(sizes) < 0 or not _every(_KEYS, keys):
        return False
    shas = [r.get("sha256", "") for r in rows]
    given = [v for v in shas if v is not None]
    if {type(v) for v in given} - {str} or given and not _every(_SHA256S, given):
        return False
    for name, types in _OPTIONAL.items():
        if {type(r[name]) for r in rows if name in r} - set(types):
            return False
    aliases = [r.get("aliases", []) for r in rows]
    return {type(a) for a in aliases} == {list} and not {type(v) for a in aliases for v in a} - {str}


def _every(pattern: re.Pattern, values: list[str]) -> bool:
    """`pattern` (a line pattern repeated after "\n") matches all of `values` joined by "\n", and no
    value holds a "\n" of its own (two lines of the join would pass for one value)."""
    joined = "\n".join(values)
    return joined.count("\n") == len(values) - 1 and pattern.fullmatch(joined) is not None


def samples_bytes(rows: list[dict]) -> bytes:
    """JSON lines, each ended by "\n": names stay readable (ensure_ascii=False) but the line
    separators other than \n are escaped, so that any line splitter sees one row per line."""
    return "".join(_escape_breaks(json.dumps(r, sort_keys=True, ensure_ascii=False)) + "\n" for r in rows).encode()


def _escape_breaks(line: str) -> str:
    """\u2028, \u2029 and \x85 as JSON escapes (equal JSON: they can only stand inside strings)."""
    if line.isascii():
        return line
    for raw, esc in _LINE_BREAKS.items():
        line = line.replace(raw, esc)
    return line
