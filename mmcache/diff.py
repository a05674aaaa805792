"""`mmcache diff`: what differs between two caches (fields, fingerprint keys, samples, data)."""

from __future__ import annotations

from pathlib import Path

from .cache import Cache, open_cache
from .store.manifest import (
    differing_keys,
    value_at,
)


def diff_caches(a: str | Path, b: str | Path) -> dict:
    """What differs between two caches: fields (only in one; fingerprint keys that differ, dotted),
    samples (only in one, by key; status), and per common field which samples have data in only one.
    Shard layout, backend and feature bytes are not compared (verify checks the bytes)."""
    ca, cb = open_cache(a), open_cache(b)
    fa, fb = ca.fields, cb.fields
    common = sorted(set(fa) & set(fb))
    differ = {}
    for f in common:
        if fa[f]["fingerprint"] != fb[f]["fingerprint"]:
            keys = differing_keys(fa[f]["fingerprint_parts"], fb[f]["fingerprint_parts"]) or ["fingerprint"]
            keys.sort(key=lambda k: not k.startswith("options."))  # what the user set first, then what follows
            differ[f] = [
                {"key": k, "a": value_at(fa[f]["fingerprint_parts"], k), "b": value_at(fb[f]["fingerprint_parts"], k)}
                for k in keys
            ]
    ra = {r["key"]: r for r in ca.samples()}
    rb = {r["key"]: r for r in cb.samples()}

    def brief(r: dict) -> dict:
        return {"key": r["key"], "source": r["source"], "status": r["status"]}

    def order(rows):
        return sorted(rows, key=lambda r: (r["source"], r["key"]))

    status = [
        {"key": k, "source": ra[k]["source"], "a": ra[k]["status"], "b": rb[k]["status"]}
        for k in sorted(set(ra) & set(rb))
        if ra[k]["status"] != rb[k]["status"]
    ]
    data = {}
    both_ok = {k for k in set(ra) & set(rb) if ra[k]["status"] == rb[k]["status"] == "ok"}
    for f in common:
        if f in differ:
            continue
        ha, hb = _with_data(ca, f) & both_ok, _with_data(cb, f) & both_ok
        if ha != hb:
            data[f] = {"only_a": sorted(ha - hb), "only_b": sorted(hb - ha)}
    result = {
        "a": str(a),
        "b": str(b),
        "fields": {
            "only_a": sorted(set(fa) - set(fb)),
            "only_b": sorted(set(fb) - set(fa)),
            "differ": differ,
            "same": [f for f in common if f not in differ],
        },
        "samples": {
            "only_a": order(brief(ra[k]) for k in set(ra) - set(rb)),
            "only_b": order(brief(rb[k]) for k in set(rb) - set(ra)),
            "status_differs": status,
            "common": len(set(ra) & set(rb)),
        },
        "data": data,
        "backend": {"a": ca.backend, "b": cb.backend},
    }
    s, fl = result["samples"], result["fields"]
    result["identical"] = not (fl["only_a"] or fl["only_b"] or differ or s["only_a"] or s["only_b"] or status or data)
    return result


def _with_data(cache: Cache, name: str) -> set[str]:
    """Keys of ok samples that have data in field `name` (ok, with a file, not listed as missing)."""
    files = cache.fields[name]["files"]
    keys = set()
    for r in cache.samples("ok"):
        entry = files.get(r["shard"])
        if entry is not None and r["key"] not in entry["missing"]:
            keys.add(r["key"])
    return keys
