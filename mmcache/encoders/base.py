"""What every encoder is: a spec (name, defaults, build) and a built encoder (input, dim, encode).

An encoder is chosen on the command line as `NAME` or `NAME:key=value,key=value`; the options are
checked against the spec's accepted names and schemas/encoder-options.schema.json.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import EncoderError
from ..schema import load_schema
from ..store.manifest import fingerprint_of
from ..types import InputSpec

FORMAT_VERSION = 1
COMMON_DEFAULTS = {"device": "auto", "batch_size": 32, "store_dtype": "float16", "decoders": "auto"}
# where and how the numbers are computed, never which numbers: left out of the fingerprint
NOT_FINGERPRINTED = ("device", "batch_size", "decoders", "field")


@dataclass(frozen=True)
class EncoderSpec:
    """A registry entry: enough to list it and to build it."""

    name: str
    family: str
    modality: str  # vision | audio | text
    build: Callable[[EncoderSpec, str, dict], Encoder]  # (spec, field name, options) -> Encoder
    defaults: dict  # every option a user may set, with its default
    summary: str
    dim: int | None = None  # known output size, None when it depends on the model
    weights: str = "none"  # where weights come from, for `mmcache encoders`
    fixed: dict = field(default_factory=dict)  # options a preset pins (e.g. model=resnet18)

    def grid(self) -> str:
        """The default time grid as a short text."""
        d = self.defaults
        if "clip_len" in d:
            return (
                f"clips of {d['clip_len'] or 'config.num_frames'} @ {d['fps']} fps, stride {d['stride'] or 'clip_len'}"
            )
        if "window" in d:
            return f"{d['fps']} steps/s, {d['window']} s windows"
        if "fps" in d:
            return f"{d['fps']} frames/s"
        return "one step per text cue"


@dataclass
class Encoder:
    """A built encoder. Subclasses set `dim` and implement `encode`."""

    field: str
    spec: EncoderSpec
    options: dict
    input: InputSpec
    dim: int = 0
    preprocess: dict = field(default_factory=dict)  # numerics of preprocessing, for the fingerprint
    weights_sha256: str = "none"
    versions: dict = field(default_factory=dict)
    # True where `encode` copies its payloads and keeps no reference to them: the pipeline then gives
    # the decoded arrays back to the decoder for reuse (decode.FramePool)
    copies_payloads: ClassVar[bool] = False

    @property
    def batch_size(self) -> int:
        return int(self.options["batch_size"])

    @property
    def store_dtype(self) -> str:
        return self.options["store_dtype"]

    def encode(self, payloads: list) -> np.ndarray:
        """(N,) payloads -> (N, dim) float32."""
        raise NotImplementedError

    def fingerprint_parts(self) -> dict:
        """Everything that decides the numbers in this field (never the device it ran on)."""
        opts = {k: _portable(v) for k, v in self.options.items() if k not in NOT_FINGERPRINTED}
        from ..probe import ffmpeg_version

        return {
            "format_version": FORMAT_VERSION,
            "encoder": self.spec.name,
            "family": self.spec.family,
            "options": opts,
            "input": asdict(self.input),
            "preprocess": self.preprocess,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "versions": {
                "ffmpeg": ffmpeg_version(),
                "numpy": np.__version__,
                "python": platform.python_version()[:4].rstrip("."),
                **self.versions,
            },
        }

    def fingerprint(self) -> str:
        return fingerprint_of(self.fingerprint_parts())


def _portable(value):
    """A local path is recorded as 'local-path': the weights hash identifies the weights, and two
    colleagues with the same weights in different folders get the same fingerprint."""
    if isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).exists():
        return "local-path"
    return value


def resolve_options(spec: EncoderSpec, given: dict) -> dict:
    """Defaults + given, after checking names against the spec and values against the schema."""
    allowed = spec.defaults
    unknown = sorted(set(given) - set(allowed) - {"field"})
    if unknown:
        raise EncoderError(
            f"encoder {spec.name}: unknown option {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}, field"
        )
    schema = load_schema("encoder-options")["properties"]
    import jsonschema

    for key, value in given.items():
        try:
            jsonschema.validate(value, schema[key])
        except jsonschema.ValidationError as e:
            # "x-allowed": a property's own wording, for one whose sub-schemas say it only in part (decoders)
            hint = (
                schema[key].get("x-allowed") or e.schema.get("enum") or e.schema.get("pattern") or e.schema.get("type")
            )
            raise EncoderError(
                f"encoder {spec.name}: option {key}={value!r} is invalid: {e.message} (allowed: {hint})"
            ) from None
    opts = {**allowed, **given, **spec.fixed}
    if "num_frames" in given:
        opts["fps"] = None
    return opts


def resolve_device(name: str) -> str:
    from ..runtime import torch_device

    return torch_device(name)
