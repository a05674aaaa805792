"""JSON Schemas shipped with the package (the repo's schemas/ folder, installed as mmcache_schemas)."""

from __future__ import annotations

import functools
import json
from importlib import resources

import jsonschema

from .errors import MMCacheError, did_you_mean


@functools.cache
def load_schema(name: str) -> dict:
    """`name` without the suffix, e.g. 'cache-manifest'."""
    text = resources.files("mmcache_schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def schema_errors(obj: object, name: str) -> list[str]:
    """Every violation as 'where: what', sorted by location; empty when valid."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    errs = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}{_hint(e)}" for e in errs]


def _hint(e: jsonschema.ValidationError) -> str:
    """A 'did you mean' for a misspelt choice or option name."""
    if e.validator == "enum":
        return did_you_mean(e.instance, e.validator_value)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        known = set(e.schema.get("properties", {}))
        return "".join(did_you_mean(k, known) for k in e.instance if k not in known)[:200]
    return ""


def validate(obj: object, name: str, what: str, error: type[MMCacheError] = MMCacheError) -> None:
    """Raise `error` naming `what` and the first violation."""
    errs = schema_errors(obj, name)
    if errs:
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise error(f"{what} does not match schema {name}: {errs[0]}{more}")
