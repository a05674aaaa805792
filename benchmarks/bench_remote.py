#!/usr/bin/env python
"""Reading a cache from an S3-compatible object store: mmcache against plain s3fs reads of the same
files, every byte sha256-checked on both sides.

    python benchmarks/bench_remote.py            # full run (~2 min on a quiet 2-core CPU), updates
                                                 # benchmarks/RESULTS.md
    python benchmarks/bench_remote.py --quick    # smoke (300 clips, 1 round, < 60 s), writes
                                                 # bench-out/RESULTS-quick.md

Server: moto's S3 server (`moto[server]`, the same HTTP API as S3) on a free loopback port, started as a
separate process (`python -m moto.server`), not as moto's in-process thread: a server thread would
share this process's interpreter lock with the reader it serves (mmcache's fetch threads and the
parsing compete with it, the plain loop less so), and its CPU would be counted as ours. As a process
its CPU is read from /proc and reported on its own, and it is not counted as "others" (the other
processes whose CPU use marks a round disturbed). Test credentials are set in this process's
environment (no profile or instance metadata is consulted); nothing leaves the machine.

Cache: the synthetic cache of synthetic.py (bench_train's: three float16 fields of 16 steps, 512/768/384
dims, shards of 256 clips) with --clips clips (full 4096: 16 shards, 48 field files + 16 samples
indexes, 245 MB; quick 300: 2 shards, 18 MB), written through mmcache's writers under bench-out/bench_remote/ (reused),
then uploaded file by file with plain s3fs `pipe_file` (no mmcache code), the manifest last.

Each round measures, back to back (order reversed every other round; pairs compared within a round):
  plain       independent of mmcache: s3fs `cat_file` of manifest.json, then of every listed file
              (samples indexes, then each field's files) one after another, each one's length and
              hashlib.sha256 compared with the manifest's. The baseline of the target.
  plain_nosha the same without the sha256 (context: what the hashing costs).
  load_field  `with configured({"endpoint_url": ...}): open_cache(url)`, then `load_field(name)` for
              every field: every byte sha256-checked and parsed into arrays (mmcache's reader fetches
              the next files in background threads while it checks one).
  verify      `verify_cache(url)`: every file read once, sha256 and size compared, every shard parsed
              and its samples checked against the manifest and the samples index.
  fetch       with a fetch cache (cache_dir, a fresh folder each round): the first open_cache +
              load_field of every field (fetches and keeps every file), then a second one, served from
              the local copies (each still sha256-checked).
MB/s counts the listed files (samples indexes + field files) once per read. Target (issue 12): load_field's
MB/s >= 0.8 x plain's, with sha256 checking on. A round counts when other processes used at most
--max-others of the CPUs during each of its measurements (the server's CPU excluded); disturbed rounds
are repeated (at most --rounds + 3 rounds). Medians over the rounds used.
Raw JSON: bench-out/bench_remote/results[-quick].json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from common import NCPU, Bench, Disturbed, Meter, log, machine_line, med, spread, undisturbed, verdict, wait_quiet
from synthetic import FIELDS, SHARD_SIZE, STEPS, ensure_cache

RATIO_MIN = 0.8
BUCKET = "bench-remote"
PREFIX = "cache"
WAYS = ("plain", "load_field", "plain_nosha", "verify", "fetch")  # one round's order (reversed every other)
ROWS = ("plain", "plain_nosha", "load_field", "verify", "fetch_first", "fetch_second")
TEST_ENV = {  # moto accepts any credentials; never fall back on a real profile or instance metadata
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
NOT_INHERITED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MMCACHE_CACHE_DIR")


# ---------------------------------------------------------------------------------------------
# the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """In the server's process before it runs: SIGTERM when this process dies (Linux's
    PR_SET_PDEATHSIG), so a killed benchmark leaves no server behind."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def moto_server(work: Path):
    """moto's S3 server as a child process on a free loopback port: (endpoint URL, its pid)."""
    for k in NOT_INHERITED:
        os.environ.pop(k, None)
    os.environ.update(TEST_ENV)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(work / "no-credentials")
    os.environ["AWS_CONFIG_FILE"] = str(work / "no-config")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = work / "moto_server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        log(f"moto server (pid {proc.pid}) on {endpoint}")
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def plain_fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def upload(fs, cache: Path, base: str) -> int:
    """Every file of the cache directory as it is (like `aws s3 sync`), the manifest last; bytes sent."""
    files = sorted(p for p in cache.rglob("*") if p.is_file() and p.name != "manifest.json")
    n = 0
    for path in [*files, cache / "manifest.json"]:
        data = path.read_bytes()
        fs.pipe_file(f"{base}/{path.relative_to(cache).as_posix()}", data)
        n += len(data)
    return n


# ---------------------------------------------------------------------------------------------
# the two sides


def listed(manifest: dict) -> list[dict]:
    """Every file entry of a manifest: samples indexes, then each field's files."""
    files = [manifest["shards"][s] for s in sorted(manifest["shards"])]
    for name in sorted(manifest["fields"]):
        files += [e for _, e in sorted(manifest["fields"][name]["files"].items())]
    return files


def plain_read(fs, base: str, check: bool = True) -> int:
    """s3fs cat_file of manifest.json and of every file it lists, one after another; each compared with
    the manifest's size and (`check`) sha256. Bytes of the listed files."""
    manifest = json.loads(fs.cat_file(f"{base}/manifest.json"))
    n = 0
    for e in listed(manifest):
        data = fs.cat_file(f"{base}/{e['path']}")
        if len(data) != e["bytes"] or (check and hashlib.sha256(data).hexdigest() != e["sha256"]):
            raise RuntimeError(f"{e['path']}: does not match the manifest")
        n += len(data)
    return n


def mm_load(url: str, options: dict, cache_dir: Path | None = None) -> int:
    """open_cache + load_field of every field (every byte checked and parsed); samples read."""
    from mmcache import open_cache
    from mmcache.transport import configured

    n = 0
    with configured(options, cache_dir):
        cache = open_cache(url)
        try:
            for name in cache.fields:
                x = cache.load_field(name)
                n += len(x.feats)
                del x
        finally:
            cache.close()
    return n


def mm_verify(url: str, options: dict) -> int:
    from mmcache import verify_cache
    from mmcache.transport import configured

    with configured(options):
        problems = verify_cache(url)
    if problems:
        raise RuntimeError(f"verify_cache({url}) found problems: {problems[:3]}")
    return 0


# ---------------------------------------------------------------------------------------------
# rounds


@dataclass
class Measure:
    wall: float
    cpu: float  # this process's CPU seconds
    server_cpu: float  # moto server's CPU seconds
    others: float  # share of the CPUs other processes (not us, not the server) used meanwhile


@dataclass
class Round(Disturbed):
    attempt: int
    order: list[str]
    measures: dict[str, Measure]

    def stages(self) -> list[Measure]:
        return list(self.measures.values())

    def ratio(self, way: str, base: str = "plain") -> float:
        """way's throughput / base's (both read the same bytes)."""
        return self.measures[base].wall / self.measures[way].wall

    @classmethod
    def of(cls, d: dict) -> Round:
        return cls(d["attempt"], d["order"], {k: Measure(**v) for k, v in d["measures"].items()})


def timed(fn, server_pid: int) -> Measure:
    s0 = proc_cpu(server_pid)
    with Meter() as m:
        fn()
    server = proc_cpu(server_pid) - s0
    others = max(m.others - server / (NCPU * max(m.wall, 1e-9)), 0.0)
    return Measure(m.wall, m.cpu, server, others)


def run_way(way: str, ctx: dict, server_pid: int) -> dict[str, Measure]:
    fs, base, url, opts = ctx["fs"], ctx["base"], ctx["url"], ctx["options"]
    if way == "plain":
        return {way: timed(lambda: plain_read(fs, base), server_pid)}
    if way == "plain_nosha":
        return {way: timed(lambda: plain_read(fs, base, check=False), server_pid)}
    if way == "load_field":
        return {way: timed(lambda: mm_load(url, opts), server_pid)}
    if way == "verify":
        return {way: timed(lambda: mm_verify(url, opts), server_pid)}
    d = Path(tempfile.mkdtemp(prefix="fetched-", dir=ctx["work"]))
    try:
        first = timed(lambda: mm_load(url, opts, d), server_pid)
        second = timed(lambda: mm_load(url, opts, d), server_pid)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"fetch_first": first, "fetch_second": second}


def run_rounds(ctx: dict, server_pid: int, rounds: int, max_others: float, attempts: int) -> list[Round]:
    done: list[Round] = []
    nbytes = ctx["bytes"]
    while sum(not r.noisy(max_others) for r in done) < rounds and len(done) < attempts:
        if done and done[-1].noisy(max_others):
            seen = wait_quiet(max_others, 60)
            log(f"  waited for a quieter machine: others {seen:.0%}")
        order = list(WAYS) if len(done) % 2 == 0 else list(WAYS)[::-1]
        ms: dict[str, Measure] = {}
        for way in order:
            ms.update(run_way(way, ctx, server_pid))
        rnd = Round(len(done) + 1, order, ms)
        done.append(rnd)
        log(
            f"round {rnd.attempt}: "
            + ", ".join(f"{k} {nbytes / 1e6 / ms[k].wall:.0f} MB/s ({ms[k].others:.0%})" for k in ROWS)
            + f" -> load_field/plain {rnd.ratio('load_field'):.2f}"
            + (f" (disturbed: others above {max_others:.0%})" if rnd.noisy(max_others) else "")
        )
    return done


# ---------------------------------------------------------------------------------------------
# report

WHAT = {
    "plain": "plain s3fs: `cat_file` of every listed file, one after another, + hashlib.sha256 compared",
    "plain_nosha": "plain s3fs, no sha256 (size compared only)",
    "load_field": "mmcache: `open_cache(url)` + `load_field(name)` for every field (sha256-checked, parsed)",
    "verify": "mmcache: `verify_cache(url)` (sha256, size, every shard parsed and its samples checked)",
    "fetch_first": "mmcache with a fetch cache, first read: open + `load_field` of every field, keeping each file",
    "fetch_second": "mmcache with a fetch cache, second read: the same, served from the local copies",
}


def render(raw: dict) -> tuple[str, list[bool]]:
    m, p = raw["machine"], raw["params"]
    rounds = [Round.of(r) for r in raw["rounds"]]
    limit = p["max_others"]
    used = undisturbed(rounds, limit)
    all_noisy = not any(not r.noisy(limit) for r in rounds)
    nbytes = p["bytes"]
    out = [
        machine_line(m),
        "",
        f"Server: moto {m['moto']} (`python -m moto.server`, a separate process on a loopback port; S3's HTTP API), "
        f"read with s3fs {m['s3fs']} (botocore {m['botocore']}). Cache: {p['clips']} synthetic clips, "
        f"{len(p['fields'])} float16 fields ({', '.join(p['fields'])}) of {p['steps']} steps, {p['shards']} "
        f"shards: {p['files']} listed files (samples indexes + field files), {nbytes / 1e6:.1f} MB, uploaded "
        "with plain s3fs `pipe_file`. Every read below reads all of them once (and manifest.json).",
        "",
        f"A round runs every way back to back, the order reversed every other round; ratios are per round "
        f"(same bytes, so a throughput ratio is the inverse time ratio), medians (min-max) over the rounds used: "
        f"{len(used)} of {len(rounds)}"
        + (
            " (all disturbed: the numbers are noisy)."
            if all_noisy
            else f" (a round counts when other processes used at most {limit:.0%} of the CPUs during each of its "
            "measurements; the server's CPU is not counted as others')."
        ),
        "",
        "| read | what it does | MB/s (median) | ratio to plain s3fs + sha256 | min-max | target | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    checks = []
    for k in ROWS:
        mbs = med([nbytes / 1e6 / r.measures[k].wall for r in used])
        if k == "plain":
            out.append(f"| {k} | {WHAT[k]} | {mbs:.0f} | 1 (baseline) |  |  |  |")
            continue
        r = [x.ratio(k) for x in used]
        target, result = "(context)", ""
        if k == "load_field":
            ok = med(r) >= RATIO_MIN
            checks.append(ok)
            target, result = f">= {RATIO_MIN}", verdict(ok)
        out.append(f"| {k} | {WHAT[k]} | {mbs:.0f} | {med(r):.2f} | {spread(r)} | {target} | {result} |")
    out += [
        "",
        "CPU per MB read (medians over the rounds used; ms of CPU per MB of listed files): this process (all its "
        "threads), moto's server, and the largest share of the CPUs other processes took during the measurement:",
        "",
        "| read | wall s | this process, ms/MB | server, ms/MB | others (max) |",
        "|---|---:|---:|---:|---:|",
    ]
    mb = nbytes / 1e6
    for k in ROWS:
        xs = [r.measures[k] for r in used]
        out.append(
            f"| {k} | {med([x.wall for x in xs]):.2f} | {med([x.cpu for x in xs]) * 1e3 / mb:.1f} | "
            f"{med([x.server_cpu for x in xs]) * 1e3 / mb:.1f} | {max(x.others for x in xs):.0%} |"
        )
    lf = med([r.ratio("load_field") for r in used])
    out += [
        "",
        f"mmcache's `load_field` reads the cache at **{lf:.2f}x** the plain s3fs read with sha256 "
        f"(target >= {RATIO_MIN}: {verdict(lf >= RATIO_MIN)}). Setup: the cache was built in {p['build_s']:.1f} s"
        f"{' (by an earlier run, reused)' if not p['built'] else ''}, uploaded in {p['upload_s']:.1f} s.",
        "",
    ]
    return "\n".join(out) + "\n", checks


# ---------------------------------------------------------------------------------------------


def options(ap) -> None:
    ap.add_quick("--clips", 4096, 300, "clips in the synthetic cache (shards of 256)", type=int)
    ap.add_quick("--rounds", 15, 1, "undisturbed rounds", type=int)
    ap.add_max_others(0.25, "one of its measurements")


def versions() -> dict:
    from importlib.metadata import version

    return {k: version(k) for k in ("moto", "s3fs", "botocore")}


def measure(a) -> dict:
    if a.rounds < 1 or a.clips < 1:
        raise SystemExit("--rounds and --clips must be at least 1")
    try:
        facts = versions()
        import moto.server  # noqa: F401  (moto[server]: flask, werkzeug)
    except ImportError as e:
        raise SystemExit(f"{e.name} is not installed: pip install -e .[dev] (s3fs, moto[server])") from None
    work = a.out / "bench_remote"
    cache, built = ensure_cache(work, a.clips)
    manifest = json.loads((cache / "manifest.json").read_text())
    files = listed(manifest)
    nbytes = sum(e["bytes"] for e in files)
    log(f"cache: {cache} ({len(files)} listed files, {nbytes / 1e6:.1f} MB)")
    with moto_server(work) as (endpoint, pid):
        fs = plain_fs(endpoint)
        fs.mkdir(BUCKET)
        base = f"{BUCKET}/{PREFIX}"
        t0 = time.perf_counter()
        upload(fs, cache, base)
        upload_s = time.perf_counter() - t0
        log(f"uploaded in {upload_s:.1f} s")
        ctx = {
            "fs": fs,
            "base": base,
            "url": f"s3://{base}",
            "options": {"endpoint_url": endpoint},
            "work": work,
            "bytes": nbytes,
        }
        log("warm-up: every way once")
        for way in WAYS:
            ms = run_way(way, ctx, pid)
            log("  " + ", ".join(f"{k} {nbytes / 1e6 / x.wall:.0f} MB/s" for k, x in ms.items()))
        attempts = a.rounds if a.quick else a.rounds + 3
        rounds = run_rounds(ctx, pid, a.rounds, a.max_others, attempts)
    params = {
        "clips": a.clips,
        "steps": STEPS,
        "shards": -(-a.clips // SHARD_SIZE),
        "fields": list(FIELDS),
        "files": len(files),
        "bytes": nbytes,
        "rounds": a.rounds,
        "max_others": a.max_others,
        "attempts": attempts,
        "build_s": built["build_s"] or 0.0,
        "built": built["built"],
        "upload_s": upload_s,
        "quick": a.quick,
    }
    return {"machine": facts, "params": params, "rounds": [asdict(r) for r in rounds]}


BENCH = Bench("bench_remote", __doc__, measure, render, options, custom=("clips", "rounds", "max_others"))

if __name__ == "__main__":
    sys.exit(BENCH.main())
