"""The encoder registry: a literal dict from name to spec, one module per family.

A new encoder is one module holding its specs and build functions, plus one line here.
"""

from __future__ import annotations

import re

from ..errors import EncoderError
from ..memory import bound_heap
from . import audio_frontend, hf_audio, hf_text, hf_vision, torchvision_models
from .base import Encoder, EncoderSpec, parse_encoder_arg, resolve_options

REGISTRY: dict[str, EncoderSpec] = {
    **torchvision_models.SPECS,
    **audio_frontend.SPECS,
    **hf_text.SPECS,
    **hf_vision.SPECS,
    **hf_audio.SPECS,
}


def get_spec(name: str) -> EncoderSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


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
    bound_heap()  # an encoder runs batch after batch: keep its freed activations from fragmenting the heap
    return spec.build(spec, field, opts)


__all__ = ["REGISTRY", "Encoder", "EncoderSpec", "build_encoder", "check_encoder_arg", "get_spec"]
