"""manifest.json and the samples index: load, validate, save atomically."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from .. import __version__
from ..errors import CacheError, FingerprintMismatch
from ..schema import load_schema, schema_errors
from .atomic import write_atomic

MANIFEST = "manifest.json"
BACKENDS = ("webdataset", "hdf5")


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
    """The validated manifest, or None when `root` holds no cache yet."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    return parse_manifest(path.read_bytes(), str(path))


def parse_manifest(data: bytes, where: str) -> dict:
    """Validate manifest bytes (from a file or a URL) against the schema and the path rules."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{where}: not valid JSON ({e})") from None
    errs = schema_errors(manifest, "cache-manifest")
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


def read_samples(path: Path) -> list[dict]:
    """Rows of a samples index file, each checked against the schema's sample definition."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CacheError(f"{path}: cannot read samples index ({e})") from None
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
    """Rows of samples index bytes (from a file or a URL), each checked against the schema. The
    validator is built once (`jsonschema.validate` per row re-checks the schema and builds one every
    time: about 15 ms a row, 150 s for a 10,000-clip cache), and usual rows are recognised without it
    (`_plain_row`)."""
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = _row_validator()
    plain = _plain_row if _row_schema_known() else None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CacheError(f"{where}: cannot read samples index ({e})") from None
    rows = []
    shared = {}.setdefault  # one str per distinct key name across the rows: a third less memory per row
    share_keys = lambda pairs: {shared(k, k): v for k, v in pairs}  # noqa: E731
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line, object_pairs_hook=share_keys)
            error = None if plain is not None and plain(row) else best_match(validator.iter_errors(row))
            if error is not None:
                raise error
        except (json.JSONDecodeError, jsonschema.ValidationError) as e:
            raise CacheError(f"{where}:{i}: bad samples row ({str(e).splitlines()[0]})") from None
        rows.append(row)
    return rows


def samples_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()
