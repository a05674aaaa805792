"""encoders/torch_common.py: weight hashing, classifier removal, state-dict files and TorchEncoder
(frozen eval module, autocast, channels_last, normalisation), on small random-init torch models."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from mmcache.encoders.base import COMMON_DEFAULTS, EncoderSpec
from mmcache.encoders.torch_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchEncoder,
    drop_classifier,
    load_state_dict_file,
    state_dict_sha256,
    torch_versions,
)
from mmcache.errors import EncoderError
from mmcache.types import FrameInput


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    )


def encoder(module: nn.Module, **options) -> TorchEncoder:
    spec = EncoderSpec("test-net", "test", "vision", lambda *a: None, dict(COMMON_DEFAULTS), "a test network")
    options = {**COMMON_DEFAULTS, "device": "cpu", **options}
    enc = TorchEncoder(field="net", spec=spec, options=options, input=FrameInput())
    enc.setup(module)
    return enc


def test_the_weights_hash_follows_values_names_dtypes_and_shapes():
    net = small_net()
    h = state_dict_sha256(net)
    assert len(h) == 64 and int(h, 16) >= 0
    assert state_dict_sha256(copy.deepcopy(net)) == h
    assert state_dict_sha256(small_net(seed=0)) == h  # same seed, same weights
    assert state_dict_sha256(small_net(seed=1)) != h
    nudged = copy.deepcopy(net)
    with torch.no_grad():
        nudged[5].bias[2] += 1e-6
    assert state_dict_sha256(nudged) != h
    buffers = copy.deepcopy(net)
    buffers[1].running_mean[0] = 0.5  # a buffer, not a parameter: it changes the numbers too
    assert state_dict_sha256(buffers) != h

    def holder(name, tensor):
        m = nn.Module()
        m.register_buffer(name, tensor)
        return m

    x = torch.arange(6, dtype=torch.float32)
    base = state_dict_sha256(holder("w", x))
    assert state_dict_sha256(holder("w", x.reshape(2, 3))) != base  # same bytes, other shape
    assert state_dict_sha256(holder("v", x)) != base  # same bytes, other name
    assert state_dict_sha256(holder("w", x.view(torch.int32))) != base  # same bytes, other dtype
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert state_dict_sha256(holder("w", t.t())) == state_dict_sha256(holder("w", t.t().contiguous()))


def test_the_weights_hash_does_not_depend_on_the_registration_order():
    a, b = nn.Module(), nn.Module()
    x, y = torch.ones(3), torch.zeros(2)
    a.register_buffer("x", x)
    a.register_buffer("y", y)
    b.register_buffer("y", y.clone())
    b.register_buffer("x", x.clone())
    assert list(a.state_dict()) != list(b.state_dict())
    assert state_dict_sha256(a) == state_dict_sha256(b)


def test_drop_classifier_leaves_the_pooled_penultimate_features():
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer4(net.layer3(net.layer2(net.layer1(h))))
        expected = torch.flatten(net.avgpool(h), 1)
        assert drop_classifier(net) == 512
        got = net(x)
    assert isinstance(net.fc, nn.Identity)
    torch.testing.assert_close(got, expected)


def test_drop_classifier_takes_the_last_linear_or_the_named_head():
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Sequential(nn.Dropout(), nn.Linear(6, 3)))
    assert drop_classifier(net) == 6
    assert isinstance(net[2][1], nn.Identity) and isinstance(net[0], nn.Linear)
    assert net.eval()(torch.ones(1, 8)).shape == (1, 6)
    conv_head = small_net()
    assert drop_classifier(conv_head, head="3") == 0  # a named submodule replaced whole
    assert isinstance(conv_head[3], nn.Identity) and isinstance(conv_head[5], nn.Linear)
    with pytest.raises(EncoderError, match="Sequential has no linear classifier"):
        drop_classifier(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()))


@pytest.mark.parametrize("suffix,wrap", [(".pt", False), (".pth", True), (".safetensors", False)])
def test_a_state_dict_file_loads_back_the_same_tensors(tmp_path, suffix, wrap):
    sd = small_net(seed=3).state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd, "epoch": 3} if wrap else sd, path)
    loaded = load_state_dict_file(path)
    assert sorted(loaded) == sorted(sd)
    for name, tensor in sd.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    fresh = small_net(seed=9)
    fresh.load_state_dict(loaded)
    assert state_dict_sha256(fresh) == state_dict_sha256(small_net(seed=3))


def test_a_missing_or_pickled_weights_file_is_an_encoder_error(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pt")
    whole = tmp_path / "whole-model.pt"
    torch.save(small_net(), whole)  # a pickled module, not a state dict: weights_only refuses it
    with pytest.raises(EncoderError, match="not a plain state dict"):
        load_state_dict_file(whole)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(EncoderError, match="not a plain state dict"):
        load_state_dict_file(garbage)


def test_setup_freezes_the_module_in_eval_mode_and_hashes_it():
    net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.BatchNorm1d(16))
    expected_hash = state_dict_sha256(net)
    net.train()
    enc = encoder(net)
    assert not enc.module.training and not any(m.training for m in enc.module.modules())
    assert not any(p.requires_grad for p in enc.module.parameters())
    assert enc.weights_sha256 == expected_hash
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = enc.run(torch.from_numpy(x))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 16)
    # eval: dropout is the identity and batch norm uses its running statistics (mean 0, var 1)
    lin = net[0]
    reference = (x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(enc.run(torch.from_numpy(x)), out)


def test_bfloat16_autocast_gives_bfloat16_numerics_as_float32():
    net = small_net()
    plain = encoder(copy.deepcopy(net))
    fast = encoder(copy.deepcopy(net), dtype="bfloat16")
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32))
    a, b = plain.run(x), fast.run(x)
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)
    # the last layer ran in bfloat16: every value is exactly representable in it
    np.testing.assert_array_equal(torch.from_numpy(b).bfloat16().float().numpy(), b)
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.02)
    assert fast.weights_sha256 == plain.weights_sha256  # the weights are the same; the dtype is an option


def test_channels_last_changes_the_layout_not_the_result():
    net = small_net()
    enc = encoder(copy.deepcopy(net), channels_last=True)
    conv = enc.module[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 12, 12)).astype(np.float32))
    np.testing.assert_allclose(enc.run(x), encoder(net).run(x), rtol=1e-5, atol=1e-6)


def test_to_device_on_cpu_wraps_the_array_without_a_copy():
    enc = encoder(small_net())
    batch = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = enc.to_device(batch)
    assert t.device.type == "cpu" and t.dtype == torch.float32 and tuple(t.shape) == (3, 4)
    batch[0, 0] = 42.0
    assert t[0, 0].item() == 42.0


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_normalise_maps_uint8_to_imagenet_statistics_along_the_channel_axis(channel_dim):
    enc = encoder(small_net())
    shape = (2, 3, 5, 4) if channel_dim == 1 else (2, 5, 4, 3)
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    got = enc.normalise(torch.from_numpy(pixels), IMAGENET_MEAN, IMAGENET_STD, channel_dim).numpy()
    moved = np.moveaxis(pixels.astype(np.float64) / 255.0, channel_dim, -1)
    expected = np.moveaxis((moved - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), -1, channel_dim)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    ones = enc.normalise(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), (0.0, 0.5, 1.0), (1.0, 0.5, 0.25), 1)
    np.testing.assert_allclose(ones.flatten().numpy(), [1.0, 1.0, 0.0])


def test_constants_are_made_once_per_value_shape_and_device():
    enc = encoder(small_net())
    cpu = torch.device("cpu")
    a = enc.const(IMAGENET_MEAN, [1, 3, 1, 1], cpu)
    assert enc.const(IMAGENET_MEAN, [1, 3, 1, 1], cpu) is a
    assert a.dtype == torch.float32 and tuple(a.shape) == (1, 3, 1, 1)
    np.testing.assert_allclose(a.flatten().numpy(), IMAGENET_MEAN, rtol=1e-6)
    assert enc.const(IMAGENET_MEAN, [1, 1, 1, 3], cpu) is not a
    assert enc.const(IMAGENET_STD, [1, 3, 1, 1], cpu) is not a


def test_forward_can_be_overridden_and_run_still_freezes_it():
    @dataclass
    class Doubling(TorchEncoder):
        def forward(self, x):
            return 2 * self.module(x)

    net = nn.Linear(3, 2)
    spec = EncoderSpec("double", "test", "vision", lambda *a: None, dict(COMMON_DEFAULTS), "doubles")
    enc = Doubling(field="d", spec=spec, options={**COMMON_DEFAULTS, "device": "cpu"}, input=FrameInput())
    enc.setup(net)
    x = torch.ones(1, 3)
    with torch.no_grad():
        expected = 2 * net(x)
    np.testing.assert_allclose(enc.run(x), expected.numpy(), rtol=1e-6)
    assert not any(p.requires_grad for p in net.parameters())


def test_versions_name_the_installed_torch_and_torchvision():
    assert torch_versions() == {"torch": torch.__version__, "torchvision": torchvision.__version__}


@pytest.mark.parametrize("order,channel_dim,shape", [((0, 3, 1, 2), 1, (6, 5, 3)), ((0, 1, 4, 2, 3), 2, (2, 6, 5, 3))])
def test_pixels_equal_stack_permute_normalise_and_reuse_their_buffers(order, channel_dim, shape):
    enc = encoder(small_net())
    rng = np.random.default_rng(4)
    ptrs = set()
    for n in (4, 4, 2, 4):  # a smaller last batch uses the first rows of the kept buffers
        frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
        got = enc.pixels(frames, order, IMAGENET_MEAN, IMAGENET_STD, channel_dim)
        x = enc.to_device(np.stack(frames)).permute(order)
        expected = enc.normalise(x, IMAGENET_MEAN, IMAGENET_STD, channel_dim)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert got.stride() == expected.stride()  # the model sees the same memory layout
        assert torch.equal(got, expected)  # value for value, not just close
        ptrs.add(got.data_ptr())
    assert len(ptrs) == 1  # one float buffer for every batch
    bigger = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(6)]
    got = enc.pixels(bigger, order, IMAGENET_MEAN, IMAGENET_STD, channel_dim)
    assert got.shape[0] == 6 and got.data_ptr() not in ptrs  # a larger batch gets a new buffer
    other = [rng.integers(0, 256, (*shape[:-2], 4, 3), dtype=np.uint8) for _ in range(2)]
    expected = enc.normalise(enc.to_device(np.stack(other)).permute(order), IMAGENET_MEAN, IMAGENET_STD, channel_dim)
    assert torch.equal(enc.pixels(other, order, IMAGENET_MEAN, IMAGENET_STD, channel_dim), expected)
