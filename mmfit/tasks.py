"""Tasks: output size, loss, how raw outputs become metrics and predictions. Looked up in TASKS and
built by `build_task`, which gives each task's constructor the arguments it declares."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import metrics as M
from .config import OptimConfig, arguments_for
from .data import Data


class Task:
    name = ""
    monitor = "val/loss"  # default monitor key
    higher_is_better: dict[str, bool] = {}

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.state: dict = {}  # what predictions need later (thresholds, target scaling), saved in checkpoints

    @property
    def out_dim(self) -> int:
        return len(self.classes)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict:
        raise NotImplementedError

    def predictions(self, out: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Per sample: the predicted label text and a score matrix for the CSV."""
        raise NotImplementedError

    def finish(self, y_val: np.ndarray, out_val: np.ndarray) -> None:
        """Fit post-hoc state on validation outputs (e.g. thresholds)."""


class Multiclass(Task):
    name, monitor = "multiclass", "val/accuracy"

    def __init__(
        self, classes: list[str], y_train: torch.Tensor, class_weights: str = "none", label_smoothing: float = 0.0
    ):
        super().__init__(classes)
        weight = None
        if class_weights == "auto":
            counts = torch.bincount(y_train, minlength=len(self.classes)).float()
            weight = counts.sum() / (len(counts) * counts.clamp(min=1))
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def loss(self, logits, y):
        return self.criterion(logits.float(), y)

    def metrics(self, y, out):
        return M.multiclass_metrics(y, out, self.classes)

    def predictions(self, out):
        p = torch.from_numpy(out).softmax(-1).numpy()
        return [self.classes[i] for i in p.argmax(1)], p


class Multilabel(Task):
    name, monitor = "multilabel", "val/mAP"

    def __init__(self, classes: list[str], y_train: torch.Tensor, class_weights: str = "none"):
        super().__init__(classes)
        pos_weight = None
        if class_weights == "auto":
            pos_weight = (len(y_train) - y_train.sum(0)) / y_train.sum(0).clamp(min=1)
        self.criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.state["thresholds"] = [0.0] * len(self.classes)

    def loss(self, logits, y):
        return self.criterion(logits.float(), y)

    def metrics(self, y, out):
        return M.multilabel_metrics(y, out, self.classes, np.asarray(self.state["thresholds"]))

    def finish(self, y_val, out_val):
        self.state["thresholds"] = [float(t) for t in M.tune_thresholds(y_val, out_val)]

    def predictions(self, out):
        on = out > np.asarray(self.state["thresholds"])
        return ["|".join(c for c, b in zip(self.classes, row, strict=True) if b) for row in on], torch.from_numpy(
            out
        ).sigmoid().numpy()


class Regression(Task):
    name, monitor = "regression", "val/mae"

    def __init__(self, classes: list[str], y_train: torch.Tensor):
        super().__init__(classes)
        y = y_train  # the train split's targets set the scaling
        self.state["mean"], self.state["std"] = y.mean(0).tolist(), (y.std(0, unbiased=False) + 1e-6).tolist()
        self.criterion = nn.MSELoss()

    def _scale(self, y):
        return (y - torch.tensor(self.state["mean"])) / torch.tensor(self.state["std"])

    def loss(self, logits, y):
        return self.criterion(logits.float(), self._scale(y.to(logits.device)).to(logits.device))

    def _unscale(self, out: np.ndarray) -> np.ndarray:
        return out * np.asarray(self.state["std"]) + np.asarray(self.state["mean"])

    def metrics(self, y, out):
        return M.regression_metrics(y, self._unscale(out))

    def predictions(self, out):
        v = self._unscale(out)
        return [";".join(f"{x:.6g}" for x in row) for row in v], v


class Segment(Task):
    name, monitor = "segment", "val/segment_f1"

    def __init__(self, classes: list[str], label_smoothing: float = 0.0):
        super().__init__(classes)
        self.criterion = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=label_smoothing)

    def loss(self, logits, y):
        return self.criterion(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def metrics(self, y, out):
        return M.segment_metrics(y, out, self.classes, background=0)

    def predictions(self, out):
        steps = out.argmax(-1)  # (N, T)
        return [" ".join(self.classes[c] for c in row) for row in steps], torch.from_numpy(out).softmax(-1).numpy()


TASKS = {"multiclass": Multiclass, "multilabel": Multilabel, "regression": Regression, "segment": Segment}


def build_task(name: str, data: Data, optim: OptimConfig) -> Task:
    """The task `name` for `data`'s classes, given what its constructor declares of: the train
    split's targets (`y_train`) and the loss options of `optim` (class_weights, label_smoothing)."""
    cls = TASKS[name]
    offered = {
        "classes": data.classes,
        "y_train": data.y[data.rows("train")],
        "class_weights": optim.class_weights,
        "label_smoothing": optim.label_smoothing,
    }
    return cls(**arguments_for(cls, offered))


LOWER_IS_BETTER = ("loss", "mae", "rmse")
NOT_METRICS = {"n", "n_frames", "iou_threshold"}  # counts and settings, not scores


def higher_is_better(key: str) -> bool:
    return not key.rsplit("/", 1)[-1].startswith(LOWER_IS_BETTER)


def scalar_keys(metrics: dict, prefix: str) -> dict[str, float]:
    """Top-level numeric metrics as {'val/accuracy': 0.9, ...} (nested reports are left out)."""
    return {
        f"{prefix}/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in NOT_METRICS
    }
