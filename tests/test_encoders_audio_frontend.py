"""encoders/audio_frontend.py: log-mel and MFCC of one audio window (25 ms frames, 10 ms hop), the mean
over the window's frames, checked against a numpy/scipy computation on audio decoded by ffmpeg."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import scipy.fft

from mmcache.encoders import build_encoder
from mmcache.types import AudioInput


def decode(source: str, sr: int) -> np.ndarray:
    """Mono float32 samples of an ffmpeg lavfi audio source, resampled by ffmpeg to `sr`."""
    args = ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", source, "-ac", "1", "-ar", str(sr)]
    out = subprocess.run([*args, "-f", "f32le", "-"], capture_output=True, check=True, timeout=30).stdout
    return np.frombuffer(out, np.float32).copy()


def noise(sr: int, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    return decode(f"anoisesrc=d={seconds}:c=pink:r={sr}:a={amplitude}:seed=7", sr)


def sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    return decode(f"sine=frequency={freq}:sample_rate={sr}:duration={seconds}", sr)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_centres(sr: int, n_mels: int) -> np.ndarray:
    """Centre frequencies of the HTK mel bands spanning 0..sr/2."""
    return mel_to_hz(np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2))[1:-1]


def mel_power(audio: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """(n_mels, frames) mel power: Hann-windowed |FFT|^2 of 25 ms frames every 10 ms, centred with
    reflection padding, through triangular HTK mel filters (peak 1, no area normalisation)."""
    n_fft, hop = int(round(0.025 * sr)), int(round(0.010 * sr))
    x = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    starts = np.arange(1 + (len(x) - n_fft) // hop) * hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = x[starts[:, None] + np.arange(n_fft)] * window
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, bins)
    freqs = np.linspace(0.0, sr // 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    filters = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))  # (mels, bins)
    return filters @ power.T


def logmel_reference(audio: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    return np.log(mel_power(audio, sr, n_mels) + 1e-6).mean(axis=1)


def mfcc_reference(audio: np.ndarray, sr: int, n_mels: int, n_mfcc: int) -> np.ndarray:
    """Power in dB (floor 1e-10, at most 80 dB below this window's loudest value), orthonormal DCT-II."""
    db = 10.0 * np.log10(np.maximum(mel_power(audio, sr, n_mels), 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return scipy.fft.dct(db, type=2, norm="ortho", axis=0)[:n_mfcc].mean(axis=1)


@pytest.mark.parametrize("sr,n_mels", [(16000, 64), (8000, 32)])
def test_logmel_is_the_mean_log_mel_power_of_the_window(sr, n_mels):
    enc = build_encoder(f"logmel:sample_rate={sr},n_mels={n_mels}")
    audio = noise(sr)
    assert len(audio) == sr
    out = enc.encode([audio])
    assert out.shape == (1, n_mels) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], logmel_reference(audio, sr, n_mels), rtol=1e-4, atol=2e-3)


def test_mfcc_is_the_mean_dct_of_decibel_mel_power():
    enc = build_encoder("mfcc:n_mels=40,n_mfcc=13")
    batch = [noise(16000), sine(440, 16000), 1e-3 * noise(16000)]
    out = enc.encode(batch)
    assert out.shape == (3, 13) and out.dtype == np.float32
    for got, audio in zip(out, batch, strict=True):
        np.testing.assert_allclose(got, mfcc_reference(audio, 16000, 40, 13), rtol=1e-4, atol=2e-2)


@pytest.mark.parametrize("band", [10, 30, 50])
def test_a_tone_is_loudest_in_the_mel_band_centred_on_it(band):
    freq = float(mel_centres(16000, 64)[band])
    out = build_encoder("logmel").encode([sine(freq, 16000)])[0]
    assert int(np.argmax(out)) == band, (freq, np.argsort(out)[-3:])


def test_silence_gives_the_log_floor_and_constant_decibels():
    silence = np.zeros(16000, np.float32)
    np.testing.assert_allclose(build_encoder("logmel").encode([silence])[0], np.log(1e-6), rtol=1e-6)
    # every band at the 1e-10 floor (-100 dB): the DCT of a constant is all in c0, sqrt(n_mels) x -100
    mfcc = build_encoder("mfcc:n_mels=64,n_mfcc=20").encode([silence])[0]
    np.testing.assert_allclose(mfcc[0], -100.0 * np.sqrt(64), rtol=1e-5)
    np.testing.assert_allclose(mfcc[1:], 0.0, atol=1e-3)


def test_doubling_the_amplitude_shifts_every_band_by_the_same_amount():
    audio = noise(16000)
    logmel = build_encoder("logmel").encode([audio, 2 * audio])
    np.testing.assert_allclose(logmel[1] - logmel[0], np.log(4.0), atol=1e-3)  # power x 4
    mfcc = build_encoder("mfcc").encode([audio, 2 * audio])
    shift = mfcc[1] - mfcc[0]
    np.testing.assert_allclose(shift[0], 10 * np.log10(4.0) * np.sqrt(64), rtol=1e-4)  # +6.02 dB in each band
    np.testing.assert_allclose(shift[1:], 0.0, atol=2e-3)


def test_options_set_the_grid_the_size_and_the_frame_lengths():
    enc = build_encoder("logmel:sample_rate=22050,fps=4,window=0.5,n_mels=40,batch_size=3")
    assert enc.input == AudioInput(sample_rate=22050, fps=4, window=0.5)
    assert enc.dim == 40 and enc.batch_size == 3
    n_fft, hop = enc.preprocess["n_fft"], enc.preprocess["hop_length"]
    assert abs(n_fft - 0.025 * 22050) <= 0.5 and enc.preprocess["win_length"] == n_fft  # 25 ms frames
    assert abs(hop - 0.010 * 22050) <= 0.5  # every 10 ms
    assert enc.encode([noise(22050, 0.5)] * 2).shape == (2, 40)
    mfcc = build_encoder("mfcc:n_mfcc=13")
    assert mfcc.dim == 13 and mfcc.encode([noise(16000)]).shape == (1, 13)
    assert (mfcc.input.sample_rate, mfcc.input.fps, mfcc.input.window) == (16000, 1.0, 1.0)  # the defaults


def test_the_front_end_weights_hash_is_that_of_its_filter_bank():
    a, b = build_encoder("mfcc"), build_encoder("mfcc:batch_size=2")
    assert a.weights_sha256 == b.weights_sha256 and len(a.weights_sha256) == 64
    assert build_encoder("mfcc:n_mels=32").weights_sha256 != a.weights_sha256  # the filter bank is a buffer
    assert a.versions["torchaudio"] and a.fingerprint_parts()["versions"]["torchaudio"] == a.versions["torchaudio"]


@pytest.mark.parametrize("name", ["logmel", "mfcc"])
def test_audio_features_do_not_depend_on_the_rest_of_the_batch(name):
    enc = build_encoder(name)
    rng = np.random.default_rng(0)
    quiet, loud = rng.normal(0, 1e-3, 16000).astype(np.float32), rng.normal(0, 1.0, 16000).astype(np.float32)
    alone = enc.encode([quiet])
    together = enc.encode([quiet, loud])
    assert np.allclose(alone[0], together[0], rtol=1e-5, atol=1e-4)
