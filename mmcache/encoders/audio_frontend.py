"""Weight-free audio front ends from torchaudio.transforms: log-mel and MFCC.

Each step is one audio window on the same timeline as the vision grid (fps steps per second);
the feature is the mean over the window's spectrogram frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from ..types import AudioInput
from .base import COMMON_DEFAULTS, EncoderSpec
from .torch_common import TorchEncoder

N_FFT_SECONDS, HOP_SECONDS = 0.025, 0.010  # 25 ms windows, 10 ms hop: the usual speech front end
AUDIO_DEFAULTS = {**COMMON_DEFAULTS, "sample_rate": 16000, "fps": 1.0, "window": 1.0, "batch_size": 64}


@dataclass
class FrontEndEncoder(TorchEncoder):
    log: bool = True

    def encode(self, payloads: list) -> np.ndarray:
        x = self.to_device(np.stack(payloads))  # (N, samples)
        return self.run(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 1, samples): torchaudio's MFCC clamps dB to top_db below the max of each item's (C, F, T)
        # block; without the channel axis that max would span the whole batch, coupling videos
        spec = self.module(x.unsqueeze(1)).squeeze(1)  # (N, bins, frames)
        if self.log:
            spec = torch.log(spec + 1e-6)
        return spec.mean(dim=-1)  # (N, bins)


def _stft_args(sr: int) -> dict:
    n_fft = int(round(N_FFT_SECONDS * sr))
    return {"n_fft": n_fft, "win_length": n_fft, "hop_length": int(round(HOP_SECONDS * sr))}


def build_logmel(spec: EncoderSpec, field: str, opts: dict) -> FrontEndEncoder:
    sr = opts["sample_rate"]
    args = {**_stft_args(sr), "n_mels": opts["n_mels"], "power": 2.0}
    module = torchaudio.transforms.MelSpectrogram(sample_rate=sr, **args)
    return _finish(
        spec,
        field,
        opts,
        module,
        opts["n_mels"],
        {"transform": "MelSpectrogram", **args, "log": "ln(x+1e-6)", "pool": "mean"},
        True,
    )


def build_mfcc(spec: EncoderSpec, field: str, opts: dict) -> FrontEndEncoder:
    sr = opts["sample_rate"]
    melkwargs = {**_stft_args(sr), "n_mels": opts["n_mels"]}
    module = torchaudio.transforms.MFCC(sample_rate=sr, n_mfcc=opts["n_mfcc"], melkwargs=melkwargs)
    return _finish(
        spec,
        field,
        opts,
        module,
        opts["n_mfcc"],
        {"transform": "MFCC", **melkwargs, "n_mfcc": opts["n_mfcc"], "pool": "mean", "top_db_scope": "per item"},
        False,
    )


def _finish(spec, field, opts, module, dim, preprocess, log) -> FrontEndEncoder:
    grid = AudioInput(sample_rate=opts["sample_rate"], fps=opts["fps"], window=opts["window"])
    enc = FrontEndEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        dim=dim,
        log=log,
        preprocess=preprocess,
        versions={"torch": torch.__version__, "torchaudio": torchaudio.__version__},
    )
    enc.setup(module)
    return enc


SPECS = {
    "logmel": EncoderSpec(
        "logmel",
        "audio-frontend",
        "audio",
        build_logmel,
        {**AUDIO_DEFAULTS, "n_mels": 64},
        "log-mel spectrogram, mean per window",
        64,
    ),
    "mfcc": EncoderSpec(
        "mfcc",
        "audio-frontend",
        "audio",
        build_mfcc,
        {**AUDIO_DEFAULTS, "n_mels": 64, "n_mfcc": 20},
        "MFCC, mean per window",
        20,
    ),
}
