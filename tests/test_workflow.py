"""The Snakemake workflow on the tiny test config: lint, dry runs (local and SLURM profile, the demo's
config), a real run whose cache `mmcache verify` accepts, a real run to the report on a small combo set,
config errors that name the field, and a run killed mid-extraction that completes on re-run with a
cache byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sharing_helpers import fields_equal

from mmcache.cache import open_cache, verify_cache
from mmcache.transport import configured

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "workflows" / "config" / "test.yaml"
OUT = "demo/workflow-test"  # `out` of the test config, relative to the workflow's working directory
pytest_plugins = ["s3_fixtures"]

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
IGNORED = {".input-hashes.json"}  # local memo of input hashes (size + mtime): not part of the cache

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def command(workdir: Path, *args: str, configs: tuple[Path, ...] = ()) -> list[str]:
    """The repository's workflow with `workdir` as its working directory and the test config
    (+ `configs` over it); `args` start with an option (--configfile takes several values)."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return [*cmd, "--configfile", str(TEST_CONFIG), *map(str, configs), *args]


def snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (), timeout: float = 300):
    return subprocess.run(command(workdir, *args, configs=configs), capture_output=True, text=True, timeout=timeout)


def override(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cache_files(cache: Path) -> dict[str, bytes]:
    """Every file under the cache, except lock files and the input-hash memo."""
    return {
        p.relative_to(cache).as_posix(): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock") and p.name not in IGNORED
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One uninterrupted `snakemake --cores 2 extract_features` on the test config."""
    work = tmp_path_factory.mktemp("workflow")
    res = snakemake(work, "--cores", "2", "extract_features")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (work / "snakemake.log").write_text(res.stdout + res.stderr)
    return work


def test_lint_is_clean():
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lints for" not in res.stdout + res.stderr


def test_dry_run_plans_the_whole_demo(tmp_path):
    res = snakemake(tmp_path, "-n")
    assert res.returncode == 0, res.stderr
    for rule in ("make_demo_videos", "plan", "finalize", "extract_features", "train", "report", "all"):
        assert rule in res.stdout, rule


def test_the_demo_config_makes_the_combo_set_and_trains_an_mlp_head(tmp_path):
    """`make demo`'s config: classes only fusion separates (picture x tone), a head that can learn them,
    and the unimodal baselines in the printed table."""
    cmd = [*SNAKEMAKE, "-n", "-p", "--configfile", str(REPO / "workflows" / "config" / "config.yaml")]
    res = subprocess.run([*cmd, "--directory", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (synth,) = [ln for ln in res.stdout.splitlines() if "python -m mmcache.synth" in ln]
    assert "--per-class 20 " in synth and "--design combo" in synth
    (train,) = [ln for ln in res.stdout.splitlines() if "mmfit train" in ln]
    assert "--head mlp" in train and "--unimodal-baselines" in train and "--overwrite" in train


@pytest.mark.slow
def test_train_and_report_on_a_combo_set_and_again_after_a_change(tmp_path):
    """A real run to the report on 5 groups of the combo design: mmfit takes the sheet's split (whole
    groups), the report holds the fused model and each unimodal baseline, and a re-run of train (as
    after a config change) replaces the run in its folder."""
    videos = {"synthesize": {"design": "combo", "per_class": 5, "duration": 1, "size": "96x64"}}
    configs = (override(tmp_path, {"videos": videos, "extract": {"shard_size": 10}}),)
    work = tmp_path / "work"
    res = snakemake(work, "--cores", "2", "report", configs=configs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (work / OUT / "report.txt").read_text()
    for row in ("fused (concat: logmel, resnet18)", "unimodal: logmel", "unimodal: resnet18"):
        assert row in report, report
    run = work / OUT / "runs" / "concat"
    assert json.loads((run / "report.json").read_text())["data"]["splits"] == {"train": 12, "val": 4, "test": 4}
    res = snakemake(work, "--cores", "2", "--forcerun", "train", "report", configs=configs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "fused (concat: logmel, resnet18)" in (work / OUT / "report.txt").read_text()


@pytest.mark.parametrize("profile, shown", [("slurm", "runtime=60"), ("local", "rule make_demo_videos")])
def test_profile_dry_run(tmp_path, profile, shown):
    """The profiles parse and plan; the SLURM one without a cluster (a dry run submits nothing, and
    needs no sbatch/sinfo). --directory keeps the check independent of outputs in the checkout."""
    cmd = [*SNAKEMAKE, "--profile", f"workflows/profiles/{profile}", "-n", "extract_features"]
    cmd += ["--configfile", "workflows/config/test.yaml", "--directory", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "This was a dry-run" in res.stdout
    assert shown in res.stdout  # e.g. the profile's default-resources reached the jobs


@pytest.mark.parametrize("device, gpus", [("cpu", "gpu=0"), ("cuda", "gpu=1")])
def test_shard_jobs_ask_for_a_gpu_only_on_cuda(tmp_path, device, gpus):
    part = f"{OUT}/cache/parts/000000.json"
    res = snakemake(tmp_path, "-n", "--config", f"device={device}", "--", part)
    assert res.returncode == 0, res.stderr
    shard_job = res.stdout.split("rule extract_shard:")[1]
    assert gpus in shard_job.split("\n\n")[0]


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"extract": {"shard_size": 0}}, "On instance['extract']['shard_size']"),
        ({"extract": {"shardsize": 10}}, "('shardsize' was unexpected)"),
        ({"videos": {"synthesize": None}}, "On instance['videos']"),  # neither a sheet nor synthesize
    ],
)
def test_config_error_names_the_field(tmp_path, bad, says):
    res = snakemake(tmp_path, "-n", configs=(override(tmp_path, bad),))
    assert res.returncode != 0
    message = res.stdout + res.stderr
    assert "Error validating config" in message
    assert says in message, message[-2000:]


def test_real_run_makes_a_verified_cache(finished):
    cache = finished / OUT / "cache"
    res = subprocess.run(["mmcache", "verify", str(cache)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (cache / "plan").exists() and not (cache / "parts").exists()  # finalize cleaned up
    assert (cache / ".snakemake-plan.json").is_file()  # the checkpoint's output outlives them
    assert len(list((cache / "samples").glob("*.jsonl"))) == 3  # 6 clips, shard size 2


def test_cores_n_runs_n_shard_jobs_at_once(finished):
    log = (finished / "snakemake.log").read_text()
    before_first_finished = log.split("(Rule: extract_shard)")[0]
    assert before_first_finished.count("rule extract_shard:") == 2  # --cores 2, threads 1 per shard job


@pytest.mark.parametrize("threads, cores, passed", [(1, 2, 1), (2, 2, 2), (2, 1, 1)])
def test_shard_jobs_pass_their_threads_on(tmp_path, threads, cores, passed):
    """run-shard gets the job's threads (extract.threads, lowered by Snakemake to --cores)."""
    part = f"{OUT}/cache/parts/000000.json"
    configs = (override(tmp_path, {"extract": {"threads": threads}}),)
    res = snakemake(tmp_path, "-n", "-p", "--cores", str(cores), "--", part, configs=configs)
    assert res.returncode == 0, res.stderr
    (shell,) = [ln for ln in res.stdout.splitlines() if "mmcache run-shard" in ln]
    assert f" --threads {passed} " in shell, shell


def test_shard_jobs_ran_on_their_threads(finished):
    """Each real shard job kept torch and ffmpeg to its one thread (the job's log says so)."""
    logs = sorted((finished / OUT / "logs" / "extract_shard").glob("*.log"))
    assert len(logs) == 3
    for log in logs:
        assert "torch 1 thread(s) (1 inter-op), ffmpeg 1 thread(s)" in log.read_text(), log


def test_second_run_is_a_no_op(finished):
    res = snakemake(finished, "-n", "extract_features")
    assert res.returncode == 0, res.stderr
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_an_identical_cache(tmp_path, finished):
    """SIGKILL snakemake and its jobs once a shard is done but before finalize, re-run, compare bytes."""
    sheet = finished / OUT / "videos" / "videos.csv"  # the same videos as the uninterrupted run
    configs = (override(tmp_path, {"videos": {"sheet": str(sheet), "synthesize": None}}),)
    work = tmp_path / "work"
    cache = work / OUT / "cache"
    cmd = command(work, "--cores", "2", "extract_features", configs=configs)
    work.mkdir()
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                if any((cache / "parts").glob("*.json")) and not (cache / "manifest.json").exists():
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (cache / "manifest.json").exists()

    # A killed snakemake leaves its lock: --unlock (as the message says), then re-run the cut-off jobs.
    assert snakemake(work, "--unlock", configs=configs).returncode == 0
    res = snakemake(work, "--cores", "2", "--rerun-incomplete", "extract_features", configs=configs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    resumed, reference = cache_files(cache), cache_files(finished / OUT / "cache")
    assert sorted(resumed) == sorted(reference), set(resumed) ^ set(reference)
    differ = [f for f in reference if resumed[f] != reference[f]]
    assert not differ, f"files that differ from the uninterrupted run: {differ}"


def test_publish_pushes_the_verified_cache_to_s3(finished, s3):
    """`snakemake publish` with publish.url: the cache in the bucket verifies, storage options from the
    config reach the backend, and nothing of them appears in snakemake's output."""
    url = s3.url("wf")
    configs = (override(finished, {"publish": {"url": url, "storage_options": s3.options}}),)
    res = snakemake(finished, "--cores", "1", "publish", configs=configs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert s3.endpoint not in res.stdout + res.stderr
    log_file = finished / OUT / "logs" / "publish.log"
    log = log_file.read_text()
    assert log.startswith(f"pushed {OUT}/cache to {url}: ") and "0 already there" in log
    with configured(s3.options):
        assert verify_cache(url) == []
        fields_equal(open_cache(url), open_cache(finished / OUT / "cache"))
    res = snakemake(finished, "--cores", "1", "--forceall", "publish", "--allowed-rules", "publish", configs=configs)
    assert res.returncode == 0 and "0 file(s) uploaded" in log_file.read_text()


def test_publish_without_a_url_says_what_to_set(finished):
    res = snakemake(finished, "--cores", "1", "publish")
    assert res.returncode != 0 and "set publish.url in the config" in res.stdout + res.stderr
