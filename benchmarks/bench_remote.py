#!/usr/bin/env python
"""Reading a cache from an S3-compatible store (moto's server on loopback): mmcache against plain s3fs, sha256-checked.

    python benchmarks/bench_remote.py            # full run (~2 min on a quiet 2-core CPU), updates RESULTS.md
    python benchmarks/bench_remote.py --quick    # smoke (300 clips, 1 round, < 60 s), bench-out/RESULTS-quick.md

Target (issue 12): load_field's MB/s >= 0.8 x plain s3fs's (cat_file + sha256), with sha256 checking on.
Method: docs/benchmarks.md
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

from common import NCPU, Bench, Meter, log, machine_line, med, spread, table, undisturbed, verdict, wait_quiet
from synthetic import FIELDS, STEPS, ensure_cache

RATIO_MIN = 0.8
WAYS = ("plain", "load_field", "plain_nosha", "verify", "fetch")  # one round's order (reversed every other)
# moto accepts any credentials; never fall back on a real profile or instance metadata
TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
NOT_INHERITED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MMCACHE_CACHE_DIR")
WHAT = {  # the rows of the tables (the way fetch gives two: its first and second read)
    "plain": "plain s3fs: `cat_file` of every listed file, one after another, + hashlib.sha256 compared",
    "plain_nosha": "plain s3fs, no sha256 (size compared only)",
    "load_field": "mmcache: `open_cache(url)` + `load_field(name)` for every field (sha256-checked, parsed)",
    "verify": "mmcache: `verify_cache(url)` (sha256, size, every shard parsed and its samples checked)",
    "fetch_first": "mmcache with a fetch cache, first read: open + `load_field` of every field, keeping each file",
    "fetch_second": "mmcache with a fetch cache, second read: the same, served from the local copies",
}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc/PID/stat."""
    v = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the server is never waited for meanwhile
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def moto_server(work: Path):
    """moto's S3 server as a child process on a free loopback port, test credentials only: (endpoint, pid)."""
    for k in NOT_INHERITED:
        os.environ.pop(k, None)
    no_files = {"AWS_CONFIG_FILE": str(work / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials")}
    os.environ.update(TEST_ENV, AWS_EC2_METADATA_DISABLED="true", **no_files)
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    pdeath = functools.partial(ctypes.CDLL(None).prctl, 1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server dies with us
    endpoint, log_path = f"http://127.0.0.1:{port}", work / "moto_server.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=pdeath)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield endpoint, proc.pid
    finally:
        proc.kill()  # a throwaway server: nothing to save
        proc.wait()


def listed(manifest: dict) -> list[dict]:
    """Every file entry of a manifest: samples indexes, then each field's files."""
    fields = [manifest["fields"][name]["files"] for name in sorted(manifest["fields"])]
    return [manifest["shards"][s] for s in sorted(manifest["shards"])] + [f[k] for f in fields for k in sorted(f)]


def plain_read(fs, base: str, check: bool = True) -> None:
    """s3fs cat_file of manifest.json, then of each file it lists; each one's size and (`check`) sha256 compared."""
    for e in listed(json.loads(fs.cat_file(f"{base}/manifest.json"))):
        data = fs.cat_file(f"{base}/{e['path']}")
        if len(data) != e["bytes"] or (check and hashlib.sha256(data).hexdigest() != e["sha256"]):
            raise RuntimeError(f"{e['path']}: does not match the manifest")


def mm_read(url: str, options: dict, cache_dir: Path | None = None, verify: bool = False) -> None:
    """mmcache: `verify_cache(url)`, or open_cache + load_field of every field (every byte checked and parsed)."""
    from mmcache import open_cache, verify_cache
    from mmcache.transport import configured

    with configured(options, cache_dir):
        if not verify:
            with open_cache(url) as cache:
                for name in cache.fields:
                    cache.load_field(name)  # read, checked, parsed into arrays, dropped
        elif problems := verify_cache(url):
            raise RuntimeError(f"verify_cache({url}) found problems: {problems[:3]}")


def run_round(reads: dict, order, pid: int, fetched: Path, label: str, nbytes: int) -> dict[str, dict]:
    """Every way once, in `order` (fetch: a first and a second read, with a fetch cache in a fresh folder)."""
    measures = {}
    for way in order:
        shutil.rmtree(fetched, ignore_errors=True)
        for name in ("fetch_first", "fetch_second") if way == "fetch" else [way]:
            s0 = proc_cpu(pid)
            with Meter() as m:
                reads[way]()
            server = proc_cpu(pid) - s0
            others = max(m.others - server / (NCPU * max(m.wall, 1e-9)), 0.0)  # the server is not "others"
            measures[name] = {"wall": m.wall, "cpu": m.cpu, "server_cpu": server, "others": others}
    shutil.rmtree(fetched, ignore_errors=True)
    speeds = (f"{k} {nbytes / 1e6 / x['wall']:.0f} MB/s ({x['others']:.0%} others)" for k, x in measures.items())
    log(f"{label}: {', '.join(speeds)}")
    return measures


def noisy(rnd: dict, limit: float) -> bool:
    """Whether other processes used more than `limit` of the CPUs during one of a round's measurements."""
    return max(m["others"] for m in rnd["measures"].values()) > limit


def render(raw: dict) -> tuple[str, list[bool]]:
    m, p, rounds = raw["machine"], raw["params"], raw["rounds"]
    limit, mb = p["max_others"], p["bytes"] / 1e6
    used = undisturbed(rounds, lambda r: noisy(r, limit))
    counts = "all disturbed: the numbers are noisy"
    if any(not noisy(r, limit) for r in rounds):
        counts = f"a round counts when other processes used at most {limit:.0%} of the CPUs during each of its "
        counts += "measurements; the server's CPU is not counted as others'"
    head = "read | what it does | MB/s (median) | ratio to plain s3fs + sha256 | min-max | target | result"
    reads, cpus = [], []
    for k, what in WHAT.items():
        xs = [r["measures"][k] for r in used]
        rs = [r["measures"]["plain"]["wall"] / r["measures"][k]["wall"] for r in used]  # same bytes: speed ratios
        per_mb = [f"{med([x[c] for x in xs]) * 1e3 / mb:.1f}" for c in ("cpu", "server_cpu")]
        cpus.append([k, f"{med([x['wall'] for x in xs]):.2f}", *per_mb, f"{max(x['others'] for x in xs):.0%}"])
        cells = ["1 (baseline)", "", "", ""] if k == "plain" else [f"{med(rs):.2f}", spread(rs), "(context)", ""]
        if k == "load_field":
            lf = med(rs)
            cells[2:] = [f">= {RATIO_MIN}", verdict(lf >= RATIO_MIN)]
        reads.append([k, what, f"{med([mb / x['wall'] for x in xs]):.0f}", *cells])
    out = [  # a "\n" ending a line leaves a blank line after it
        machine_line(m) + "\n",
        f"Server: moto {m['moto']} (`python -m moto.server`, a separate process on a loopback port; S3's HTTP API), "
        f"read with s3fs {m['s3fs']} (botocore {m['botocore']}). Cache: {p['clips']} synthetic clips, "
        f"{len(p['fields'])} float16 fields ({', '.join(p['fields'])}) of {p['steps']} steps, {p['shards']} "
        f"shards: {p['files']} listed files (samples indexes + field files), {mb:.1f} MB, uploaded "
        "with plain s3fs `pipe_file`. Every read below reads all of them once (and manifest.json).\n",
        f"A round runs every way back to back, the order reversed every other round; ratios are per round "
        f"(same bytes, so a throughput ratio is the inverse time ratio), medians (min-max) over the rounds used: "
        f"{len(used)} of {len(rounds)} ({counts}).\n",
        table(head, "llrrrrl", reads),
        "\nCPU per MB read (medians over the rounds used; ms of CPU per MB of listed files): this process (all its "
        "threads), moto's server, and the largest share of the CPUs other processes took during the measurement:\n",
        table("read | wall s | this process, ms/MB | server, ms/MB | others (max)", "lrrrr", cpus),
        f"\nmmcache's `load_field` reads the cache at **{lf:.2f}x** the plain s3fs read with sha256 "
        f"(target >= {RATIO_MIN}: {verdict(lf >= RATIO_MIN)}). Setup: the cache was built in {p['build_s']:.1f} s"
        f"{' (by an earlier run, reused)' if not p['built'] else ''}, uploaded in {p['upload_s']:.1f} s.\n",
    ]
    return "\n".join(out) + "\n", [lf >= RATIO_MIN]


def options(ap) -> None:
    ap.add_quick("--clips", 4096, 300, "clips in the synthetic cache (shards of 256)", type=int)
    ap.add_quick("--rounds", 15, 1, "undisturbed rounds", type=int)
    ap.add_max_others(0.25, "one of its measurements")


def measure(a) -> dict:
    if a.rounds < 1 or a.clips < 1:
        raise SystemExit("--rounds and --clips must be at least 1")
    try:
        facts = {k: version(k) for k in ("moto", "s3fs", "botocore")}
        import moto.server  # noqa: F401  (moto[server]: flask, werkzeug)
        import s3fs
    except ImportError as e:
        raise SystemExit(f"{e.name} is not installed: pip install -e .[dev] (s3fs, moto[server])") from None
    work = a.out / "bench_remote"
    cache, built = ensure_cache(work, a.clips)
    manifest = cache / "manifest.json"
    files = listed(json.loads(manifest.read_text()))
    nbytes = sum(e["bytes"] for e in files)
    attempts = a.rounds if a.quick else a.rounds + 3
    rounds: list[dict] = []
    with moto_server(work) as (endpoint, pid):
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        base = "bench-remote/cache"
        fs.mkdir("bench-remote")
        with Meter() as upload:  # every file of the cache as it is (like `aws s3 sync`), the manifest last
            for path in sorted(p for p in cache.rglob("*") if p.is_file() and p.name != "manifest.json") + [manifest]:
                fs.pipe_file(f"{base}/{path.relative_to(cache).as_posix()}", path.read_bytes())
        log(f"moto (pid {pid}) on {endpoint}: {len(files)} files ({nbytes / 1e6:.1f} MB) put in {upload.wall:.1f} s")
        url, opts, fetched = f"s3://{base}", {"endpoint_url": endpoint}, work / "fetched"
        reads = {
            "plain": lambda: plain_read(fs, base),
            "plain_nosha": lambda: plain_read(fs, base, check=False),
            "load_field": lambda: mm_read(url, opts),
            "verify": lambda: mm_read(url, opts, verify=True),
            "fetch": lambda: mm_read(url, opts, fetched),
        }
        run_round(reads, WAYS, pid, fetched, "warm-up", nbytes)
        while sum(not noisy(r, a.max_others) for r in rounds) < a.rounds and len(rounds) < attempts:
            if rounds and noisy(rounds[-1], a.max_others):
                log(f"  waited for a quieter machine: others {wait_quiet(a.max_others, 60):.0%}")
            order = list(WAYS[::-1] if len(rounds) % 2 else WAYS)
            measures = run_round(reads, order, pid, fetched, f"round {len(rounds) + 1}", nbytes)
            rounds.append({"attempt": len(rounds) + 1, "order": order, "measures": measures})
    params = {"clips": a.clips, "steps": STEPS, "shards": built["shards"], "fields": list(FIELDS)}
    params.update(files=len(files), bytes=nbytes, rounds=a.rounds, max_others=a.max_others, attempts=attempts)
    params.update(build_s=built["build_s"] or 0.0, built=built["built"], upload_s=upload.wall, quick=a.quick)
    return {"machine": facts, "params": params, "rounds": rounds}


if __name__ == "__main__":
    sys.exit(Bench("bench_remote", __doc__, measure, render, options, custom=("clips", "rounds", "max_others")).main())
