"""config.py: the flat TrainConfig and its parts: every option is in a part or read by the run itself, and
the parts carry the same values."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields

import pytest

from mmfit.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, build_config
from mmfit.errors import ConfigError

PARTS = (DataConfig, ModelConfig, OptimConfig)
RUN = {"seed", "eval_batch_size", "device", "precision", "out", "tensorboard", "unimodal_baselines"}


def test_every_option_is_in_a_part_or_read_by_the_run():
    names = [f.name for f in fields(TrainConfig)]
    in_parts = {f.name for part in PARTS for f in fields(part)}
    assert in_parts <= set(names)
    assert set(names) - in_parts == RUN - in_parts


def test_parts_are_frozen_views_with_the_same_values():
    cfg = build_config(cache=["a", "b"], fusion="perceiver", latents=3, lr=0.5, max_steps=7, label_smoothing=0.1)
    for part in (cfg.data, cfg.model, cfg.optim):
        for f in fields(part):
            assert getattr(part, f.name) == getattr(cfg, f.name)
        with pytest.raises(FrozenInstanceError):
            part.task = "regression"
    assert cfg.data.caches == ["a", "b"] and build_config(cache="c").data.caches == ["c"]
    assert not cfg.data.aligned and build_config(task="segment", fusion="attention").data.aligned
    assert cfg.to_dict()["cache"] == ["a", "b"]  # what checkpoints and config.yaml store stays flat


def test_yaml_config_is_validated(tmp_path):
    (tmp_path / "c.yaml").write_text("cache: x\nfusion: transformer\n")
    with pytest.raises(ConfigError, match="fusion: 'transformer' is not one of"):
        build_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("cache: x\nepochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        build_config(tmp_path / "c.yaml")
