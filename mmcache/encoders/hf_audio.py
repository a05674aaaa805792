"""Audio encoders from transformers, one audio window per step (the same timeline as the vision grid).

AST: ASTFeatureExtractor log-mel fbank -> pooler_output (mean of the CLS and distillation tokens).
Wav2Vec2 / HuBERT: the feature extractor's per-window normalisation -> mean of last_hidden_state.
Whisper: WhisperFeatureExtractor log-mel padded to the model's 30 s input -> the encoder only
(model.get_encoder()) -> mean over the encoder frames that hold real audio, never the padding.

The feature extractor's sampling_rate is the decode rate (ffmpeg resamples); a window longer than
the model's fixed input (AST max_length frames, Whisper chunk_length) is refused, not truncated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import EncoderError
from ..types import AudioInput
from .base import COMMON_DEFAULTS, EncoderSpec
from .hf_common import from_pretrained, hf_versions
from .torch_common import TorchEncoder

AUDIO_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "MIT/ast-finetuned-audioset-10-10-0.4593",
    "sample_rate": None,
    "fps": 1.0,
    "window": 1.0,
    "dtype": "float32",
    "batch_size": 16,
}  # sample_rate None: extractor's


def _pooler_output(module, batch: dict) -> torch.Tensor:
    return module(**batch).pooler_output


def _frame_mean(module, batch: dict) -> torch.Tensor:
    return module(**batch).last_hidden_state.mean(1)


def _real_frame_mean(module, batch: dict) -> torch.Tensor:
    """Whisper: mean over encoder frames whose mel frames hold audio (attention_mask from the extractor)."""
    hidden = module(input_features=batch["input_features"]).last_hidden_state  # (N, L, H)
    n = module._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).clamp(1, hidden.shape[1])
    keep = (torch.arange(hidden.shape[1], device=hidden.device)[None] < n[:, None]).unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1)


POOLS = {"pooler_output": _pooler_output, "frame-mean": _frame_mean, "real-frame-mean": _real_frame_mean}


def _ast_seconds(fe) -> float:
    return (fe.max_length - 1) * 0.010 + 0.025  # 25 ms fbank frames every 10 ms


def _whisper_seconds(fe) -> float:
    return fe.n_samples / fe.sampling_rate


@dataclass(frozen=True)
class AudioFamily:
    pool: str  # a key of POOLS
    encoder_only: bool = False  # run model.get_encoder() (seq2seq models)
    extractor_kwargs: dict = field(default_factory=dict)
    max_seconds: Callable[[object], float] | None = None  # longest window the model's fixed input holds


FAMILIES = {  # by config.model_type
    "audio-spectrogram-transformer": AudioFamily("pooler_output", max_seconds=_ast_seconds),
    "wav2vec2": AudioFamily("frame-mean"),
    "hubert": AudioFamily("frame-mean"),
    "whisper": AudioFamily(
        "real-frame-mean",
        encoder_only=True,
        extractor_kwargs={"return_attention_mask": True},
        max_seconds=_whisper_seconds,
    ),
}


@dataclass
class HFAudioEncoder(TorchEncoder):
    extractor: object = None
    family: AudioFamily | None = None

    def encode(self, payloads: list) -> np.ndarray:
        batch = self.extractor(
            [np.asarray(p, np.float32) for p in payloads],
            sampling_rate=self.input.sample_rate,
            return_tensors="pt",
            **self.family.extractor_kwargs,
        )
        return self.run({k: v.to(self.device) for k, v in batch.items()})

    def forward(self, batch: dict) -> torch.Tensor:
        return POOLS[self.family.pool](self.module, batch)


def _extractor_numerics(fe) -> dict:
    """The feature extractor's scalar settings (arrays such as mel filters follow from them)."""
    return {
        k: v
        for k, v in sorted(fe.to_dict().items())
        if isinstance(v, bool | int | float | str) and not (isinstance(v, float) and not np.isfinite(v))
    }


def build_audio(spec: EncoderSpec, field: str, opts: dict) -> HFAudioEncoder:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    config = from_pretrained(AutoConfig, opts["model"], "config")
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise EncoderError(
            f"{spec.name}: model {opts['model']!r} is a {config.model_type!r} model; "
            f"supported model types: {', '.join(sorted(FAMILIES))}"
        )
    fe = from_pretrained(AutoFeatureExtractor, opts["model"], "feature extractor")
    sr = int(fe.sampling_rate)
    if opts["sample_rate"] not in (None, sr):
        raise EncoderError(
            f"{spec.name}: model {opts['model']!r} takes {sr} Hz audio, not sample_rate="
            f"{opts['sample_rate']} (omit sample_rate: audio is resampled to {sr} Hz)"
        )
    longest = family.max_seconds(fe) if family.max_seconds else None
    if longest is not None and opts["window"] > longest + 1e-9:
        raise EncoderError(
            f"{spec.name}: window={opts['window']} s is longer than the {longest:g} s of audio "
            f"model {opts['model']!r} takes per input; use window<={longest:g}"
        )
    with torch.random.fork_rng(devices=[]):  # weights a checkpoint lacks are initialised the same each time
        torch.manual_seed(0)
        model = from_pretrained(AutoModel, opts["model"], "model", dtype=torch.float32)
    module = model.get_encoder() if family.encoder_only else model
    grid = AudioInput(sample_rate=sr, fps=opts["fps"], window=opts["window"])
    enc = HFAudioEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=grid,
        extractor=fe,
        family=family,
        preprocess={
            "feature_extractor": type(fe).__name__,
            "model_type": config.model_type,
            "pool": family.pool,
            "encoder_only": family.encoder_only,
            "extractor": _extractor_numerics(fe),
        },
        versions=hf_versions(),
    )
    enc.setup(module)
    try:
        enc.dim = int(enc.encode([np.zeros(int(round(opts["window"] * sr)), np.float32)]).shape[1])
    except (RuntimeError, ValueError) as e:
        raise EncoderError(
            f"{spec.name}: model {opts['model']!r} cannot encode a {opts['window']} s window "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    return enc


SPECS = {
    "hf-audio": EncoderSpec(
        "hf-audio",
        "transformers-audio",
        "audio",
        build_audio,
        AUDIO_DEFAULTS,
        "transformers audio model (model=ID|DIR), per window: AST pooler output, "
        "Wav2Vec2/HuBERT frame mean, Whisper encoder mean over real audio",
        None,
        "hub id or local dir (from_pretrained)",
    ),
}
