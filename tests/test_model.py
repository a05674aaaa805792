"""mmfit/model.py: build_fusion gives each fusion its own arguments; a separate head; modality dropout;
the per-step model of segment tagging."""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace

import pytest
import torch

from mmfit.config import ModelConfig, build_config
from mmfit.errors import ConfigError
from mmfit.fusion import FUSIONS
from mmfit.model import build_fusion, build_model, drop_modalities, fusion_class, make_head, takes_pooled

DIMS = {"a": 6, "b": 4}


def _model_cfg(fusion: str, **kw) -> ModelConfig:
    return build_config(
        fusion=fusion, hidden=16, heads=2, layers=3, latents=5, bottleneck_tokens=3, dropout=0.25, **kw
    ).model


# -- moved from test_fusion.py (by concern: building fusions and models from the config) ----------------


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_building_a_fusion_passes_only_its_own_arguments(name, monkeypatch):
    cls, got = FUSIONS[name], []
    init = cls.__init__

    @functools.wraps(init)
    def spy(self, *args, **kwargs):
        got.append((args, kwargs))
        init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    cfg = _model_cfg(name)
    head_factory = functools.partial(make_head, "linear", out_dim=3, hidden=16, dropout=0.0)
    fusion = build_fusion(cfg, DIMS, head_factory)
    assert isinstance(fusion, cls) and len(got) == 1
    args, kwargs = got[0]
    declared = set(inspect.signature(init).parameters) - {"self", "dims"}
    assert args == (DIMS,) and set(kwargs) == declared
    for key, value in kwargs.items():
        assert value is head_factory if key == "head_factory" else value == getattr(cfg, key), key


def test_unknown_fusion_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown fusion 'transformer'; known: concat, late"):
        build_model(replace(_model_cfg("concat"), fusion="transformer"), DIMS, 3)
    with pytest.raises(ConfigError, match="unknown fusion"):
        takes_pooled(replace(_model_cfg("concat"), fusion="transformer"))


def test_only_mean_pooling_fusions_take_pooled_features_and_never_per_step():
    pooled = {name for name in FUSIONS if takes_pooled(_model_cfg(name))}
    assert pooled == {"concat", "late", "gated"}
    assert not any(takes_pooled(_model_cfg(name, task="segment")) for name in FUSIONS if name != "late")


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_built_fusions_use_the_config(name):
    torch.manual_seed(0)
    model = build_model(_model_cfg(name), DIMS, 3)
    feats = {n: torch.randn(2, 4, d) for n, d in DIMS.items()}
    masks = {n: torch.ones(2, 4, dtype=torch.bool) for n in DIMS}
    assert model(feats, masks).shape == (2, 3)
    if name in ("attention", "bottleneck", "perceiver"):
        assert model.fusion.out_dim == 16
        assert (
            sum(isinstance(m, torch.nn.TransformerEncoderLayer) for m in model.modules())
            == {
                "attention": 3,
                "bottleneck": 3 * len(DIMS),
                "perceiver": 3,
            }[name]
        )


# -- heads, modality dropout, the model's modes ---------------------------------------------------------


def inputs(b: int = 4, t: int = 3):
    gen = torch.Generator().manual_seed(0)
    feats = {n: torch.randn(b, t, d, generator=gen) for n, d in DIMS.items()}
    masks = {n: torch.ones(b, t, dtype=torch.bool) for n in DIMS}
    return feats, masks


def test_heads_map_the_fused_size_to_the_outputs():
    x = torch.randn(5, 8)
    linear, mlp = make_head("linear", 8, 3, hidden=16, dropout=0.0), make_head("mlp", 8, 3, hidden=16, dropout=0.0)
    assert linear(x).shape == mlp(x).shape == (5, 3)
    assert [type(m).__name__ for m in linear] == ["Dropout", "Linear"]
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [16, 3]


def test_fusion_class_is_the_registry_entry():
    assert all(fusion_class(name) is FUSIONS[name] for name in FUSIONS)


def test_modality_dropout_hides_whole_modalities_and_always_keeps_one():
    torch.manual_seed(0)
    masks = {"a": torch.ones(500, 3, dtype=torch.bool), "b": torch.ones(500, 3, dtype=torch.bool)}
    masks["b"][:100] = False  # absent in the first 100 samples
    never = drop_modalities(masks, 0.0)
    assert all(torch.equal(never[n], masks[n]) for n in masks)
    dropped = drop_modalities(masks, 0.5)
    kept = torch.stack([dropped[n].any(-1) for n in sorted(dropped)], -1)  # (B, 2)
    assert kept.any(-1).all()  # at least one modality per sample ...
    assert torch.equal(dropped["a"][:100], masks["a"][:100])  # ... the only present one when one is
    assert not dropped["b"][:100].any()  # an absent modality never comes back
    assert all((dropped[n] == dropped[n][:, :1]).all() for n in dropped)  # whole modalities, not steps
    # with both present: a is hidden when dropped and b kept (1/4), b when dropped (1/2): 3/8 overall
    assert 0.3 < (~kept[100:]).float().mean() < 0.45
    always = drop_modalities(masks, 1.0)
    assert (torch.stack([always[n].any(-1) for n in sorted(always)], -1).sum(-1) == 1).all()


def test_modality_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = build_model(replace(_model_cfg("concat"), modality_dropout=0.9), DIMS, 3)
    feats, masks = inputs(b=64)
    model.eval()
    assert torch.equal(model(feats, masks), model(feats, masks))
    model.train()
    model.head[0].p = 0.0  # head dropout off: only the modality dropout differs between calls
    assert not torch.equal(model(feats, masks), model(feats, masks))


@pytest.mark.parametrize("name", sorted(set(FUSIONS) - {"late"}))
def test_segment_tagging_builds_a_per_step_model(name):
    torch.manual_seed(0)
    model = build_model(_model_cfg(name, task="segment"), DIMS, 5).eval()
    feats, masks = inputs(b=2, t=6)
    masks["a"][1, 4:] = masks["b"][1, 4:] = False  # padding steps at the end of the second sample
    out = model(feats, masks)
    assert out.shape == (2, 6, 5) and torch.isfinite(out).all()
    assert model.per_step and isinstance(model.temporal, torch.nn.Conv1d)
