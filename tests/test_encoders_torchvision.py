"""torchvision encoders through the real pipeline: the six video architectures (random weights),
an image model from a local state-dict file, and weights names that do not exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import mmcache
from mmcache.cache import open_cache
from mmcache.encoders import REGISTRY, build_encoder
from mmcache.encoders.torch_common import state_dict_sha256
from mmcache.errors import EncoderError
from mmcache.synth import make_clip

DURATION = 2.0
SMALL = {"fps": 4, "clip_len": 4, "stride": 2}  # 8 frames -> clips at frames 0, 2, 4
FULL = {"fps": 8, "clip_len": 16, "stride": 16}  # one 16-frame clip (mvit_v2_s takes exactly 16 x 224 x 224)
VIDEO_CASES = {  # model -> (grid options, feature size, frame size after resize + crop)
    "r3d_18": (SMALL, 512, (112, 112)),
    "r2plus1d_18": (SMALL, 512, (112, 112)),
    "mc3_18": (SMALL, 512, (112, 112)),
    "s3d": (FULL, 1024, (224, 224)),
    "mvit_v2_s": (FULL, 768, (224, 224)),
    "swin3d_t": (FULL, 768, (224, 224)),
}


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("tv-video") / "clip.mp4", duration=DURATION, size="96x72", audio=False)


@pytest.mark.parametrize("model", list(VIDEO_CASES))
def test_video_model_dims_and_clip_grid(model, small_clip, tmp_path):
    grid, dim, crop = VIDEO_CASES[model]
    opts = ",".join(f"{k}={v}" for k, v in grid.items())
    # float32: random-init s3d gives features near 1e-6, which float16 storage flushes to zero
    report = mmcache.extract(
        [small_clip],
        [f"torchvision-video:model={model},weights=random,{opts},batch_size=2,store_dtype=float32"],
        tmp_path / "cache",
    )
    assert report.new_ok == 1, report.failures
    cache = open_cache(tmp_path / "cache")
    entry = cache.fields[model]
    assert entry["dim"] == dim
    assert tuple(entry["fingerprint_parts"]["input"]["crop"]) == crop
    feats, ts = cache.load_field(model).feats[0], cache.load_field(model).ts[0]
    n_frames = int(DURATION * grid["fps"])
    n_clips = (n_frames - grid["clip_len"]) // grid["stride"] + 1
    starts = np.arange(n_clips) * grid["stride"] / grid["fps"]
    assert feats.shape == (n_clips, dim)
    np.testing.assert_allclose(ts[:, 0], starts, atol=1e-3)
    np.testing.assert_allclose(ts[:, 1], starts + grid["clip_len"] / grid["fps"], atol=1e-3)
    assert np.isfinite(feats).all() and feats.astype(np.float64).std() > 0
    if model in REGISTRY:  # presets state their size
        assert REGISTRY[model].dim == dim


def test_image_model_from_a_state_dict_file(small_clip, tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.resnet18()
    path = tmp_path / "resnet18-mine.pth"
    torch.save(net.state_dict(), path)
    net.fc = torch.nn.Identity()  # what the encoder keeps
    report = mmcache.extract([small_clip], [f"resnet18:weights={path},fps=1"], tmp_path / "cache")
    assert report.new_ok == 1, report.failures
    entry = open_cache(tmp_path / "cache").fields["resnet18"]
    assert entry["dim"] == 512
    assert entry["options"]["weights"] == str(path)
    parts = entry["fingerprint_parts"]
    assert parts["options"]["weights"] == "local-path"  # the hash identifies the weights, not the folder
    assert parts["weights_sha256"] == state_dict_sha256(net)
    assert parts["weights_sha256"] != build_encoder("resnet18:weights=random").weights_sha256
    feats = open_cache(tmp_path / "cache").load_field("resnet18").feats[0]
    assert feats.shape == (2, 512) and np.isfinite(feats).all()


def test_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(EncoderError, match="does not fit resnet50"):
        build_encoder(f"resnet50:weights={path}")


def test_unknown_weights_name_lists_the_allowed_ones():
    with pytest.raises(EncoderError) as err:
        build_encoder("resnet18:weights=NOT_A_WEIGHT")
    message = str(err.value)
    assert "NOT_A_WEIGHT" in message
    for allowed in ("DEFAULT", "IMAGENET1K_V1", "random", "state-dict"):
        assert allowed in message
