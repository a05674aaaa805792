"""Pieces shared by the torch-based encoder families: weights, heads, devices, hashing."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EncoderError
from .base import Encoder, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def state_dict_sha256(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def drop_classifier(module: nn.Module, head: str | None = None) -> int:
    """Replace the classifier with Identity so the model returns pooled penultimate features.

    `head` names a submodule to replace whole (e.g. S3D's conv classifier); otherwise the last
    nn.Linear is replaced. Returns the feature size when it can be read off the layer, else 0.
    """
    if head is not None:
        setattr(module, head, nn.Identity())
        return 0
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EncoderError(f"{type(module).__name__} has no linear classifier to remove")
    name, layer = linears[-1]
    parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return layer.in_features


def load_state_dict_file(path: Path) -> dict:
    """A local .pt/.pth (loaded weights_only) or .safetensors file."""
    if not path.is_file():
        raise EncoderError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal or format error
        raise EncoderError(f"weights file {path} is not a plain state dict: {e}") from e
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def torch_versions() -> dict:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


@dataclass
class TorchEncoder(Encoder):
    """A frozen nn.Module run under inference_mode, with optional autocast and channels_last."""

    module: nn.Module | None = None

    def setup(self, module: nn.Module) -> None:
        self.device = resolve_device(self.options["device"])
        self.autocast = DTYPES[self.options.get("dtype", "float32")]
        self.channels_last = bool(self.options.get("channels_last", False))
        module = module.eval().requires_grad_(False)
        self.weights_sha256 = state_dict_sha256(module)
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module

    def run(self, *args, **kwargs) -> np.ndarray:
        ctx = (
            torch.autocast(torch.device(self.device).type, dtype=self.autocast)
            if self.autocast != torch.float32
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), ctx:
            out = self.forward(*args, **kwargs)
        return out.float().cpu().numpy()

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.module(*args, **kwargs)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """The batch on the encoder's device. On CUDA it is copied into page-locked memory and sent
        with a non-blocking copy, so this thread goes on queuing the normalisation and forward kernels
        (which the stream runs after the copy) instead of waiting for the transfer; nothing before the
        result's `.cpu()` synchronises (the normalisation constants live on the device). Pinning is
        only done for CUDA: on CPU it would be a useless copy, and other devices do not use it."""
        t = torch.from_numpy(array)
        kind = torch.device(self.device).type
        if kind == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t if kind == "cpu" else t.to(self.device)

    def const(self, values, shape: list[int], device: torch.device) -> torch.Tensor:
        """A float32 constant on `device`, made once: torch.tensor(list, device=cuda) copies from
        pageable memory, which waits for the stream, i.e. for the batch's copy, every batch."""
        key = (tuple(values), tuple(shape), str(device))
        consts = self.__dict__.setdefault("_consts", {})
        if key not in consts:
            consts[key] = torch.tensor(values, dtype=torch.float32).view(shape).to(device)
        return consts[key]

    def pixels(self, payloads: list, order: tuple[int, ...], mean, std, channel_dim: int) -> torch.Tensor:
        """The batch of uint8 frames (or clips) `payloads`, stacked, on the device, its axes put in
        `order`, normalised by `mean` and `std` along `channel_dim`: what `normalise(to_device(
        np.stack(payloads)).permute(order), ...)` gives, value for value, without allocating.

        Both the stacked uint8 batch and the float32 batch live in buffers kept from one batch to
        the next (the first batch's size; a smaller last batch uses their first rows), and the
        normalisation runs in place. Allocated afresh, these are about 100 MB per batch of 32 frames
        at 224x224, freed each batch: with glibc's malloc, mid-sized blocks freed and allocated
        again every batch are what made a long extraction's heap grow with the video's length. The
        model's output never aliases its input, so reusing the input between batches is safe (on
        CUDA, each batch's result is copied back, which waits for the batch, before the next)."""
        first = np.asarray(payloads[0])
        n = len(payloads)
        stage = self._reused_array("stage", (n, *first.shape), first.dtype)
        np.stack(payloads, out=stage)
        x = self.to_device(stage).permute(order)
        # the strides x.float() would give, so that the model sees the same memory layout as before
        out = self._reused_tensor("pixels", x)
        out.copy_(x)
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        out.div_(255).sub_(self.const(mean, shape, x.device)).div_(self.const(std, shape, x.device))
        return out

    def _reused_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A host array of `shape`: the first rows of the one kept under `name`, made anew when its
        trailing shape, its dtype or a larger first dimension is asked for."""
        kept = self.__dict__.setdefault("_reused", {})
        buf = kept.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = kept[name] = np.empty(shape, dtype)
        return buf[: shape[0]]

    def _reused_tensor(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A float32 tensor shaped and laid out like `like` (x.float()'s strides), on its device: the
        first rows of the one kept under `name` when that one fits."""
        kept = self.__dict__.setdefault("_reused", {})
        order = sorted(range(like.dim()), key=lambda d: -like.stride(d))  # outermost axis first
        key = (tuple(like.shape[1:]), tuple(order), str(like.device))
        buf, buf_key = kept.get(name, (None, None))
        if buf is None or buf_key != key or buf.shape[0] < like.shape[0]:
            dense = torch.empty([like.shape[d] for d in order], dtype=torch.float32, device=like.device)
            buf = dense.permute([order.index(d) for d in range(like.dim())])
            kept[name] = (buf, key)
        return buf[: like.shape[0]]

    def normalise(self, x: torch.Tensor, mean, std, channel_dim: int) -> torch.Tensor:
        """uint8 -> float in [0,1] -> (x - mean) / std along `channel_dim`."""
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        m = self.const(mean, shape, x.device)
        s = self.const(std, shape, x.device)
        return (x.float() / 255 - m) / s
