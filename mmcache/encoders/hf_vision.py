"""Vision encoders from transformers.

`hf-image` runs per frame: CLIP/SigLIP give their projected image features (get_image_features),
DINOv2/ViT (and other ViT-like backbones) their pooler_output, or the CLS token when the model has
no pooler. `hf-video` runs per clip: VideoMAE gives the mean of last_hidden_state over its tokens.

Resize and centre crop are done by ffmpeg with the sizes read off the model's image processor
(shortest_edge -> (s,), height/width -> (h, w)); rescale and mean/std normalisation are done in
torch and recorded in `preprocess`, so they are part of the fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import EncoderError
from ..types import ClipInput, FrameInput
from .base import COMMON_DEFAULTS, EncoderSpec
from .hf_common import from_pretrained, hf_versions
from .torch_common import TorchEncoder

IMAGE_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "openai/clip-vit-base-patch32",
    "fps": 1.0,
    "num_frames": None,
    "dtype": "float32",
    "normalize": False,
}
VIDEO_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "MCG-NJU/videomae-base",
    "fps": 8.0,
    "clip_len": None,
    "stride": None,
    "dtype": "float32",
    "batch_size": 4,
}  # clip_len None: config.num_frames
PROJECTED = {"clip", "siglip"}  # model types whose image features come from get_image_features


def _projection(module, x: torch.Tensor) -> torch.Tensor:
    out = module.get_image_features(pixel_values=x)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _pooler_output(module, x: torch.Tensor) -> torch.Tensor:
    return module(pixel_values=x).pooler_output


def _cls_token(module, x: torch.Tensor) -> torch.Tensor:
    return module(pixel_values=x).last_hidden_state[:, 0]


def _token_mean(module, x: torch.Tensor) -> torch.Tensor:
    return module(pixel_values=x).last_hidden_state.mean(1)


POOLS = {"projection": _projection, "pooler_output": _pooler_output, "cls": _cls_token, "token-mean": _token_mean}


def _get(size, key: str):
    """A key of a processor size: a plain dict in older transformers, a SizeDict in newer ones."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _config_image_size(config) -> int | None:
    size = getattr(config, "image_size", None) or getattr(getattr(config, "vision_config", None), "image_size", None)
    if isinstance(size, list | tuple):
        return int(size[0]) if len(set(size)) == 1 else None
    return int(size) if size else None


def frame_geometry(processor, config) -> tuple[tuple[int, ...], tuple[int, int]]:
    """(resize, crop) for ffmpeg from the image processor: shortest_edge -> (s,), height/width ->
    (h, w); crop from crop_size when the processor centre-crops, else the resized size (a square
    of the short side after a shortest_edge resize). Falls back to config.image_size."""
    size = processor.size if getattr(processor, "do_resize", True) else None
    short, h, w = _get(size, "shortest_edge"), _get(size, "height"), _get(size, "width")
    resize = (int(short),) if short else (int(h), int(w)) if h and w else None
    crop_size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    ch, cw = _get(crop_size, "height"), _get(crop_size, "width")
    if resize is None:
        n = _config_image_size(config)
        if n is None:
            raise EncoderError(
                f"cannot tell the input size of {type(processor).__name__} (size={size}); "
                "it needs size.shortest_edge or size.height/width"
            )
        resize = (n, n)
    crop = (int(ch), int(cw)) if ch and cw else resize if len(resize) == 2 else (resize[0], resize[0])
    return resize, crop


def normalisation(processor) -> tuple[tuple, tuple]:
    """(mean, std) to apply to pixels in [0, 1], folding in the processor's rescale factor:
    the processor computes (x * r - m) / s on 0..255 pixels, which is (x/255 - m/k) / (s/k), k = 255 r."""
    r = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    if getattr(processor, "do_normalize", True):
        mean, std = list(processor.image_mean), list(processor.image_std)
    else:
        mean, std = [0.0], [1.0]
    mean, std = mean * 3 if len(mean) == 1 else mean, std * 3 if len(std) == 1 else std
    k = 255.0 * r
    return tuple(float(m) / k for m in mean), tuple(float(s) / k for s in std)


@dataclass
class HFImageEncoder(TorchEncoder):
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    pool: str = "pooler_output"
    copies_payloads: ClassVar[bool] = True  # pixels() stacks them into its own buffer

    def encode(self, payloads: list) -> np.ndarray:
        return self.run(self.pixels(payloads, (0, 3, 1, 2), self.mean, self.std, channel_dim=1))  # (N, 3, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = POOLS[self.pool](self.module, x)
        if self.options.get("normalize"):
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats


@dataclass
class HFVideoEncoder(HFImageEncoder):
    pool: str = "token-mean"

    def encode(self, payloads: list) -> np.ndarray:
        return self.run(self.pixels(payloads, (0, 1, 4, 2, 3), self.mean, self.std, channel_dim=2))  # (N, T, 3, H, W)


def load_vision(model_id: str):
    """(config, image processor, model), loaded in float32 with a fixed seed, so that any weight
    the checkpoint lacks is initialised the same way every time (it is part of the weights hash)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    config = from_pretrained(AutoConfig, model_id, "config")
    processor = from_pretrained(AutoImageProcessor, model_id, "image processor")
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG state
        torch.manual_seed(0)
        model, info = from_pretrained(AutoModel, model_id, "model", dtype=torch.float32, output_loading_info=True)
    if getattr(model, "pooler", None) is not None and any(".pooler." in f".{k}" for k in info["missing_keys"]):
        model.pooler = None  # a pooler the checkpoint does not hold would be random: use the CLS token
    return config, processor, model


def _pooled_or_cls(model, model_id: str, crop: tuple[int, int]) -> str:
    """'pooler_output' when the model's output has one, else 'cls' (first token of last_hidden_state)."""
    try:
        with torch.inference_mode():
            out = model.eval()(pixel_values=torch.zeros(1, 3, *crop))
    except (RuntimeError, ValueError, TypeError) as e:
        raise EncoderError(
            f"hf-image: model {model_id!r} cannot encode a {crop} image "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    return "pooler_output" if getattr(out, "pooler_output", None) is not None else "cls"


def _probe(enc: TorchEncoder, shape: tuple) -> int:
    """Feature size from one zero input; a model that cannot run on it is an EncoderError."""
    try:
        out = enc.encode([np.zeros(shape, np.uint8)])
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise EncoderError(
            f"{enc.spec.name}: model {enc.options['model']!r} cannot encode a {shape} uint8 input "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    if out.ndim != 2:
        raise EncoderError(
            f"{enc.spec.name}: model {enc.options['model']!r} gives {out.shape[1:]} features per step, not a vector"
        )
    return int(out.shape[1])


def _preprocess(processor, config, resize, crop, mean, std, pool) -> dict:
    return {
        "processor": type(processor).__name__,
        "model_type": config.model_type,
        "resize": resize,
        "crop": crop,
        "mean": mean,
        "std": std,
        "pool": pool,
        "resampler": "ffmpeg scale bicubic",
        "processor_resample": str(getattr(processor, "resample", None)),
    }


def build_image(spec: EncoderSpec, field: str, opts: dict) -> HFImageEncoder:
    config, processor, model = load_vision(opts["model"])
    resize, crop = frame_geometry(processor, config)
    mean, std = normalisation(processor)
    pool = "projection" if config.model_type in PROJECTED else _pooled_or_cls(model, opts["model"], crop)
    grid = FrameInput(fps=opts["fps"], num_frames=opts["num_frames"], resize=resize, crop=crop)
    enc = HFImageEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        mean=mean,
        std=std,
        pool=pool,
        preprocess=_preprocess(processor, config, resize, crop, mean, std, pool),
        versions=hf_versions(),
    )
    enc.setup(model)
    enc.dim = _probe(enc, (*crop, 3))
    return enc


def build_video(spec: EncoderSpec, field: str, opts: dict) -> HFVideoEncoder:
    config, processor, model = load_vision(opts["model"])
    num_frames = getattr(config, "num_frames", None)
    clip_len = opts["clip_len"] or num_frames
    if clip_len is None:
        raise EncoderError(f"{spec.name}: model {opts['model']!r} has no config.num_frames; pass clip_len=N")
    if num_frames and clip_len != num_frames:
        raise EncoderError(
            f"{spec.name}: model {opts['model']!r} takes clips of exactly {num_frames} frames "
            f"(config.num_frames), not clip_len={clip_len}"
        )
    resize, crop = frame_geometry(processor, config)
    mean, std = normalisation(processor)
    # options keep None (as given): the resolved clip_len/stride are in the input spec, so in the fingerprint
    grid = ClipInput(fps=opts["fps"], clip_len=clip_len, stride=opts["stride"] or clip_len, resize=resize, crop=crop)
    enc = HFVideoEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        mean=mean,
        std=std,
        pool="token-mean",
        preprocess=_preprocess(processor, config, resize, crop, mean, std, "token-mean"),
        versions=hf_versions(),
    )
    enc.setup(model)
    enc.dim = _probe(enc, (clip_len, *crop, 3))
    return enc


WEIGHTS = "hub id or local dir (from_pretrained)"

SPECS = {
    "hf-image": EncoderSpec(
        "hf-image",
        "transformers-image",
        "vision",
        build_image,
        IMAGE_DEFAULTS,
        "transformers image model (model=ID|DIR), per frame: CLIP/SigLIP projected image "
        "features, DINOv2/ViT pooler output or CLS token",
        None,
        WEIGHTS,
    ),
    "hf-video": EncoderSpec(
        "hf-video",
        "transformers-video",
        "vision",
        build_video,
        VIDEO_DEFAULTS,
        "transformers video model (model=ID|DIR), per clip: VideoMAE mean over tokens "
        "(clip_len defaults to config.num_frames)",
        None,
        WEIGHTS,
    ),
}
