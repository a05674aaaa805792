"""Fusions declare their own constructor arguments (building them from the config: test_model.py), and learn."""

from __future__ import annotations

import inspect

import pytest
from mmfit_helpers import cfg

from mmfit.config import ModelConfig, arguments_for
from mmfit.fusion import FUSIONS
from mmfit.trainer import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_declares_its_arguments(name):
    params = inspect.signature(FUSIONS[name]).parameters
    kinds = {p.kind for p in params.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    assert next(iter(params)) == "dims"
    offered = {*ModelConfig.__dataclass_fields__, "head_factory"}
    assert set(params) - {"dims"} <= offered, f"{name} takes options the model config does not have"


def test_arguments_for_refuses_kwargs():
    def swallows(dims, hidden=1, **_):
        return dims

    with pytest.raises(TypeError, match="declare the arguments it uses"):
        arguments_for(swallows, {"hidden": 2})
    assert arguments_for(lambda dims, hidden=1: None, {"hidden": 2, "heads": 4}) == {"hidden": 2}


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_learns_the_classes(labelled, tmp_path, fusion):
    result = train(cfg(labelled, tmp_path, fusion=fusion, epochs=8, lr=3e-3, modality_dropout=0.2))
    assert result.val["accuracy"] >= 0.75
    assert len(result.history) >= 1 and result.best_epoch >= 1
