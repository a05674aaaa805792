"""Encoder arguments, 'NAME:k=v,...': the one parser and formatter of them (the CLI's `-e`, the
workflow's config, mmfit's rebuilding of a model's fields). Importing this imports no encoder family
(no torch): the workflow's Snakefile uses it."""

from __future__ import annotations

import yaml

from ..errors import EncoderError


def parse_encoder_arg(text: str) -> tuple[str, dict]:
    """'resnet18:fps=2,dtype=bfloat16' -> ('resnet18', {'fps': 2, 'dtype': 'bfloat16'})."""
    name, _, rest = text.partition(":")
    opts = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EncoderError(f"encoder option {item!r} in {text!r} is not key=value")
        opts[key.strip()] = _scalar(value.strip())
    return name.strip(), opts


def format_encoder_arg(name: str, opts: dict) -> str:
    """The inverse of parse_encoder_arg: ('resnet18', {'fps': 2, 'tta': True}) -> 'resnet18:fps=2,tta=true'
    (options in the given order)."""
    text = ",".join(f"{k}={_text(v)}" for k, v in opts.items())
    return f"{name}:{text}" if text else name


def _scalar(value: str):
    """YAML scalar rules for option values: 2 -> int, 0.5 -> float, true -> bool, else str."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, int | float | bool | str) else value


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
