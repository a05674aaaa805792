"""Modality contributions: a trained model evaluated with all its fields, then with each field absent at
test time (masked for every sample, exactly as a sample without that field is presented: mask all False,
features 0, never zero-filled data), next to the unimodal baselines when there are some.

A field's contribution is how much the metric gets worse without it (the drop for a metric where higher
is better, the rise for an error such as mae), so a larger contribution means the model leans on it more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import FOR_MODEL, load_checkpoint
from .data import Data
from .errors import ConfigError
from .predict import evaluate_checkpoint, on_split
from .tasks import Task, higher_is_better
from .trainer import evaluate

EVAL_BATCH = 512  # rows per forward pass when the run's own setting is not at hand (metrics do not depend on it)


class WithoutFields(nn.Module):
    """`model` with the `hidden` fields absent for every sample. Counts the samples left with no field at
    all (`left_empty`); their outputs, which a fusion with nothing to attend to may make NaN, become 0
    (no evidence either way)."""

    def __init__(self, model: nn.Module, hidden: set[str]):
        super().__init__()
        self.model, self.hidden, self.left_empty = model, frozenset(hidden), 0

    def forward(self, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        masks = {n: torch.zeros_like(m) if n in self.hidden else m for n, m in masks.items()}
        feats = {n: torch.zeros_like(x) if n in self.hidden else x for n, x in feats.items()}
        present = torch.stack([m.flatten(1).any(1) for m in masks.values()], 1).any(1)  # (B,)
        self.left_empty += int((~present).sum())
        return self.model(feats, masks).nan_to_num(0.0)


def scalars(metrics: dict) -> dict:
    """The top-level metric values and counts (None kept: an undefined metric stays undefined)."""
    return {k: v for k, v in metrics.items() if v is None or (isinstance(v, int | float) and not isinstance(v, bool))}


def ablate(
    model: nn.Module, data: Data, rows: np.ndarray, task: Task, *, device: str, precision: str, batch_size: int
) -> dict:
    """The model's metrics on `rows` with all fields, and with each field of `data` absent in turn:
    {"n", "fields", "all": {metric: value}, "without": {field: {metric: value}}, "left_empty": {field: count}}."""
    run = {"device": device, "precision": precision, "batch_size": batch_size}
    out = {"n": len(rows), "fields": list(data.field_names), "without": {}, "left_empty": {}}
    out["all"] = scalars(evaluate(model, data, rows, task, "all", **run)[1])
    for name in data.field_names:
        masked = WithoutFields(model, {name})
        out["without"][name] = scalars(evaluate(masked, data, rows, task, "without", **run)[1])
        out["left_empty"][name] = masked.left_empty
    return out


def contributions(ablation: dict, metric: str, unimodal: dict[str, dict | None] | None = None) -> list[dict]:
    """One row per field for `metric`: all fields, without the field, its contribution (how much worse the
    metric gets without it; None where either is undefined), and the field's unimodal baseline (metrics
    dict, or None) when given: [{field, all, without, contribution, left_empty, unimodal, unimodal_n}]."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    full = ablation["all"].get(metric)
    rows = []
    for name in ablation["fields"]:
        without = ablation["without"][name].get(metric)
        uni = (unimodal or {}).get(name) or {}
        rows.append(
            {
                "field": name,
                "all": full,
                "without": without,
                "contribution": None if full is None or without is None else sign * (full - without),
                "left_empty": ablation["left_empty"][name],
                "unimodal": uni.get(metric),
                "unimodal_n": uni.get("n"),
            }
        )
    return rows


def run_contributions(result, data: Data, baselines: dict | None = None) -> dict | None:
    """After training (train.RunResult `result` holds the model with its best weights and the task): the
    ablation on the test split, or val when there is no test, with the unimodal baselines' metrics on the
    same split from `baselines` ({field: {"val", "test"}}). None with fewer than 2 fields, or without the model."""
    model, task = getattr(result, "model", None), getattr(result, "task", None)
    if model is None or task is None or len(data.field_names) < 2:
        return None
    split = "test" if result.test else "val"
    params = next(model.parameters(), None)
    device = str(params.device) if params is not None else "cpu"
    ablation = ablate(model, data, data.rows(split), task, device=device, precision="auto", batch_size=EVAL_BATCH)
    ablation["split"] = split
    ablation["unimodal"] = {name: (b or {}).get(split) for name, b in (baselines or {}).items()}
    return ablation


def unimodal_checkpoints(path: str | Path, fields: list[str]) -> dict[str, Path]:
    """The unimodal baselines next to a run's checkpoint (`mmfit train --unimodal-baselines`):
    {field: <run>/unimodal-<field>/best.pt} for those that exist."""
    run = Path(path).parent
    found = {name: run / f"unimodal-{name}" / "best.pt" for name in fields}
    return {name: p for name, p in found.items() if p.is_file()}


def ablate_checkpoint(
    path,
    cache,
    split: str = "test",
    labels: str | None = None,
    batch_size: int | None = None,
    verify: bool = True,
) -> dict:
    """`ablate` for the checkpoint at `path` on `split` (or all) of a labelled cache, with the unimodal
    baselines found next to it evaluated on the same split ("unimodal": {field: metrics}); "task" and
    "split" added."""
    ckpt = load_checkpoint(path, FOR_MODEL)
    if len(ckpt["fields"]) < 2:
        raise ConfigError(f"{path} is a model of one field ({', '.join(ckpt['fields'])}): nothing to mask out")
    s = on_split(path, cache, split, labels, batch_size, verify)
    cfg, data = s.cfg, s.data
    ablation = ablate(s.model, data, s.rows, s.task, **s.run)
    ablation["task"], ablation["split"] = cfg.task, split
    ablation["unimodal"] = {
        name: scalars(evaluate_checkpoint(p, cache, split, labels, batch_size, verify))
        for name, p in unimodal_checkpoints(path, data.field_names).items()
    }
    return ablation


__all__ = ["WithoutFields", "ablate", "ablate_checkpoint", "contributions", "run_contributions"]
