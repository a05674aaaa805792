"""The encoder registry: name -> spec, one module per family.

A new encoder is one module holding its specs and build functions, plus one line in FAMILIES. The
families (torch, transformers) are imported when the registry is first used, so that importing
`mmcache.encoders.args` (the argument parser the workflow uses) stays light.
"""

from __future__ import annotations

import functools
import importlib
import re

from ..errors import EncoderError, did_you_mean
from ..runtime import bound_heap
from .args import format_encoder_arg, parse_encoder_arg
from .base import Encoder, EncoderSpec, resolve_options

FAMILIES = ("torchvision_models", "audio_frontend", "hf_text", "hf_vision", "hf_audio")  # modules with SPECS


@functools.cache
def registry() -> dict[str, EncoderSpec]:
    """Every encoder spec by name, from each family's SPECS."""
    specs: dict[str, EncoderSpec] = {}
    for family in FAMILIES:
        specs.update(importlib.import_module(f".{family}", __name__).SPECS)
    return specs


def __getattr__(name: str):
    if name == "REGISTRY":  # `from mmcache.encoders import REGISTRY`: the registry, built on first use
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_spec(name: str) -> EncoderSpec:
    try:
        return registry()[name]
    except KeyError:
        known = sorted(registry())
        raise EncoderError(f"unknown encoder {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}") from None


def check_encoder_arg(text: str) -> tuple[EncoderSpec, str, dict]:
    """Parse and validate 'NAME:k=v,...' without building anything: (spec, field, options)."""
    name, given = parse_encoder_arg(text)
    spec = get_spec(name)
    opts = resolve_options(spec, given)
    return spec, given.get("field") or default_field(name, given), opts


def default_field(name: str, given: dict) -> str:
    """The encoder name, or for a generic family the model's last path part ('resnet50')."""
    model = given.get("model")
    if not model:
        return name
    tail = str(model).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9_-]+", "-", tail).strip("-_")[:64] or name


def build_encoder(text: str) -> Encoder:
    """Build the encoder named by 'NAME:k=v,...' (loads weights)."""
    spec, field, opts = check_encoder_arg(text)
    bound_heap()  # MMCACHE_MMAP_THRESHOLD, when set (mmcache/runtime.py)
    return spec.build(spec, field, opts)


def encoder_arg(name: str, entry: dict) -> str:
    """The NAME:k=v,... that rebuilds field `name` from its manifest entry (options + field name)."""
    fixed = get_spec(entry["encoder"]).fixed  # a preset's pinned options are not user options
    opts = {k: v for k, v in sorted(entry["options"].items()) if v is not None and k not in fixed}
    return format_encoder_arg(entry["encoder"], dict(sorted({**opts, "field": name}.items())))


__all__ = [
    "REGISTRY",
    "Encoder",
    "EncoderSpec",
    "build_encoder",
    "check_encoder_arg",
    "encoder_arg",
    "format_encoder_arg",
    "get_spec",
    "parse_encoder_arg",
    "registry",
]
