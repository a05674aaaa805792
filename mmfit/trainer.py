"""The training loop: AdamW/SGD, warmup + cosine, clipping, early stopping on a monitor checked
before epoch 1, best weights restored, checkpoints that resume bit-for-bit on CPU."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from mmcache.runtime import torch_device

from .checkpoint import FOR_MODEL, FOR_RESUME, check_checkpoint, check_weights, load_checkpoint, save_checkpoint
from .config import RESUMABLE, OptimConfig, TrainConfig
from .data import Data, load_data
from .errors import CheckpointError, ConfigError, DataError, TrainingError
from .model import FusionModel, build_model, takes_pooled
from .runs import plan_run_dir
from .tasks import Task, build_task, higher_is_better, scalar_keys


@dataclass
class RunResult:
    out: Path
    monitor: str
    best_epoch: int
    best_score: float
    history: list[dict]
    val: dict  # full metrics at the best weights
    test: dict | None
    model: FusionModel = field(repr=False, default=None)
    task: Task = field(repr=False, default=None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_of(device: str) -> str:
    """The torch device for the `device` option: auto = cuda when available, else cpu; a GPU torch
    does not see is one clear error (mmcache.runtime.torch_device)."""
    return torch_device(device)


def autocast(precision: str, device: str):
    """bf16/fp16 autocast on GPU only (auto = bf16 on cuda, fp32 on cpu)."""
    kind = torch.device(device).type
    precision = precision if precision != "auto" else ("bf16" if kind == "cuda" else "fp32")
    if precision == "fp32" or kind == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def to_device(batch, device: str):
    """A batch's features, masks and targets on `device` (non-blocking copies)."""
    feats = {k: v.to(device, non_blocking=True) for k, v in batch.feats.items()}
    masks = {k: v.to(device, non_blocking=True) for k, v in batch.masks.items()}
    return feats, masks, batch.y.to(device, non_blocking=True)


@torch.no_grad()
def predict_rows(model: FusionModel, data: Data, rows: np.ndarray, *, device: str, precision: str, batch_size: int):
    """Outputs for `rows` in row order: (y, out) as numpy, over the whole split at once, computed
    `batch_size` rows at a time on `device` with `precision` (autocast)."""
    model.eval()
    ys, outs, idx = [], [], []
    for batch in data.batches(rows, batch_size):
        feats, masks, _ = to_device(batch, device)
        with autocast(precision, device):
            outs.append(model(feats, masks).float().cpu())
        ys.append(batch.y)
        idx.append(batch.idx)
    order = torch.cat(idx).argsort()  # streaming visits shards in its own order
    return torch.cat(ys)[order].numpy(), torch.cat(outs)[order].numpy()


def evaluate(
    model: FusionModel,
    data: Data,
    rows: np.ndarray,
    task: Task,
    prefix: str,
    *,
    device: str,
    precision: str,
    batch_size: int,
) -> tuple[dict, dict]:
    """(scalars for the history, full metrics dict) over the whole split; loss included. Outputs
    as predict_rows computes them."""
    y, out = predict_rows(model, data, rows, device=device, precision=precision, batch_size=batch_size)
    full = task.metrics(y, out)
    full["loss"] = float(task.loss(torch.from_numpy(out), torch.from_numpy(y)))
    return scalar_keys(full, prefix), full


def lr_lambda(total: int, warmup: float) -> Callable[[int], float]:
    w = int(total * warmup)

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        progress = (step - w) / max(1, total - w)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def make_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def data_digest(data: Data) -> str:
    """sha256 over every sample's key, split and target: what a resumed run must find again."""
    h = hashlib.sha256()
    for key, split in zip(data.keys.tolist(), data.split, strict=True):
        h.update(key + f"\t{split}\n".encode())
    h.update(data.y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def training_data(cfg: TrainConfig) -> Data:
    """The data a run on `cfg` trains on: its data part, pooled once when its model only looks at
    each field's mean over time."""
    return load_data(cfg.data, pooled=takes_pooled(cfg.model))


class Trainer:
    """One training run of `cfg`: the loop, early stopping, best weights, checkpoints and resume.
    Reads the run-level options (seed, device, precision, eval_batch_size, out, tensorboard) and
    hands the data, model and optim parts to what builds each."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Data | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        *,
        resume: str | Path | None = None,
        overwrite: bool = False,
    ):
        # the run folder is checked before any data is loaded (an unwritable or taken --out fails at
        # once) and made only when the run starts writing, after every check has passed
        self.run_dir = plan_run_dir(cfg.out, cfg.fusion, overwrite, resume)
        self.resume_from = resume
        seed_everything(cfg.seed)
        self.cfg, self.optim, self.on_epoch, self.on_step = cfg, cfg.optim, on_epoch, on_step
        self.data = data if data is not None else training_data(cfg)
        self.task = build_task(cfg.task, self.data, self.optim)
        self.device = device_of(cfg.device)
        self.inference = {"device": self.device, "precision": cfg.precision, "batch_size": cfg.eval_batch_size}
        self.model = build_model(cfg.model, self.data.dims, self.task.out_dim).to(self.device)
        self.train_rows, self.val_rows = self.data.rows("train"), self.data.rows("val")
        if not len(self.val_rows):
            raise ConfigError("the val split is empty; give labels a split column or set val_fraction > 0")
        self.monitor = self.task.monitor if self.optim.monitor == "auto" else self.optim.monitor
        self._check_monitor()
        self.opt = make_optimizer(self.model, self.optim)
        self.steps_per_epoch = math.ceil(len(self.train_rows) / self.optim.batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(self.steps_per_epoch * self.optim.epochs, self.optim.warmup)
        )
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.out = self.run_dir.path
        self.history: list[dict] = []
        self.best_score, self.best_loss, self.best_epoch, self.best_state = None, None, -1, None
        self.bad_epochs = self.epoch = 0
        self.tb = None

    def _check_monitor(self) -> None:
        """A misspelt monitor fails here, before any training, listing the keys that exist."""
        y = self.data.y[self.val_rows[:4]].numpy()
        if self.cfg.task == "segment":  # streamed step targets are filled as batches are read: any valid ones do
            y = np.zeros_like(y)
        shape = (len(y), self.task.out_dim) if self.cfg.task != "segment" else (*y.shape, self.task.out_dim)
        keys = set(scalar_keys(self.task.metrics(y, np.zeros(shape, np.float32)), "val")) | {"val/loss", "train/loss"}
        if self.monitor not in keys:
            raise ConfigError(f"monitor {self.monitor!r} does not exist; available: {', '.join(sorted(keys))}")

    def _payload(self, weights: dict) -> dict:
        d = self.data
        return {
            "config": self.cfg.to_dict(),
            "model": weights,
            "classes": d.classes,
            "fields": d.field_meta,
            "dims": d.dims,
            "norm": {k: [torch.from_numpy(m), torch.from_numpy(s)] for k, (m, s) in d.norm.items()},
            "task_state": self.task.state,
            "epoch": self.epoch,
            "monitor": self.monitor,
            "best_score": self.best_score,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "data_digest": data_digest(d),
        }

    def _save_last(self) -> None:
        state = self._payload(self.model.state_dict())
        state.update(
            {
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best_state": self.best_state,
                "bad_epochs": self.bad_epochs,
            }
        )
        save_checkpoint(self.out / "last.pt", state)

    def resume(self, path: str | Path) -> None:
        ckpt = load_checkpoint(path, FOR_MODEL)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{path} is a best-weights checkpoint; resume from last.pt")
        check_checkpoint(ckpt, path, FOR_RESUME)
        mine, theirs = self.cfg.to_dict(), dict(ckpt["config"])
        differ = [k for k in mine if k not in RESUMABLE and mine[k] != theirs.get(k)]
        if differ:
            raise CheckpointError(
                f"{path} was trained with a different config ({differ[0]}: {theirs.get(differ[0])!r}"
                f" vs {mine[differ[0]]!r})"
            )
        if ckpt.get("data_digest", data_digest(self.data)) != data_digest(self.data):
            raise DataError(
                f"{path}: the samples, labels or splits differ from the ones this run was trained on "
                "(the cache or label sheet changed since); start a new run instead of resuming"
            )
        shapes = {k: v.shape for k, v in self.model.state_dict().items()}
        for key in ("model", "best_state"):
            check_weights(shapes, ckpt[key], path, key)
        self.model.load_state_dict(ckpt["model"])
        self._restore_torch_states(ckpt, path)
        self.history, self.epoch = list(ckpt["history"]), int(ckpt["epoch"])
        self.best_score, self.best_loss, self.best_epoch = (
            ckpt["best_score"],
            ckpt["best_loss"],
            int(ckpt["best_epoch"]),
        )
        self.best_state, self.bad_epochs = ckpt["best_state"], int(ckpt["bad_epochs"])
        self.task.state = dict(ckpt["task_state"])
        if self.epoch >= self.optim.epochs:  # the file checked out: is there anything left to train?
            raise ConfigError(f"{path} has already run {self.epoch} epochs; give --epochs above {self.epoch}")
        if self.bad_epochs >= self.optim.patience:
            raise ConfigError(
                f"{path} stopped early after {self.bad_epochs} epochs without improvement; "
                f"give --patience above {self.bad_epochs} to train on"
            )

    def _restore_torch_states(self, ckpt: dict, path) -> None:
        """Optimizer, scheduler and RNG states are torch's formats, checked by torch as they load:
        its refusals (ValueError, KeyError, RuntimeError, ...) become one CheckpointError here."""
        try:
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
        except Exception as e:  # noqa: BLE001 - whatever torch raises, the file does not fit this run
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]  # one line, never a traceback
            raise CheckpointError(
                f"{path}: its optimizer, scheduler or RNG state does not fit this run ({why})"
            ) from None

    def _train_epoch(self) -> dict:
        self.model.train()
        total, n, t_data, t0 = 0.0, 0, 0.0, time.perf_counter()
        tick = time.perf_counter()
        for i, batch in enumerate(self.data.batches(self.train_rows, self.optim.batch_size, self.gen)):
            feats, masks, y = to_device(batch, self.device)
            t_data += time.perf_counter() - tick
            with autocast(self.cfg.precision, self.device):
                loss = self.task.loss(self.model(feats, masks), y)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {self.epoch + 1}, step {i + 1}; "
                    "lower the learning rate, enable grad_clip, or check the features"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
            self.opt.step()
            self.sched.step()
            total, n = total + loss.item() * len(y), n + len(y)
            if self.on_step:
                self.on_step(i + 1, self.steps_per_epoch)
            tick = time.perf_counter()
        wall = time.perf_counter() - t0
        return {
            "train/loss": total / max(n, 1),
            "train/samples_per_s": n / wall,
            "train/epoch_s": wall,
            "train/data_share": t_data / wall,
            "lr": self.sched.get_last_lr()[0],
        }

    def fit(self, resume: str | Path | None = None) -> RunResult:
        resume = resume or self.resume_from
        if resume:  # first: a checkpoint that cannot be resumed leaves the run folder untouched
            self.resume(resume)
        self.out = self.run_dir.create()  # every check passed: now the folder is made (or cleared)
        self.cfg = replace(self.cfg, out=str(self.out))
        (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard logging needs `pip install tensorboard`") from None
            self.tb = SummaryWriter(self.out / "tensorboard")
        log = open(self.out / "metrics.jsonl", "w")
        log.writelines(json.dumps(row) + "\n" for row in self.history)  # a resumed run rewrites what it restored
        try:
            while self.epoch < self.optim.epochs and self.bad_epochs < self.optim.patience:
                row = {"epoch": self.epoch + 1, **self._train_epoch()}
                scalars, _ = self._evaluate(self.val_rows, "val")
                row.update(scalars)
                self.epoch += 1
                self._track(row)
                self.history.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                if self.tb:
                    for k, v in row.items():
                        self.tb.add_scalar(k, v, self.epoch)
                self._save_last()
                if self.on_epoch:
                    self.on_epoch(row)
        finally:
            log.close()
            if self.tb:
                self.tb.close()
        return self._finish()

    def _evaluate(self, rows: np.ndarray, prefix: str) -> tuple[dict, dict]:
        return evaluate(self.model, self.data, rows, self.task, prefix, **self.inference)

    def _track(self, row: dict) -> None:
        score, loss = row[self.monitor], row["val/loss"]
        sign = 1 if higher_is_better(self.monitor) else -1
        # ties on the monitor (common with accuracy on small val sets) go to the lower val loss
        better = (
            self.best_score is None
            or sign * score > sign * self.best_score
            or (score == self.best_score and loss < self.best_loss)
        )
        if better:
            self.best_score, self.best_loss, self.best_epoch, self.bad_epochs = score, loss, self.epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_epochs += 1

    def _finish(self) -> RunResult:
        self.model.load_state_dict(self.best_state)  # best weights, always
        y, out = predict_rows(self.model, self.data, self.val_rows, **self.inference)
        self.task.finish(y, out)
        _, val = self._evaluate(self.val_rows, "val")
        test_rows = self.data.rows("test")
        test = self._evaluate(test_rows, "test")[1] if len(test_rows) else None
        save_checkpoint(self.out / "best.pt", self._payload(self.best_state))
        self._save_last()
        return RunResult(
            self.out,
            self.monitor,
            self.best_epoch,
            float(self.best_score),
            self.history,
            val,
            test,
            self.model,
            self.task,
        )


def train(
    cfg: TrainConfig,
    data: Data | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    **callbacks,
) -> RunResult:
    """Train `cfg` (on `data` when given, else `training_data(cfg)`), resuming from a last.pt when
    given; into cfg.out (None: the next runs/<fusion>-NNN), replacing a run there only if `overwrite`."""
    return Trainer(cfg, data, resume=resume, overwrite=overwrite, **callbacks).fit()
