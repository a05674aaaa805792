"""The registry: every entry is listed, parses its options, and (where it needs no download) builds."""

from __future__ import annotations

import numpy as np
import pytest

from mmcache.encoders import REGISTRY, build_encoder, check_encoder_arg, get_spec
from mmcache.encoders.args import parse_encoder_arg
from mmcache.errors import EncoderError

OFFLINE_EXTRA = {
    "torchvision-image": ",weights=random",
    "torchvision-video": ",weights=random",
    "hf-text": ",model=sentence-transformers/all-MiniLM-L6-v2",
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_spec_is_complete(name):
    spec = get_spec(name)
    assert spec.name == name and spec.modality in ("vision", "audio", "text") and spec.summary
    assert {"device", "batch_size", "store_dtype"} <= set(spec.defaults)
    assert spec.grid()
    check_encoder_arg(name)  # defaults validate against the schema


@pytest.mark.parametrize(
    "name", ["resnet18", "efficientnet_b0", "torchvision-image", "logmel", "mfcc", "minilm-text", "hf-text"]
)
def test_offline_specs_build_and_encode(name):
    spec = get_spec(name)
    extra = (
        ",weights=random" if "weights" in spec.defaults and name not in OFFLINE_EXTRA else OFFLINE_EXTRA.get(name, "")
    )
    enc = build_encoder(name + ":batch_size=2" + extra)
    if spec.dim:
        assert enc.dim == spec.dim
    payload = {
        "frames": np.zeros((*enc.input.crop, 3), np.uint8) if hasattr(enc.input, "crop") else None,
        "audio": np.zeros(int(getattr(enc.input, "window", 1) * getattr(enc.input, "sample_rate", 1)), np.float32),
        "text": "a sentence",
    }[enc.input.kind]
    out = enc.encode([payload, payload])
    assert out.shape == (2, enc.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    assert len(enc.fingerprint()) == 64


def test_option_syntax():
    assert parse_encoder_arg("resnet18:fps=2, dtype=bfloat16,channels_last=true,weights=/a/b.pth") == (
        "resnet18",
        {"fps": 2, "dtype": "bfloat16", "channels_last": True, "weights": "/a/b.pth"},
    )
    with pytest.raises(EncoderError, match="not key=value"):
        parse_encoder_arg("resnet18:fps")


def test_field_names_default_to_the_model():
    assert check_encoder_arg("torchvision-image:model=convnext_tiny")[1] == "convnext_tiny"
    assert check_encoder_arg("hf-text:model=/models/My.Model/")[1] == "my-model"
    assert check_encoder_arg("resnet18:field=rgb")[1] == "rgb"
    with pytest.raises(EncoderError, match="field"):
        check_encoder_arg("resnet18:field=Bad Name")


def test_random_weights_are_seeded_and_channels_last_bf16_is_recorded():
    a, b = build_encoder("resnet18:weights=random"), build_encoder("resnet18:weights=random")
    assert a.weights_sha256 == b.weights_sha256
    fast = build_encoder("resnet18:weights=random,dtype=bfloat16,channels_last=true")
    assert fast.fingerprint() != a.fingerprint()
    frame = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    x, y = a.encode([frame]), fast.encode([frame])
    assert np.corrcoef(x[0], y[0])[0, 1] > 0.99  # same network, bf16 numerics


def test_missing_torchvision_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(EncoderError, match=r"resnet18-f37072fd\.pth .*weights=random"):
        build_encoder("resnet18")
