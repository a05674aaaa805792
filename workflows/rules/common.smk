# Validated config, the paths the rules share, and the helpers they call (no rules here).

import json
import shlex
from pathlib import Path

from snakemake.utils import validate

from mmcache.encoders.args import format_encoder_arg, parse_encoder_arg


validate(config, "../../schemas/workflow-config.schema.json")  # fills defaults; an error names the field

OUT = config["out"]
VIDEOS, EXTRACT, TRAIN = config["videos"], config["extract"], config["train"]
SHEET = f"{OUT}/videos/videos.csv" if VIDEOS["synthesize"] else VIDEOS["sheet"]
CACHE = f"{OUT}/cache"
LOGS = f"{OUT}/logs"
# Workflow bookkeeping kept in the cache folder, so that it goes when the cache is deleted; local
# files like .input-hashes.json, not in the manifest, so not part of the cache for its readers.
PLAN = f"{CACHE}/.snakemake-plan.json"  # the checkpoint's output: a copy of plan/plan.json (shard names)
VERIFIED = f"{CACHE}/.snakemake-verified"  # touched when `mmcache verify` says ok
RUN = f"{OUT}/runs/{TRAIN['fusion']}"
REPORT = f"{OUT}/report.txt"
GPUS = 1 if config["device"].startswith("cuda") else 0  # resources: gpu=GPUS (0 asks for none)
CACHED_OR_RANDOM = "cached-or-random"  # weights=...: what `python -m mmcache.demo MODEL` picks


wildcard_constraints:
    shard=r"\d{6}",
    model=r"[A-Za-z0-9_.-]+",


def weights_model(name: str, opts: dict) -> str | None:
    """The model whose weights `mmcache.demo` picks, for an encoder given weights=cached-or-random."""
    return opts.get("model", name) if opts.get("weights") == CACHED_OR_RANDOM else None


def weights_choice(model: str, kind: str = "txt") -> str:
    """txt: DEFAULT or random, read by the plan job; note: the plain sentence saying which."""
    return f"{OUT}/weights/{model}.{kind}"


def weights_models() -> list[str]:
    return [m for m in (weights_model(*parse_encoder_arg(arg)) for arg in EXTRACT["encoders"]) if m]


def weights_choices(wildcards) -> list[str]:
    return [weights_choice(m) for m in weights_models()]


def weights_notes(wildcards) -> list[str]:
    return [weights_choice(m, "note") for m in weights_models()]


def encoder_flag(arg: str) -> str:
    """`-e NAME:k=v,...` with the run's device; a cached-or-random weights value is read from its
    choice file by the shell when the job runs (it is made by rule vision_weights)."""
    name, opts = parse_encoder_arg(arg)  # mmcache checks names and values when the plan is made
    if config["device"] != "auto":
        opts.setdefault("device", config["device"])
    model = weights_model(name, opts)
    if model is None:
        return f"-e {shlex.quote(format_encoder_arg(name, opts))}"
    del opts["weights"]
    text = format_encoder_arg(name, opts)
    head = shlex.quote(f"{text}{',' if opts else ':'}weights=")
    return f'-e {head}"$(cat {shlex.quote(weights_choice(model))})"'


def encoder_flags(wildcards) -> str:
    return " ".join(encoder_flag(arg) for arg in EXTRACT["encoders"])


def planned_parts(wildcards) -> list[str]:
    """The part file of every shard `mmcache plan` planned: known once the plan checkpoint ran."""
    plan = checkpoints.plan.get().output.plan
    shards = json.loads(Path(plan).read_text("utf-8"))["shards"]
    return expand(f"{CACHE}/parts/{{shard}}.json", shard=shards)


def train_flags(wildcards) -> str:
    """mmfit options that are given only when the config sets them."""
    flags = ["--fields", ",".join(TRAIN["fields"])] if TRAIN["fields"] else []
    flags += ["--labels", TRAIN["labels"]] if TRAIN["labels"] else []
    for key in ("head", "hidden", "lr"):
        flags += [f"--{key}", str(TRAIN[key])] if TRAIN[key] is not None else []
    return shlex.join(flags)


# Folders read off a rule's own files rather than hard-coded (snakemake --lint: path prefixes).
def sheet_folder(wildcards, output) -> str:
    return str(Path(output.sheet).parent)


def cache_of_plan(wildcards, output) -> str:
    return str(Path(output.plan).parent)  # <cache>/.snakemake-plan.json


def cache_of_part(wildcards, output) -> str:
    return str(Path(output.part).parent.parent)  # <cache>/parts/<shard>.json


def cache_of_output(wildcards, output) -> str:
    return str(Path(output.manifest).parent)  # <cache>/manifest.json


def cache_of_input(wildcards, input) -> str:
    return str(Path(input.manifest).parent)


def run_folder(wildcards, output) -> str:
    return str(Path(output.report).parent)  # <run>/report.md
