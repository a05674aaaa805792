"""Fusions declare their own constructor arguments, and the model config gives each only those."""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace

import pytest
import torch
from mmfit_helpers import cfg

from mmfit.config import ModelConfig, arguments_for, build_config
from mmfit.errors import ConfigError
from mmfit.fusion import FUSIONS
from mmfit.model import build_fusion, build_model, make_head, takes_pooled
from mmfit.train import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it

DIMS = {"a": 6, "b": 4}


def _model_cfg(fusion: str, **kw) -> ModelConfig:
    return build_config(
        fusion=fusion, hidden=16, heads=2, layers=3, latents=5, bottleneck_tokens=3, dropout=0.25, **kw
    ).model


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_declares_its_arguments(name):
    params = inspect.signature(FUSIONS[name]).parameters
    kinds = {p.kind for p in params.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    assert next(iter(params)) == "dims"
    offered = {*ModelConfig.__dataclass_fields__, "head_factory"}
    assert set(params) - {"dims"} <= offered, f"{name} takes options the model config does not have"


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


def test_arguments_for_refuses_kwargs():
    def swallows(dims, hidden=1, **_):
        return dims

    with pytest.raises(TypeError, match="declare the arguments it uses"):
        arguments_for(swallows, {"hidden": 2})
    assert arguments_for(lambda dims, hidden=1: None, {"hidden": 2, "heads": 4}) == {"hidden": 2}


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


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_learns_the_classes(labelled, tmp_path, fusion):
    result = train(cfg(labelled, tmp_path, fusion=fusion, epochs=8, lr=3e-3, modality_dropout=0.2))
    assert result.val["accuracy"] >= 0.75
    assert len(result.history) >= 1 and result.best_epoch >= 1
