"""Fusion modules: dict[str, (B, T_m, D_m)] + dict[str, (B, T_m) bool masks] -> (B, out_dim).

Keys are visited in sorted order. A modality whose mask is all False for a sample is absent for
that sample: it never contributes zeros as if they were data. Heads are separate (model.py).
Each fusion's constructor declares exactly the options it uses, named as in the train config
(model.build_fusion passes each its own), and the class says whether it only looks at each field's
mean over time (`pooled`: the loader may then pool the features once).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D): mean over valid steps (zeros when none)."""
    w = m.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


def positions(t: int, dim: int, device) -> torch.Tensor:
    """Sinusoidal step-position embeddings (T, dim)."""
    pos = torch.arange(t, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(t, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class Fusion(nn.Module):
    """What every fusion has: `out_dim` (0 when it produces logits itself) and two class flags."""

    pooled = False  # True: only sees each field's mean over time, so the data can be pooled once
    produces_logits = False  # True: its output is the logits (no separate head)
    out_dim: int


class ConcatFusion(Fusion):
    """Masked mean over time per modality, concatenated, plus one presence flag per modality.
    With a linear head this is logistic regression on mean-pooled features: the strong default."""

    pooled = True

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.names = sorted(dims)
        self.out_dim = sum(dims.values()) + len(dims)

    def forward(self, feats, masks):
        pooled = [masked_mean(feats[n], masks[n]) for n in self.names]
        present = torch.stack([masks[n].any(1) for n in self.names], 1).to(pooled[0].dtype)  # (B, M)
        return torch.cat(pooled + [present], 1)


class LateFusion(Fusion):
    """One head per modality on its pooled features; logits averaged over present modalities."""

    pooled = True
    produces_logits = True

    def __init__(self, dims: dict[str, int], head_factory: Callable[[int], nn.Module]):
        super().__init__()
        self.names = sorted(dims)
        self.heads = nn.ModuleDict({n: head_factory(dims[n]) for n in self.names})
        self.out_dim = 0

    def forward(self, feats, masks):
        logits = torch.stack([self.heads[n](masked_mean(feats[n], masks[n])) for n in self.names], 1)  # (B, M, C)
        present = torch.stack([masks[n].any(1) for n in self.names], 1).to(logits.dtype).unsqueeze(-1)  # (B, M, 1)
        return (logits * present).sum(1) / present.sum(1).clamp(min=1)


class GatedFusion(Fusion):
    """Gated multimodal unit: per-modality tanh projections mixed by softmax gates over the present
    modalities, the gates computed from all pooled features."""

    pooled = True

    def __init__(self, dims: dict[str, int], hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.names = sorted(dims)
        self.proj = nn.ModuleDict({n: nn.Linear(dims[n], hidden) for n in self.names})
        self.gate = nn.Linear(sum(dims.values()), len(dims))
        self.drop = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, feats, masks):
        pooled = [masked_mean(feats[n], masks[n]) for n in self.names]
        h = torch.stack([torch.tanh(self.proj[n](p)) for n, p in zip(self.names, pooled, strict=True)], 1)  # (B,M,H)
        present = torch.stack([masks[n].any(1) for n in self.names], 1)  # (B, M)
        g = self.gate(torch.cat(pooled, 1)).masked_fill(~present, float("-inf")).softmax(1)  # (B, M)
        return self.drop((g.nan_to_num(0.0).unsqueeze(-1) * h).sum(1))


class _Tokens(nn.Module):
    """Per-modality projection to `hidden` + modality embedding + step position."""

    def __init__(self, dims: dict[str, int], hidden: int):
        super().__init__()
        self.names = sorted(dims)
        self.proj = nn.ModuleDict({n: nn.Linear(dims[n], hidden) for n in self.names})
        self.modality = nn.Parameter(torch.randn(len(dims), hidden) * 0.02)
        self.hidden = hidden

    def forward(self, feats, n: str) -> torch.Tensor:
        x = self.proj[n](feats[n])  # (B, T, H)
        return x + self.modality[self.names.index(n)] + positions(x.shape[1], self.hidden, x.device)


def _layer(hidden: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True, activation="gelu"
    )


class AttentionFusion(Fusion):
    """Cross-modal transformer over all tokens (with modality embeddings) and a CLS token."""

    def __init__(self, dims: dict[str, int], hidden: int = 256, heads: int = 4, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.tokens = _Tokens(dims, hidden)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.encoder = nn.TransformerEncoder(_layer(hidden, heads, dropout), layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = hidden

    def forward(self, feats, masks):
        names = self.tokens.names
        b = feats[names[0]].shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1)] + [self.tokens(feats, n) for n in names], 1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device)] + [masks[n] for n in names], 1)
        return self.norm(self.encoder(x, src_key_padding_mask=~valid)[:, 0])


class BottleneckFusion(Fusion):
    """MBT-style: each modality has its own transformer layers; modalities exchange information only
    through a few shared bottleneck tokens, averaged across the present modalities after each layer."""

    def __init__(
        self,
        dims: dict[str, int],
        hidden: int = 256,
        heads: int = 4,
        layers: int = 2,
        bottleneck_tokens: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.tokens = _Tokens(dims, hidden)
        self.bottleneck = nn.Parameter(torch.randn(1, bottleneck_tokens, hidden) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict({n: _layer(hidden, heads, dropout) for n in sorted(dims)}) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = hidden

    def forward(self, feats, masks):
        names = self.tokens.names
        x = {n: self.tokens(feats, n) for n in names}
        b = x[names[0]].shape[0]
        k = self.bottleneck.shape[1]
        z = self.bottleneck.expand(b, -1, -1)
        present = torch.stack([masks[n].any(1) for n in names], 1).to(z.dtype)  # (B, M)
        ones = torch.ones(b, k, dtype=torch.bool, device=z.device)
        for layer in self.layers:
            new_z = []
            for n in names:
                out = layer[n](torch.cat([x[n], z], 1), src_key_padding_mask=~torch.cat([masks[n], ones], 1))
                x[n], zn = out[:, :-k], out[:, -k:]
                new_z.append(zn)
            w = present.unsqueeze(-1).unsqueeze(-1)  # (B, M, 1, 1)
            z = (torch.stack(new_z, 1) * w).sum(1) / w.sum(1).clamp(min=1)
        return self.norm(z.mean(1))


class PerceiverFusion(Fusion):
    """Latent queries cross-attend to all modality tokens, then self-attend; mean of latents."""

    def __init__(
        self,
        dims: dict[str, int],
        hidden: int = 256,
        heads: int = 4,
        layers: int = 2,
        latents: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.tokens = _Tokens(dims, hidden)
        self.latents = nn.Parameter(torch.randn(1, latents, hidden) * 0.02)
        self.cross = nn.ModuleList(
            nn.MultiheadAttention(hidden, heads, dropout, batch_first=True) for _ in range(layers)
        )
        self.cross_norm = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.self_attn = nn.ModuleList(_layer(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = hidden

    def forward(self, feats, masks):
        names = self.tokens.names
        kv = torch.cat([self.tokens(feats, n) for n in names], 1)
        pad = ~torch.cat([masks[n] for n in names], 1)
        z = self.latents.expand(kv.shape[0], -1, -1)
        for cross, norm, layer in zip(self.cross, self.cross_norm, self.self_attn, strict=True):
            z = z + cross(norm(z), kv, kv, key_padding_mask=pad, need_weights=False)[0]
            z = layer(z)
        return self.norm(z.mean(1))


FUSIONS: dict[str, type[Fusion]] = {
    "concat": ConcatFusion,
    "late": LateFusion,
    "gated": GatedFusion,
    "attention": AttentionFusion,
    "bottleneck": BottleneckFusion,
    "perceiver": PerceiverFusion,
}
