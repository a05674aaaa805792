"""Model = fusion (from FUSIONS) + a separate head, with modality dropout; per-step for segments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from .config import ModelConfig, arguments_for
from .errors import ConfigError
from .fusion import FUSIONS, Fusion


def make_head(kind: str, in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """A linear head (dropout + linear), or an mlp one (linear, GELU, dropout, linear)."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def drop_modalities(masks: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Hide each present modality of a sample with chance p, always keeping at least one."""
    names = sorted(masks)
    present = torch.stack([masks[n].any(-1) for n in names], -1)  # (B, M)
    keep = (torch.rand(present.shape, device=present.device) >= p) & present
    none = ~keep.any(-1)
    first = present.float().argmax(-1)  # a present modality to fall back on
    keep[none, first[none]] = True
    return {n: masks[n] & keep[..., i].unsqueeze(-1) for i, n in enumerate(names)}


class FusionModel(nn.Module):
    """feats/masks dicts -> logits (B, C), or (B, T, C) per step for segment tagging."""

    def __init__(
        self,
        fusion: nn.Module,
        head: nn.Module | None,
        modality_dropout: float = 0.0,
        per_step: bool = False,
        temporal: nn.Module | None = None,
    ):
        super().__init__()
        self.fusion, self.head, self.temporal = fusion, head, temporal
        self.modality_dropout, self.per_step = modality_dropout, per_step

    def forward(self, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training and self.modality_dropout > 0:
            masks = drop_modalities(masks, self.modality_dropout)
        if self.per_step:
            return self._per_step(feats, masks)
        z = self.fusion(feats, masks)
        return z if self.fusion.produces_logits else self.head(z)

    def _per_step(self, feats, masks):
        """Fuse each time step of the aligned fields, smooth over time, classify each step."""
        names = sorted(feats)
        b, t = masks[names[0]].shape
        f = {n: feats[n].reshape(b * t, 1, -1) for n in names}
        m = {n: masks[n].reshape(b * t, 1) for n in names}
        empty = ~torch.stack([m[n][:, 0] for n in names]).any(0)  # padding steps: give attention a key
        m[names[0]] = m[names[0]] | empty.unsqueeze(1)
        z = self.fusion(f, m).view(b, t, -1)  # (B, T, H)
        z = z + self.temporal(z.transpose(1, 2)).transpose(1, 2)
        return self.head(z)  # (B, T, C)


def fusion_class(name: str) -> type[Fusion]:
    """The fusion registered as `name` in FUSIONS; ConfigError naming the known ones otherwise."""
    try:
        return FUSIONS[name]
    except KeyError:
        raise ConfigError(f"unknown fusion {name!r}; known: {', '.join(FUSIONS)}") from None


def takes_pooled(cfg: ModelConfig) -> bool:
    """Whether the model only sees each field's mean over time, so the loader may pool the features
    once (data.load_data's `pooled`); a per-step model (segment tagging) never does."""
    return cfg.task != "segment" and fusion_class(cfg.fusion).pooled


def build_fusion(cfg: ModelConfig, dims: dict[str, int], head_factory: Callable[[int], nn.Module]) -> Fusion:
    """The fusion `cfg.fusion` over fields of sizes `dims`, given exactly the options its constructor
    declares (parameters are named after the config's options; `head_factory(in_dim)` makes a head)."""
    cls = fusion_class(cfg.fusion)
    return cls(dims, **arguments_for(cls, {**asdict(cfg), "head_factory": head_factory}))


def build_model(cfg: ModelConfig, dims: dict[str, int], out_dim: int) -> FusionModel:
    """Fusion + head (none when the fusion produces logits), with modality dropout; per step for
    segment tagging, with a depthwise temporal convolution between fusion and head."""
    head_factory = functools.partial(make_head, cfg.head, out_dim=out_dim, hidden=cfg.hidden, dropout=cfg.dropout)
    fusion = build_fusion(cfg, dims, head_factory)
    head = None if fusion.produces_logits else head_factory(fusion.out_dim)
    temporal = None
    if cfg.task == "segment":
        temporal = nn.Conv1d(fusion.out_dim, fusion.out_dim, 3, padding=1, groups=fusion.out_dim)
    return FusionModel(fusion, head, cfg.modality_dropout, per_step=cfg.task == "segment", temporal=temporal)
