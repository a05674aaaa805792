"""`mmfit sweep`: grid or random search over a few options, each trial repeated over seeds."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import yaml

from mmcache.schema import schema_errors

from .config import build_config
from .errors import ConfigError
from .paths import check_run_dir
from .train import train


def trials(spec: dict) -> list[dict]:
    """The option combinations: every grid point, or `trials` random draws (seeded)."""
    if "grid" in spec:
        keys = sorted(spec["grid"])
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(spec["grid"][k] for k in keys))]
    if "random" in spec:
        rng = random.Random(0)
        space = spec["random"]["space"]
        return [{k: rng.choice(space[k]) for k in sorted(space)} for _ in range(spec["random"]["trials"])]
    return [{}]


def load_sweep(path: Path) -> dict:
    try:
        spec = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read sweep config {path}: {e}") from None
    errs = schema_errors(spec, "sweep-config")
    if errs:
        raise ConfigError(f"sweep config {path}: {errs[0]}")
    return spec


def run_sweep(spec: dict, on_trial=None) -> list[dict]:
    out = check_run_dir(spec.get("out", "runs/sweep"))  # summary.json goes there after every trial has run
    rows = []
    for i, opts in enumerate(trials(spec)):
        scores, tests, monitor = [], [], None
        for seed in spec.get("seeds", [0]):
            cfg = build_config(**{**spec["base"], **opts, "seed": seed, "out": str(out / f"trial{i:03d}-seed{seed}")})
            result = train(cfg)
            monitor = result.monitor
            scores.append(result.best_score)
            if result.test:
                tests.append({k: v for k, v in result.test.items() if isinstance(v, int | float)})
        row = {
            "trial": i,
            "options": opts,
            "monitor": monitor,
            "mean": float(np.mean(scores)),
            "std": float(np.std(scores)),
            "scores": scores,
            "test": tests,
        }
        rows.append(row)
        if on_trial:
            on_trial(row)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return rows
