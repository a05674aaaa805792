"""encoders/base.py: specs, option resolution against the schema, and the fingerprint of a built
encoder (what decides the numbers, never where they were computed)."""

from __future__ import annotations

import platform
import subprocess

import numpy as np
import pytest
import torch

from mmcache.encoders import build_encoder
from mmcache.encoders.base import COMMON_DEFAULTS, Encoder, EncoderSpec, resolve_device, resolve_options
from mmcache.errors import EncoderError
from mmcache.types import AudioInput, FrameInput


def spec(defaults: dict | None = None, fixed: dict | None = None, name: str = "toy") -> EncoderSpec:
    defaults = {**COMMON_DEFAULTS, **(defaults or {})}
    return EncoderSpec(name, "toy-family", "vision", lambda *a: None, defaults, "a toy", fixed=fixed or {})


def encoder(options: dict | None = None, **fields) -> Encoder:
    s = spec({"fps": 1.0, "model": "m", "dtype": "float32"})
    opts = resolve_options(s, options or {})
    return Encoder(field="toy", spec=s, options=opts, input=FrameInput(), dim=8, **fields)


def test_the_grid_text_of_each_kind_of_spec():
    clips = {"fps": 8, "clip_len": 16, "stride": 4}
    assert spec(clips).grid() == "clips of 16 @ 8 fps, stride 4"
    # clip length and stride unset: the model's config, and back-to-back clips
    unset = spec({**clips, "clip_len": None, "stride": None})
    assert unset.grid() == "clips of config.num_frames @ 8 fps, stride clip_len"
    assert spec({"fps": 2.0, "window": 0.5}).grid() == "2.0 steps/s, 0.5 s windows"
    assert spec({"fps": 3}).grid() == "3 frames/s"
    assert spec({"max_length": 128}).grid() == "one step per text cue"


def test_resolve_options_puts_given_values_over_the_defaults():
    s = spec({"fps": 1.0, "model": "m"}, fixed={"model": "pinned"})
    opts = resolve_options(s, {"fps": 2, "batch_size": 4, "field": "rgb", "model": "mine"})
    assert opts == {**COMMON_DEFAULTS, "fps": 2, "batch_size": 4, "field": "rgb", "model": "pinned"}
    assert resolve_options(s, {}) == {**COMMON_DEFAULTS, "fps": 1.0, "model": "pinned"}
    assert s.defaults["fps"] == 1.0  # the spec's own defaults are left as they were


def test_num_frames_replaces_the_frame_rate():
    s = spec({"fps": 1.0, "num_frames": None})
    assert resolve_options(s, {"num_frames": 8})["fps"] is None
    assert resolve_options(s, {"fps": 4})["fps"] == 4


def test_an_unknown_option_names_it_and_what_is_allowed():
    with pytest.raises(EncoderError) as err:
        resolve_options(spec({"fps": 1.0}), {"fsp": 2})
    message = str(err.value)
    assert message.startswith("encoder toy: unknown option 'fsp'")
    assert "allowed: batch_size, decoders, device, fps, store_dtype, field" in message
    with pytest.raises(EncoderError, match="unknown option 'n_mels'"):
        resolve_options(spec({"fps": 1.0}), {"n_mels": 64})  # in the schema, but not this encoder's


@pytest.mark.parametrize(
    "given,hint",
    [
        ({"batch_size": 0}, "integer"),
        ({"batch_size": "big"}, "integer"),
        ({"store_dtype": "int8"}, "float16"),
        ({"device": "gpu"}, "cuda"),
        ({"decoders": 0}, "an integer 1-32, or auto"),
        ({"decoders": "many"}, "an integer 1-32, or auto"),
        ({"field": "Bad Name"}, "a-z0-9"),
    ],
)
def test_an_invalid_value_is_an_encoder_error_with_a_hint(given, hint):
    ((key, value),) = given.items()
    with pytest.raises(EncoderError) as err:
        resolve_options(spec(), given)
    message = str(err.value)
    assert f"option {key}={value!r} is invalid" in message
    assert hint in message.rpartition("(allowed: ")[2]


def test_valid_edge_values_are_accepted():
    given = {"batch_size": 4096, "decoders": 32, "device": "cuda:1", "store_dtype": "float32"}
    opts = resolve_options(spec(), given)
    assert {k: opts[k] for k in given} == given
    assert resolve_options(spec(), {"decoders": "auto"})["decoders"] == "auto"


def test_a_built_encoder_reads_its_batch_size_and_storage_dtype():
    enc = encoder({"batch_size": 5, "store_dtype": "float32"})
    assert enc.batch_size == 5 and isinstance(enc.batch_size, int) and enc.store_dtype == "float32"
    with pytest.raises(NotImplementedError):
        enc.encode([np.zeros(3)])


def test_fingerprint_parts_record_the_numerics_and_the_tools():
    enc = encoder(
        {"fps": 2, "device": "cpu", "batch_size": 3, "decoders": 2, "field": "rgb"},
        preprocess={"mean": [0.5]},
        weights_sha256="ab" * 32,
        versions={"torch": "9.9"},
    )
    parts = enc.fingerprint_parts()
    assert parts["options"] == {"fps": 2, "model": "m", "dtype": "float32", "store_dtype": "float16"}
    assert parts["encoder"] == "toy" and parts["family"] == "toy-family" and parts["dim"] == 8
    assert parts["input"] == {"fps": 1.0, "num_frames": None, "resize": (256,), "crop": (224, 224), "kind": "frames"}
    assert parts["preprocess"] == {"mean": [0.5]} and parts["weights_sha256"] == "ab" * 32
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True)
    first_line = ffmpeg.stdout.split("\n")[0]
    versions = parts["versions"]
    assert first_line.startswith(versions["ffmpeg"]) and "Copyright" not in versions["ffmpeg"]
    assert versions["numpy"] == np.__version__ and versions["torch"] == "9.9"
    major, minor = platform.python_version_tuple()[:2]
    assert versions["python"] == f"{major}.{minor}"


def test_the_fingerprint_is_a_sha256_that_follows_every_part():
    base = encoder({"fps": 2})
    fp = base.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert encoder({"fps": 2}).fingerprint() == fp
    assert encoder({"fps": 2, "device": "cuda", "batch_size": 1, "decoders": 4, "field": "x"}).fingerprint() == fp
    changed = [
        encoder({"fps": 3}),
        encoder({"fps": 2, "store_dtype": "float32"}),
        encoder({"fps": 2, "dtype": "bfloat16"}),
        encoder({"fps": 2}, weights_sha256="0" * 64),
        encoder({"fps": 2}, preprocess={"log": "ln"}),
        encoder({"fps": 2}, versions={"torch": "0.1"}),
    ]
    dim = encoder({"fps": 2})
    dim.dim = 9
    other_input = encoder({"fps": 2})
    other_input.input = AudioInput()
    fingerprints = {e.fingerprint() for e in [*changed, dim, other_input]}
    assert fp not in fingerprints and len(fingerprints) == len(changed) + 2


def test_a_local_model_path_counts_as_local_path_wherever_it_is(tmp_path):
    here, there = tmp_path / "a" / "weights", tmp_path / "b" / "copy"
    here.mkdir(parents=True)
    there.mkdir(parents=True)
    a, b = encoder({"model": str(here)}), encoder({"model": str(there)})
    assert a.fingerprint_parts()["options"]["model"] == "local-path"
    assert a.fingerprint() == b.fingerprint()
    assert a.options["model"] == str(here)  # the options themselves keep the path
    missing = encoder({"model": str(tmp_path / "not-there")})
    assert missing.fingerprint_parts()["options"]["model"] == str(tmp_path / "not-there")
    hub_id = encoder({"model": "org/name"})  # a hub id, not a folder here
    assert hub_id.fingerprint_parts()["options"]["model"] == "org/name"
    assert len({a.fingerprint(), missing.fingerprint(), hub_id.fingerprint()}) == 3


def test_a_part_that_is_not_plain_json_is_an_error_not_skipped():
    enc = encoder(preprocess={"window": np.hanning(4)})
    with pytest.raises(EncoderError, match="not plain JSON data"):
        enc.fingerprint()
    nan = encoder(preprocess={"eps": float("nan")})
    with pytest.raises(EncoderError, match="not plain JSON data"):
        nan.fingerprint()


def test_resolve_device_keeps_a_named_device_and_auto_is_usable():
    from mmcache.errors import InputError

    assert resolve_device("cpu") == "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(InputError, match="no CUDA GPU" if not count else "CUDA GPU\\(s\\)"):
        resolve_device(f"cuda:{count}")  # one past the last GPU torch sees: one line, not a driver traceback
    auto = resolve_device("auto")
    assert auto in ("cpu", "cuda")
    assert torch.zeros(2, device=auto).sum().item() == 0.0
    if not torch.cuda.is_available():
        assert auto == "cpu"


def test_fingerprint_tracks_numerics_not_the_device():
    a = build_encoder("logmel:batch_size=2")
    b = build_encoder("logmel:batch_size=64,device=cpu")
    c = build_encoder("logmel:n_mels=32")
    d = build_encoder("logmel:store_dtype=float32")
    assert a.fingerprint() == b.fingerprint()
    assert len({a.fingerprint(), c.fingerprint(), d.fingerprint()}) == 3
