"""demo.py (`make demo`): says which vision weights the demo will use offline, and prints the choice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmcache import demo


def run_demo(monkeypatch, capsys, *args: str) -> tuple[str, str]:
    monkeypatch.setattr(sys, "argv", ["demo", *args])
    demo.main()
    out = capsys.readouterr()
    return out.out.strip(), out.err


def test_without_cached_weights_the_demo_says_random(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    choice, said = run_demo(monkeypatch, capsys)
    assert choice == "random"
    assert "demo vision backbone: resnet18 with RANDOM-INIT weights" in said


def test_with_the_weights_file_in_the_hub_cache_it_says_default(tmp_path, monkeypatch, capsys):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch's hub cache is $TORCH_HOME/hub
    name = Path(torchvision.models.get_model_weights("resnet34").DEFAULT.url).name
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / name).write_bytes(b"weights")
    choice, said = run_demo(monkeypatch, capsys, "resnet34")
    assert choice == "DEFAULT" and "resnet34 with pretrained ImageNet weights" in said
    assert run_demo(monkeypatch, capsys, "resnet18")[0] == "random"  # only that model's file counts
