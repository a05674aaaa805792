"""torchvision classification models as frozen feature extractors.

Image models run per frame on a FrameInput grid; video models (r3d_18, r2plus1d_18, mc3_18, s3d,
mvit_v2_s, swin3d_t) run per clip on a ClipInput grid. Both return the pooled penultimate layer.
Weights: a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...), a local state-dict file, or
`random` (seeded, so a random encoder is still reproducible).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from ..errors import EncoderError
from ..types import ClipInput, FrameInput
from .base import COMMON_DEFAULTS, EncoderSpec
from .torch_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchEncoder,
    drop_classifier,
    load_state_dict_file,
    torch_versions,
)

VIDEO_MODELS = ("r3d_18", "r2plus1d_18", "mc3_18", "s3d", "mvit_v2_s", "swin3d_t")
HEADS = {"s3d": "classifier"}  # heads that are not a final nn.Linear
IMAGE_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "resnet50",
    "weights": "DEFAULT",
    "fps": 1.0,
    "num_frames": None,
    "dtype": "float32",
    "channels_last": False,
}
VIDEO_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "r3d_18",
    "weights": "DEFAULT",
    "fps": 16.0,
    "clip_len": 16,
    "stride": 16,
    "dtype": "float32",
    "batch_size": 4,
}


def _weights_enum(model: str):
    try:
        return get_model_weights(model)
    except (ValueError, KeyError):
        return None


def _named_weights(model: str, name: str):
    enum = _weights_enum(model)
    if enum is None:
        raise EncoderError(
            f"torchvision model {model!r} has no published weights; use weights=random "
            "or weights=/path/to/state_dict.pth"
        )
    if name == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[name]
    except KeyError:
        allowed = ", ".join(["DEFAULT", *enum.__members__, "random", "<state-dict path>"])
        raise EncoderError(f"unknown weights {name!r} for {model}; allowed: {allowed}") from None


def cached_weights_or_random(model: str) -> str:
    """'DEFAULT' when the model's default weights are already in the torch hub cache, else 'random'."""
    enum = _weights_enum(model)
    if enum is None:
        return "random"
    return (
        "DEFAULT" if (Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.DEFAULT.url).name).is_file() else "random"
    )


def _ensure_downloaded(weights) -> None:
    """Fetch into the torch hub cache, or fail saying how to provide the file offline."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if target.is_file():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(target), progress=False)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise EncoderError(
            f"weights {weights} are not in the torch hub cache and could not be downloaded ({e}). "
            f"Copy {Path(weights.url).name} from a connected machine to {target}, "
            "or pass weights=/path/to/state_dict.pth, or weights=random"
        ) from None


def build_model(model: str, weights: str) -> tuple[torch.nn.Module, object]:
    """The nn.Module with its weights, and the torchvision weights entry (for transforms)."""
    if model not in torchvision.models.list_models():
        raise EncoderError(f"unknown torchvision model {model!r}; see torchvision.models.list_models()")
    enum = _weights_enum(model)
    if weights == "random" or Path(weights).suffix in (".pt", ".pth", ".safetensors"):
        torch.manual_seed(0)
        net = get_model(model, weights=None)
        if weights != "random":
            try:
                net.load_state_dict(load_state_dict_file(Path(weights)))
            except RuntimeError as e:
                raise EncoderError(f"weights file {weights} does not fit {model}: {str(e)[:300]}") from None
        return net, (enum.DEFAULT if enum is not None else None)
    w = _named_weights(model, weights)
    _ensure_downloaded(w)
    return get_model(model, weights=w), w


def _transforms(entry, resize_default, crop_default, mean_default=IMAGENET_MEAN, std_default=IMAGENET_STD):
    if entry is None:
        return resize_default, crop_default, mean_default, std_default
    t = entry.transforms()
    crop = tuple(t.crop_size) * (2 if len(t.crop_size) == 1 else 1)
    return tuple(t.resize_size), crop, tuple(t.mean), tuple(t.std)


@dataclass
class ImageEncoder(TorchEncoder):
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    copies_payloads: ClassVar[bool] = True  # pixels() stacks them into its own buffer

    def encode(self, payloads: list) -> np.ndarray:
        x = self.pixels(payloads, (0, 3, 1, 2), self.mean, self.std, channel_dim=1)  # (N, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run(x)


@dataclass
class VideoEncoder(TorchEncoder):
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    copies_payloads: ClassVar[bool] = True  # pixels() stacks them into its own buffer

    def encode(self, payloads: list) -> np.ndarray:
        return self.run(self.pixels(payloads, (0, 4, 1, 2, 3), self.mean, self.std, channel_dim=1))  # (N, 3, T, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).flatten(1)


def _probe_dim(encoder: TorchEncoder, shape: tuple) -> int:
    return int(encoder.encode([np.zeros(shape, np.uint8)]).shape[1])


def build_image(spec: EncoderSpec, field: str, opts: dict) -> ImageEncoder:
    net, entry = build_model(opts["model"], opts["weights"])
    dim = drop_classifier(net)
    resize, crop, mean, std = _transforms(entry, (256,), (224, 224))
    grid = FrameInput(fps=opts["fps"], num_frames=opts["num_frames"], resize=resize, crop=crop)
    enc = ImageEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        mean=mean,
        std=std,
        preprocess={"resize": resize, "crop": crop, "mean": mean, "std": std, "resampler": "ffmpeg scale bicubic"},
        versions=torch_versions(),
    )
    enc.setup(net)
    enc.dim = dim or _probe_dim(enc, (*crop, 3))
    return enc


def build_video(spec: EncoderSpec, field: str, opts: dict) -> VideoEncoder:
    if opts["model"] not in VIDEO_MODELS:
        raise EncoderError(
            f"option model={opts['model']!r} is not a torchvision video model; allowed: {', '.join(VIDEO_MODELS)}"
        )
    net, entry = build_model(opts["model"], opts["weights"])
    dim = drop_classifier(net, HEADS.get(opts["model"]))
    resize, crop, mean, std = _transforms(entry, (128, 171), (112, 112))
    grid = ClipInput(fps=opts["fps"], clip_len=opts["clip_len"], stride=opts["stride"], resize=resize, crop=crop)
    enc = VideoEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        mean=mean,
        std=std,
        preprocess={"resize": resize, "crop": crop, "mean": mean, "std": std, "resampler": "ffmpeg scale bicubic"},
        versions=torch_versions(),
    )
    enc.setup(net)
    try:  # a probe clip checks that the model accepts this clip shape before any video is decoded
        probed = _probe_dim(enc, (opts["clip_len"], *crop, 3))
    except RuntimeError as e:
        raise EncoderError(
            f"{opts['model']} cannot take clips of {opts['clip_len']} frames at {crop[0]}x{crop[1]} "
            f"({str(e).splitlines()[0][:120]}); mvit_v2_s needs exactly 16 frames, s3d about 14 or more"
        ) from None
    enc.dim = dim or probed
    return enc


WEIGHTS_SOURCE = "torchvision weights (DEFAULT), state-dict file, or random"


def _spec(name: str, family: str, build, defaults: dict, model: str | None, dim: int | None, what: str) -> EncoderSpec:
    """A generic entry (model is an option) or a preset (model pinned)."""
    if model is None:
        return EncoderSpec(name, family, "vision", build, defaults, what, dim, WEIGHTS_SOURCE)
    preset = {k: v for k, v in defaults.items() if k != "model"}
    return EncoderSpec(
        name, family, "vision", build, preset, f"torchvision {model}", dim, WEIGHTS_SOURCE, fixed={"model": model}
    )


def image_spec(name: str, model: str | None = None, dim: int | None = None) -> EncoderSpec:
    return _spec(
        name,
        "torchvision-image",
        build_image,
        IMAGE_DEFAULTS,
        model,
        dim,
        "any torchvision image classifier (model=NAME), per frame",
    )


def video_spec(name: str, model: str | None = None, dim: int | None = None) -> EncoderSpec:
    return _spec(
        name,
        "torchvision-video",
        build_video,
        VIDEO_DEFAULTS,
        model,
        dim,
        f"torchvision video model (model={'|'.join(VIDEO_MODELS)}), per clip",
    )


SPECS = {
    "torchvision-image": image_spec("torchvision-image"),
    "resnet18": image_spec("resnet18", "resnet18", 512),
    "resnet50": image_spec("resnet50", "resnet50", 2048),
    "efficientnet_b0": image_spec("efficientnet_b0", "efficientnet_b0", 1280),
    "torchvision-video": video_spec("torchvision-video"),
    "r3d_18": video_spec("r3d_18", "r3d_18", 512),
    "r2plus1d_18": video_spec("r2plus1d_18", "r2plus1d_18", 512),
}
