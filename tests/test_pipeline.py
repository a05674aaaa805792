"""The decode/encode pipeline: batches span videos without changing results; order is kept."""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ffmpeg, stalling_fifo

from mmcache.encoders import REGISTRY, build_encoder, check_encoder_arg
from mmcache.errors import EncoderError
from mmcache.pipeline import Job, PipelineStats, cpu_count, resolve_decoders, run_encoder
from mmcache.probe import probe
from mmcache.synth import make_clip
from mmcache.types import VideoInput


def jobs_for(paths):
    return [Job(f"{i:024x}", VideoInput(p, p.name), probe(p)) for i, p in enumerate(paths)]


def test_batches_spanning_videos_give_the_same_features_in_order(clips, bad_files):
    paths = [clips / "ocean.mp4", bad_files["text"], clips / "forest.mp4", clips / "silent.mp4"]
    good = jobs_for([p for p in paths if p != bad_files["text"]])
    spanning = list(run_encoder(build_encoder("logmel:fps=4,window=0.25,batch_size=3"), good))
    single = list(run_encoder(build_encoder("logmel:fps=4,window=0.25,batch_size=1"), good))
    assert [o.job.video.source for o in spanning] == ["ocean.mp4", "forest.mp4", "silent.mp4"]
    assert [o.status for o in spanning] == ["ok", "ok", "absent"]
    for a, b in zip(spanning[:2], single[:2], strict=True):
        assert a.feats.shape == (8, 64) and np.allclose(a.feats, b.feats, atol=1e-4)
        assert np.array_equal(a.ts, b.ts)


def test_a_video_failing_mid_decode_does_not_stop_the_others(tmp_path, clips):
    good = make_clip(tmp_path / "good.mp4", duration=3.0)
    cut = tmp_path / "cut.mkv"  # probes fine, then the stream ends in garbage
    ffmpeg("-i", str(good), "-c", "copy", str(cut))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 3] + np.random.default_rng(0).bytes(len(data) // 3))
    jobs = jobs_for([cut, clips / "ocean.mp4"])
    out = list(run_encoder(build_encoder("resnet18:weights=random,fps=2,batch_size=4"), jobs, timeout=20))
    assert [o.job.video.source for o in out] == ["cut.mkv", "ocean.mp4"]
    assert out[1].status == "ok" and out[1].feats.shape == (4, 512)
    assert out[0].status in ("ok", "failed")  # ffmpeg may salvage frames before the damage; never a crash
    if out[0].status == "ok":
        assert 1 <= len(out[0].feats) <= 6


# -- several decoders feeding one encoder ---------------------------------------------------------


def ffmpeg_children() -> list[int]:
    """Pids of this process's child processes named ffmpeg (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if name == "ffmpeg" and int(rest[1]) == os.getpid() and rest[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def mixed_jobs(tmp_path_factory, real_videos, clips) -> list[Job]:
    """Real and synthetic clips, one without audio, one that breaks mid-stream and one whose bytes are
    not a video at all (probed as a good clip, so the failure happens while decoding)."""
    d = tmp_path_factory.mktemp("mixed")
    good = make_clip(d / "good.mp4", duration=3.0)
    cut = d / "cut.mkv"
    ffmpeg("-i", str(good), "-c", "copy", str(cut))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 3] + np.random.default_rng(0).bytes(len(data) // 3))
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).bytes(40_000))
    paths = [real_videos[0], clips / "ocean.mp4", cut, real_videos[1], clips / "silent.mp4", real_videos[2]]
    jobs = jobs_for(paths)
    jobs.insert(3, Job("f" * 24, VideoInput(corrupt, corrupt.name), dataclasses.replace(probe(good), path=corrupt)))
    jobs.append(Job("e" * 24, VideoInput(clips / "forest.mp4", "forest.mp4"), probe(clips / "forest.mp4")))
    return jobs


def as_bytes(outcomes) -> list[tuple]:
    return [
        (
            o.job.key,
            o.status,
            o.reason,
            None if o.feats is None else o.feats.tobytes(),
            None if o.ts is None else o.ts.tobytes(),
        )
        for o in outcomes
    ]


@pytest.mark.parametrize(
    "arg",
    ["resnet18:weights=random,fps=1,batch_size=5", "logmel:fps=4,window=0.25,batch_size=7"],
    ids=["resnet18", "logmel"],
)
def test_several_decoders_give_byte_identical_features(mixed_jobs, arg):
    one = list(run_encoder(build_encoder(arg + ",decoders=1"), mixed_jobs, timeout=30))
    enc = build_encoder(arg + ",decoders=3")
    stats = PipelineStats()
    three = list(run_encoder(enc, mixed_jobs, timeout=30, stats=stats))
    assert as_bytes(three) == as_bytes(one)
    if arg.startswith("logmel"):  # (cheap) decoders that wait with buffers at their minimum
        tight = list(run_encoder(enc, mixed_jobs, timeout=30, decoders=2, readahead_bytes=1))
        assert as_bytes(tight) == as_bytes(one)
    by_source = {o.job.video.source: o for o in one}
    assert [o.job.key for o in one] == [j.key for j in mixed_jobs]  # job order
    assert by_source["corrupt.mp4"].status == "failed" and by_source["corrupt.mp4"].reason
    assert by_source["bigbuckbunny.mp4"].status == "ok" and by_source["ocean.mp4"].status == "ok"
    assert by_source["cut.mkv"].status in ("ok", "failed")
    assert by_source["silent.mp4"].status == ("absent" if arg.startswith("logmel") else "ok")
    steps = sum(len(o.feats) for o in one if o.status == "ok")
    assert stats.decoders == 3 and stats.steps >= steps and stats.batches >= 1
    assert 0 < stats.encode_s <= stats.wall_s and 0 < stats.busy <= 1


def test_closing_early_stops_every_decoder_and_its_ffmpeg(real_videos, clips):
    jobs = jobs_for([clips / "ocean.mp4", real_videos[1], real_videos[0], real_videos[3], clips / "forest.mp4"])
    enc = build_encoder("resnet18:weights=random,fps=4,batch_size=2,decoders=3")
    gen = run_encoder(enc, jobs, timeout=30, readahead_bytes=1)
    assert next(gen).status == "ok"
    deadline = time.monotonic() + 10
    while not ffmpeg_children() and time.monotonic() < deadline:  # decoders ahead wait with ffmpeg open
        time.sleep(0.05)
    assert ffmpeg_children()
    gen.close()
    assert ffmpeg_children() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("mmcache-decoder")]


def test_an_encoder_error_stops_every_decoder(real_videos, clips):
    class Boom(RuntimeError):
        pass

    enc = build_encoder("resnet18:weights=random,fps=8,batch_size=4,decoders=2")
    calls = []

    def encode(payloads):
        calls.append(len(payloads))
        if len(calls) == 3:
            raise Boom("encoder broke")
        return np.zeros((len(payloads), enc.dim), np.float32)

    enc.encode = encode
    jobs = jobs_for([real_videos[1], real_videos[0], clips / "ocean.mp4"])
    with pytest.raises(Boom):
        list(run_encoder(enc, jobs, timeout=30))
    assert ffmpeg_children() == []


def test_a_stalled_video_fails_after_its_timeout_while_other_decoders_go_on(tmp_path, clips):
    make_clip(tmp_path / "parts" / "head.mp4", duration=1.0, size="64x48")
    stall = tmp_path / "stall.mp4"
    stall.write_text("ffconcat version 1.0\nfile parts/head.mp4\nfile parts/pipe.fifo\n")
    with stalling_fifo(tmp_path / "parts" / "pipe.fifo"):
        info = dataclasses.replace(probe(tmp_path / "parts" / "head.mp4"), path=stall)
        jobs = [Job("a" * 24, VideoInput(stall, stall.name), info)]
        jobs += jobs_for([clips / "ocean.mp4", clips / "forest.mp4", clips / "silent.mp4"])
        enc = build_encoder("logmel:fps=4,window=0.25,batch_size=3,decoders=2")
        t0 = time.monotonic()
        out = list(run_encoder(enc, jobs, timeout=3))
    assert time.monotonic() - t0 < 30
    assert out[0].status == "failed" and "stalled for more than 3 s" in out[0].reason
    assert [o.status for o in out[1:]] == ["ok", "ok", "absent"]
    assert ffmpeg_children() == []


@pytest.mark.parametrize("value", ["0", "x", "33", "1.5", "true"])
def test_decoders_option_is_validated(value):
    with pytest.raises(EncoderError, match=r"decoders=.*allowed: an integer 1-32, or auto"):
        check_encoder_arg(f"resnet18:decoders={value}")
    assert check_encoder_arg("resnet18:decoders=32")[2]["decoders"] == 32
    assert check_encoder_arg("resnet18")[2]["decoders"] == "auto"
    assert all("decoders" in spec.defaults for spec in REGISTRY.values())  # listed by `mmcache encoders`


def test_decoders_are_not_in_the_fingerprint():
    prints = {build_encoder(f"logmel:decoders={n}").fingerprint() for n in ("auto", 1, 3, 32)}
    assert len(prints) == 1
    assert "decoders" not in build_encoder("logmel:decoders=3").fingerprint_parts()["options"]


def test_auto_decoders_is_one_on_cpu_and_up_to_four_on_cuda():
    enc = build_encoder("logmel:device=cpu")
    assert enc.options["decoders"] == "auto" and resolve_decoders(enc) == 1
    assert resolve_decoders(SimpleNamespace(options={"decoders": "auto"}, device="cuda:0")) == min(4, cpu_count())
    assert resolve_decoders(SimpleNamespace(options={"decoders": 7}, device="cpu")) == 7


def test_a_cache_is_byte_identical_with_several_decoders(tmp_path, clips, real_videos):
    import mmcache

    inputs = [str(clips), str(real_videos[2])]
    for n in (1, 3):
        mmcache.extract(inputs, [f"resnet18:weights=random,fps=2,batch_size=3,decoders={n}"], tmp_path / f"c{n}")
    files = sorted(p.relative_to(tmp_path / "c1") for p in (tmp_path / "c1").rglob("*") if p.is_file())
    data = [f for f in files if f.parts[0] in ("resnet18", "samples")]
    assert len(data) == 2
    for f in data:
        assert (tmp_path / "c1" / f).read_bytes() == (tmp_path / "c3" / f).read_bytes(), f


def test_changing_decoders_on_a_rerun_is_a_no_op(tmp_path, clips):
    import mmcache

    mmcache.extract([str(clips)], ["logmel:fps=2,decoders=1"], tmp_path / "c")
    before = {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file() and "logmel" in p.parts}
    mmcache.extract([str(clips)], ["logmel:fps=2,decoders=3"], tmp_path / "c")
    assert {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file() and "logmel" in p.parts} == before


def test_batches_stay_in_place_on_the_cpu_and_normalisation_constants_are_made_once():
    enc = build_encoder("resnet18:weights=random,device=cpu")
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    t = enc.to_device(frames)
    assert not t.is_pinned() and t.data_ptr() == frames.__array_interface__["data"][0]  # no copy on CPU
    x = t.permute(0, 3, 1, 2)
    a = enc.normalise(x, enc.mean, enc.std, channel_dim=1)
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (enc.mean, enc.std))
    assert torch.equal(a, (x.float() / 255 - m) / s)  # the same numbers as before the constants were kept
    assert enc.normalise(x, enc.mean, enc.std, channel_dim=1) is not a and len(enc._consts) == 2


# -- decoded arrays given back to the decoders ------------------------------------------------------


def test_frame_pool_reuses_whole_arrays_within_its_byte_cap():
    from mmcache.decode import FramePool

    pool = FramePool(max_bytes=3 * 12)
    a, b = pool.take((2, 2, 3)), pool.take((2, 2, 3))
    assert a.shape == (2, 2, 3) and a.dtype == np.uint8 and a is not b
    pool.give([a, b, b[0], np.zeros(5, np.float32)])  # a view is never taken back
    assert pool.nbytes == 24  # the float array (20 bytes) would pass the cap of 36
    got = {id(pool.take((2, 2, 3))) for _ in range(2)}
    assert got == {id(a), id(b)}
    assert pool.take((2, 2, 3)) is not a  # empty again: a new array
    pool.give([np.zeros((2, 2, 3), np.uint8) for _ in range(5)])
    assert pool.nbytes <= pool.max_bytes


@pytest.mark.parametrize(
    "spec",
    ["resnet18:weights=random,fps=4,batch_size=3", "r3d_18:weights=random,fps=8,clip_len=4,stride=2,batch_size=2"],
)
def test_features_are_the_same_when_decoded_arrays_are_reused(clips, spec):
    """The pipeline gives each batch's frames (clips) back to decode.FRAMES once encoded and the
    decoders fill them again: features equal those of an encoder whose payloads are never reused."""
    from mmcache import decode

    jobs = jobs_for([clips / "ocean.mp4", clips / "forest.mp4"])
    enc = build_encoder(spec)
    assert type(enc).copies_payloads
    decode.FRAMES.clear()
    reused = list(run_encoder(enc, jobs, decoders=2))
    assert decode.FRAMES.nbytes > 0  # arrays were given back and are waiting for the next decode

    class Keeping(type(enc)):
        copies_payloads = False

    fresh = copy.copy(enc)  # the same built encoder (module, settings), its payloads never given back
    fresh.__class__ = Keeping
    decode.FRAMES.clear()
    plain = list(run_encoder(fresh, jobs, decoders=2))
    assert decode.FRAMES.nbytes == 0
    for a, b in zip(reused, plain, strict=True):
        assert a.status == b.status == "ok" and np.array_equal(a.feats, b.feats) and np.array_equal(a.ts, b.ts)
