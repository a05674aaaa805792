"""Reliability with real processes: SIGKILL `mmcache extract` and `mmfit train` at seeded random
points and re-run (the result must equal an uninterrupted run, byte for byte / tensor for tensor),
readers polling a cache while it is written, a second writer refused, the lock released by a crash,
and stalled inputs (named pipes) killed by the per-file timeout.

Killed runs are real processes running the console entry points (`mmcache.cli:app`, `mmfit.cli:app`,
what the `mmcache`/`mmfit` scripts call). Importing torch, torchvision and transformers takes 5-15 s
on a shared 2-core machine, so they are forked from one helper process that imported them once; the
second writer of the concurrency test is a plain `mmcache` script process, interpreter start included.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import stalling_fifo
from reliability_report import REPORT
from typer.testing import CliRunner

import mmcache
from mmcache.cli import app as mmcache_app
from mmcache.errors import CacheError
from mmcache.synth import make_clip, make_labelled_set

REPO = Path(__file__).resolve().parent.parent
# a small random-weight vision model (cheaper than resnet18 on CPU) + an audio front end: each run is
# a few seconds, yet kills land in hashing, probing, model building, decoding, encoding, publishing
ENCODERS = ["torchvision-image:model=mobilenet_v3_small,weights=random,fps=1,batch_size=1", "logmel:fps=1"]
SHARD_SIZE = 1
KILL_TRIALS = 10
TRAIN_KILLS = 2
SEED = 20240611


# -- helpers -------------------------------------------------------------------------------------


def published(root: Path) -> dict[str, str]:
    """sha256 of every file under the cache except lock files and the local hash memo."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock") and p.name != ".input-hashes.json"
    }


def temps(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".tmp-*"))


def descendants(pid: int) -> list[int]:
    """Child processes (ffmpeg) of `pid`, recursively, from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out += [int(child), *descendants(int(child))]
    return out


def kill_hard(pid: int) -> None:
    """SIGKILL a process we started, then the ffmpeg processes it had started (by id)."""
    kids = descendants(pid)
    for p in [pid, *kids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def cli_cmd(*args) -> list[str]:
    """The `mmcache` console script (`python -m mmcache.cli` runs nothing: cli.py has no __main__ guard)."""
    script = Path(sys.executable).parent / "mmcache"
    entry = "import sys; from mmcache.cli import app; sys.exit(app())"
    head = [str(script)] if script.is_file() else [sys.executable, "-c", entry]
    return [*head, *map(str, args)]


def wait_for(cond, timeout: float, what: str, step: float = 0.01) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


SERVER = r"""
import json, os, sys, traceback
import mmcache.cli, mmcache.extraction, mmcache.encoders, mmfit.cli, mmfit.trainer, mmfit.report  # paid once
APPS = {"mmcache": mmcache.cli.app, "mmfit": mmfit.cli.app}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child: one command line of the entry point, as the console script runs it
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(job["cwd"])
        code = 0
        try:
            APPS[job["prog"]](args=job["argv"], prog_name=job["prog"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Forker:
    """A helper process with mmcache/mmfit imported; forks one child per command line."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        self.lines: queue.Queue = queue.Queue()
        self._exit: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(300).get("ready")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"eof": True})

    def _next(self, timeout: float) -> dict:
        msg = self.lines.get(timeout=timeout)
        assert "eof" not in msg, "the fork helper died"
        return msg

    def start(self, prog: str, argv: list, log: Path) -> int:
        job = {"prog": prog, "argv": [str(a) for a in argv], "log": str(log), "cwd": str(self.cwd)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self._exit = None
        return self._next(60)["pid"]

    def poll(self) -> int | None:
        """The running child's exit code, or None while it runs."""
        if self._exit is None:
            try:
                msg = self.lines.get_nowait()
            except queue.Empty:
                return None
            assert "eof" not in msg, "the fork helper died"
            self._exit = msg["exit"]
        return self._exit

    def wait(self, timeout: float = 300) -> int:
        if self._exit is None:
            self._exit = self._next(timeout)["exit"]
        return self._exit

    def run(self, prog: str, argv: list, log: Path, timeout: float = 300) -> int:
        self.start(prog, argv, log)
        return self.wait(timeout)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    f = Forker(tmp_path_factory.mktemp("forked-cwd"))
    yield f
    f.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """base: 2 tiny clips; full: those + 1 more (3 shards of 1 video)."""
    d = tmp_path_factory.mktemp("kill-inputs")
    base, full = d / "base", d / "full"
    make_clip(base / "a.mp4", duration=1.0, size="64x48", variant=1)
    make_clip(base / "b.mp4", duration=1.5, size="64x48", variant=2, audio=False)
    shutil.copytree(base, full)
    make_clip(full / "c.mp4", duration=1.0, size="64x48", variant=3)
    return {"base": base, "full": full}


@dataclass
class Reference:
    root: Path
    files: dict[str, str]
    seconds: float  # how long the uninterrupted run took, from fork to exit (as killed runs are timed)
    template: Path | None = None  # the cache an 'extend' run starts from


def extract_args(videos: Path, out: Path) -> list[str]:
    args = ["extract", str(videos)]
    for e in ENCODERS:
        args += ["-e", e]
    return args + ["--out", str(out), "--shard-size", str(SHARD_SIZE)]


@pytest.fixture(scope="module")
def references(tmp_path_factory, inputs, forker) -> dict[str, Reference]:
    """Uninterrupted runs: 'fresh' (a new cache) and 'extend' (a cache with logmel for the 2 base
    videos, extended with the vision field and 1 new video: fields added to existing shards, plus a
    new shard). Both run as forked entry-point processes, timed as the killed runs are."""
    d = tmp_path_factory.mktemp("kill-refs")
    fresh = d / "fresh"
    t0 = time.monotonic()
    assert forker.run("mmcache", extract_args(inputs["full"], fresh), d / "fresh.log") == 0
    fresh_s = time.monotonic() - t0

    template = d / "extend-base"
    mmcache.extract([inputs["base"]], [ENCODERS[1]], template, shard_size=SHARD_SIZE)
    (template / ".input-hashes.json").unlink()  # killed runs hash again, so hashing can be hit too
    extend = d / "extend"
    shutil.copytree(template, extend)
    t0 = time.monotonic()
    assert forker.run("mmcache", extract_args(inputs["full"], extend), d / "extend.log") == 0
    extend_s = time.monotonic() - t0
    refs = {
        "fresh": Reference(fresh, published(fresh), fresh_s),
        "extend": Reference(extend, published(extend), extend_s, template),
    }
    for ref in refs.values():
        assert mmcache.verify_cache(ref.root) == [] and not temps(ref.root)
    return refs


def _listed(root: Path) -> int:
    """Files the manifest lists (samples indexes + field files); -1 without a manifest."""
    path = root / "manifest.json"
    if not path.is_file():
        return -1
    m = json.loads(path.read_text())
    return len(m["shards"]) + sum(len(f["files"]) for f in m["fields"].values())


# -- 2. crash safety -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_extract_at_random_points_then_rerun_gives_the_same_bytes(tmp_path, inputs, references, forker):
    rng = random.Random(SEED)
    case = REPORT.case(
        "crash",
        f"SIGKILL at seeded random points (hashing, probing, encoding, publishing), re-run; "
        f"{KILL_TRIALS // 2} on a new cache, {KILL_TRIALS // 2} extending one",
        KILL_TRIALS,
    )
    seen = []
    for i in range(KILL_TRIALS):
        kind = ("fresh", "extend")[i % 2]
        ref = references[kind]
        stratum, strata = i // 2, KILL_TRIALS // 2  # stratified delays cover the whole run
        delay = 0.9 * ref.seconds * (stratum + rng.random()) / strata
        root = tmp_path / f"trial{i:02d}-{kind}"
        if kind == "extend":
            shutil.copytree(ref.template, root)
        before = _listed(root)
        pid = forker.start("mmcache", extract_args(inputs["full"], root), tmp_path / f"trial{i:02d}.log")
        time.sleep(delay)
        kill_hard(pid)
        code = forker.wait()

        # what a crash leaves: published files that verify (or flagged as an incomplete extraction)
        left = temps(root)
        if (root / "manifest.json").is_file():
            problems = mmcache.verify_cache(root)
            assert all("incomplete extraction" in p for p in problems), problems
        seen.append(
            f"trial {i} ({kind}, {delay:.2f} s): "
            + ("finished first" if code == 0 else f"killed ({code})")
            + f", {max(_listed(root), 0) - max(before, 0)} files newly listed, {len(left)} temp files"
        )

        mmcache.extract([inputs["full"]], ENCODERS, root, shard_size=SHARD_SIZE)  # the re-run
        after = published(root)
        problems = mmcache.verify_cache(root)
        if after != ref.files or problems:
            case.lost += 1
        assert not temps(root), temps(root)
        changed = sorted(k for k in set(after) | set(ref.files) if after.get(k) != ref.files.get(k))
        assert changed == [], f"trial {i}: {changed}"
        assert problems == []
        case.ok()
    print("\n".join(seen))
    killed = sum("killed" in s for s in seen)
    assert killed >= 3, seen  # kills land inside the run (a run that ends first is a valid trial too)


# -- 4. concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
def test_readers_see_only_complete_shards_and_a_second_writer_is_refused(tmp_path, inputs, forker):
    """Run A (one video per shard) ends on a video whose decode stalls on a named pipe, so it keeps
    the lock while a reader polls the cache and run B, a plain `mmcache extract` process, tries to
    write the same cache; then A is SIGKILLed and run C completes the cache."""
    videos = tmp_path / "videos"
    shutil.copytree(inputs["full"], videos)
    (videos / "zz_stall.mp4").write_text("ffconcat version 1.0\nfile parts/head.mp4\nfile parts/pipe.fifo\n")
    make_clip(videos / "parts" / "head.mp4", duration=2.0, size="64x48", variant=5)
    root = tmp_path / "cache"
    args = [*extract_args(videos, root), "--timeout", "600"]
    n_good = 4  # a, b, c, parts/head.mp4; zz_stall.mp4 comes last
    reads = REPORT.case("concurrency", "reader polling open_cache + verify_cache + load_field during extraction", 1)
    second = REPORT.case("concurrency", "second `mmcache extract` on a locked cache refused (exit 1)", 1)
    crash = REPORT.case("concurrency", "lock released by SIGKILL of the writer; the next run completes", 1)

    states, polls, problems = set(), 0, []

    def poll_once():
        nonlocal polls
        try:
            cache = mmcache.open_cache(root)
        except CacheError as e:
            if (root / "manifest.json").exists():
                problems.append(f"manifest unreadable while written: {e}")
            return
        polls += 1
        problems.extend(mmcache.verify_cache(root))
        for name, field in cache.fields.items():  # every listed file is complete and readable
            arrays = cache.load_field(name)
            expected = sum(e["count"] for e in field["files"].values())
            if int(arrays.present.sum()) != expected:
                problems.append(f"{name}: {int(arrays.present.sum())} samples read, manifest lists {expected}")
        states.add(len(cache.shards))

    a_log = tmp_path / "a.log"
    with stalling_fifo(videos / "parts" / "pipe.fifo"):
        pid = forker.start("mmcache", args, a_log)
        try:
            deadline = time.monotonic() + 300
            while max(states, default=0) < n_good:  # A has published every good shard: now it stalls
                assert forker.poll() is None, a_log.read_text()[-2000:]
                assert time.monotonic() < deadline, "run A never published its shards"
                poll_once()
                time.sleep(0.02)
            b = subprocess.Popen(cli_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
            while b.poll() is None:  # keep reading while B starts, finds the lock taken and gives up
                poll_once()
                time.sleep(0.05)
            b_out, b_err = b.communicate()
            assert b.returncode == 1, (b_out + b_err).decode()[-2000:]
            assert b"another mmcache process" in b_err, b_err.decode()
            assert b"Traceback" not in b_err
            second.ok()
            assert forker.poll() is None  # A still holds the lock, stalled on the pipe
        finally:
            kill_hard(pid)
            code = forker.wait(60)
        assert code == -signal.SIGKILL
        poll_once()
        print(f"reader: {polls} reads of the manifest, shard counts seen {sorted(states)}")
        if problems:
            reads.lost += 1
        assert problems == []
        assert len(states) >= 2  # the reader really raced the writer
        reads.ok()

        # C: the lock died with A; the stalled video now fails after 2 s and the cache completes
        report = mmcache.extract([videos], ENCODERS, root, shard_size=1, timeout=2)
    assert report.cached == n_good and report.new_failed == 1
    assert "stalled" in report.failures[0][1] and "zz_stall.mp4" in report.failures[0][1]
    assert mmcache.verify_cache(root) == [] and not temps(root)
    rows = mmcache.open_cache(root).samples()
    assert sum(r["status"] == "ok" for r in rows) == n_good
    crash.ok()


# -- 5. stalls -----------------------------------------------------------------------------------


def test_stalled_inputs_become_failure_rows_and_the_run_goes_on(tmp_path, inputs):
    """Named pipes whose writer never writes enough: given as the video itself (never read: hashing a
    pipe used to block forever before any timeout applied), behind ffprobe (an ffconcat file listing
    the pipe first), and behind ffmpeg's decode (a real clip, then the pipe): each becomes a failure
    row within the `--timeout 2`, and the other videos are ok."""
    videos = tmp_path / "videos"
    shutil.copytree(inputs["base"], videos)
    parts = videos / "parts"
    parts.mkdir()
    make_clip(parts / "head.mp4", duration=2.0, size="96x64", variant=7)
    (videos / "probe_stall.mp4").write_text("ffconcat version 1.0\nfile parts/p1.fifo\n")
    (videos / "decode_stall.mp4").write_text("ffconcat version 1.0\nfile parts/head.mp4\nfile parts/p2.fifo\n")
    direct = tmp_path / "direct" / "pipe.mp4"
    direct.parent.mkdir()
    case = REPORT.case("stall", "named pipes (as the input, behind ffprobe, behind ffmpeg) with `--timeout 2`", 3)
    n_good = len(list(inputs["base"].glob("*.mp4"))) + 1  # + parts/head.mp4
    others = REPORT.case("stall", "other videos of the same run ok", n_good)
    root = tmp_path / "cache"
    result = {}
    argv = [*extract_args(videos, root), str(direct), "--timeout", "2"]
    run = threading.Thread(target=lambda: result.update(res=CliRunner().invoke(mmcache_app, argv)), daemon=True)
    with stalling_fifo(parts / "p1.fifo"), stalling_fifo(parts / "p2.fifo"), stalling_fifo(direct):
        t0 = time.monotonic()
        run.start()
        run.join(timeout=120)
        took = time.monotonic() - t0
    assert took < 120, "the run blocked on a named pipe (it went on only once the pipe's writer closed)"
    run.join(timeout=60)
    res = result["res"]
    assert res.exit_code == 0, res.output
    rows = {r["source"]: r for r in mmcache.open_cache(root).samples()}
    reasons = {
        str(direct): "not a regular file",
        "probe_stall.mp4": "ffprobe timed out after 2 s",
        "decode_stall.mp4": "ffmpeg stalled for more than 2 s and was killed",
    }
    for source, words in reasons.items():
        assert rows[source]["status"] == "failed" and words in rows[source]["error"], rows[source]
        case.ok()
    good = [s for s in rows if s not in reasons]
    assert len(good) == n_good and all(rows[s]["status"] == "ok" for s in good)
    others.ok(len(good))
    assert mmcache.verify_cache(root) == []


# -- 7. trainer ----------------------------------------------------------------------------------


def _epochs_done(out: Path, n: int) -> bool:
    """At least n epochs logged and a checkpoint published."""
    try:
        return len((out / "metrics.jsonl").read_text().splitlines()) >= n and (out / "last.pt").exists()
    except OSError:
        return False


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory) -> tuple[Path, Path]:
    """6 labelled tiny clips (audio fields only: quick to extract) and labels with a split column."""
    d = tmp_path_factory.mktemp("train")
    make_labelled_set(d / "videos", per_class=2, duration=1.0, size="64x48")
    mmcache.extract([d / "videos" / "videos.csv"], ["logmel:fps=2,window=0.5", "mfcc:fps=2"], d / "cache")
    rows = list(csv.DictReader(open(d / "videos" / "labels.csv")))
    split = ["train", "train", "val", "train", "train", "test"]
    labels = d / "labels.csv"
    labels.write_text(
        "id,label,split\n" + "".join(f"{r['id']},{r['label']},{sp}\n" for r, sp in zip(rows, split, strict=True))
    )
    return d / "cache", labels


@pytest.mark.slow
def test_sigkill_of_mmfit_train_then_resume_gives_bitwise_identical_weights(tmp_path, train_cache, forker):
    cache, labels = train_cache
    cfg = {
        "cache": str(cache),
        "labels": str(labels),
        "fusion": "gated",
        "hidden": 16,
        "epochs": 40,
        "batch_size": 1,
        "patience": 1000,
        "device": "cpu",
        "seed": 3,
    }
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))

    def train(out: Path, *extra) -> int:
        return forker.start("mmfit", ["train", "--config", config, "--out", out, *extra], out.with_suffix(".log"))

    ref = tmp_path / "ref"
    train(ref)
    assert forker.wait() == 0, ref.with_suffix(".log").read_text()[-3000:]
    want = {name: _weights(ref / name) for name in ("best.pt", "last.pt")}
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    epoch_s = sum(r["train/epoch_s"] for r in ref_rows) / len(ref_rows)

    rng = random.Random(SEED + 1)
    case = REPORT.case(
        "trainer",
        "SIGKILL of `mmfit train` after >= 1 epoch, then `--resume last.pt`: bitwise-equal weights",
        TRAIN_KILLS,
    )
    for trial in range(TRAIN_KILLS):
        out = tmp_path / f"killed{trial}"
        target = rng.randint(1, cfg["epochs"] - 5)  # epochs finished before the kill, at least one
        pid = train(out)
        wait_for(lambda out=out, t=target: _epochs_done(out, t) or forker.poll() is not None, 300, "epochs")
        time.sleep(rng.uniform(0, 1.5) * epoch_s)  # somewhere inside the next epoch, its eval or checkpoint
        kill_hard(pid)
        code = forker.wait()
        epoch = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["epoch"]
        print(f"trainer trial {trial}: exit {code} after epoch {epoch} of {cfg['epochs']}")
        assert code == -signal.SIGKILL and 1 <= epoch < cfg["epochs"]
        train(out, "--resume", out / "last.pt")
        assert forker.wait() == 0, out.with_suffix(".log").read_text()[-3000:]
        same = True
        for name, tensors in want.items():
            got = _weights(out / name)
            same &= got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
        if not same:
            case.lost += 1
        assert same, f"trial {trial}: resumed weights differ from the uninterrupted run"
        losses = [json.loads(x)["val/loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert losses == [r["val/loss"] for r in ref_rows]
        case.ok()


def test_python_dash_m_mmfit_cli_runs_the_app():
    """Fixed in mmfit/cli.py: without a __main__ guard `python -m mmfit.cli train ...` did nothing, exit 0."""
    res = subprocess.run([sys.executable, "-m", "mmfit.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "train" in res.stdout, res.stdout + res.stderr


def test_python_dash_m_mmcache_cli_runs_the_app():
    res = subprocess.run([sys.executable, "-m", "mmcache.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "extract" in res.stdout, res.stdout + res.stderr
