"""Checkpoints: plain tensors, numbers, strings, lists and dicts only, loaded with
torch.load(weights_only=True) so nothing is ever unpickled.

What a loaded checkpoint must hold is checked here, in one place (`check_checkpoint` against
`SCHEMA`): a crafted or damaged file is refused with one line naming the key and what is wrong,
instead of a KeyError/TypeError wherever eval, predict or resume first touches it."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mmcache.schema import schema_errors
from mmcache.store.atomic import write_atomic

from .errors import CheckpointError

FORMAT, VERSION = "mmfit-checkpoint", 1

REQUIRED = ("config", "model", "classes", "fields")  # every checkpoint
FOR_MODEL = (*REQUIRED, "dims", "norm", "task_state")  # eval/predict rebuild the model and its inputs
FOR_RESUME = (
    *FOR_MODEL,
    *("optimizer", "scheduler", "generator", "torch_rng", "best_state", "bad_epochs", "epoch", "history"),
    *("best_score", "best_loss", "best_epoch"),
)
FIELD_TYPES = {  # a field's manifest entry as recorded (data.FIELD_META): what predict re-extracts and compares
    "encoder": str,
    "options": dict,
    "fingerprint": str,
    "fingerprint_parts": dict,
    "dim": int,
    "modality": str,
}


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic write: a crash never leaves a half-written best.pt/last.pt."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    write_atomic(Path(path), buf.getvalue())


def load_checkpoint(path: str | Path, need: tuple[str, ...] = REQUIRED) -> dict:
    """The checkpoint at `path`, checked to hold the keys in `need` (and every other known key it
    has) with the right types; CheckpointError otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files: noise
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle refusals, zip errors, truncation: all mean "not ours"
        raise CheckpointError(f"{path} is not a readable mmfit checkpoint ({_unreadable(path, e)})") from None
    check_checkpoint(ckpt, path, need)
    return ckpt


def _unreadable(path: Path, e: Exception) -> str:
    """Why torch.load failed, in our words. Torch's own message advises retrying with
    weights_only=False, which would run whatever code a crafted file carries: never repeat it."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if type(e).__name__ == "UnpicklingError":  # pickle's, matched by name: importing pickle is banned here
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"{found.group(1)}, a Python object" if found else "data other than tensors and plain values"
        return f"refused to unpickle {what}; mmfit checkpoints never hold such things"
    if isinstance(e, PermissionError):  # other OSErrors come from torch's zip reader on damaged files
        return f"cannot read it: {e.strerror or e}"
    return "damaged, cut short, or not a file written by torch.save"


def check_checkpoint(ckpt, path: str | Path, need: tuple[str, ...] = REQUIRED) -> None:
    """Refuse a loaded checkpoint unless it is ours, has every key in `need`, and each known key it
    has passes its check in SCHEMA (in order, so a check may rely on the keys checked before it)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = f"format {ckpt.get('format')!r}" if isinstance(ckpt, dict) else f"it holds {_kind(ckpt)}"
        raise CheckpointError(f"{path} is not an mmfit checkpoint ({found})")
    if not _is_int(ckpt.get("version")) or ckpt["version"] != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')!r} is not supported (expected {VERSION})"
        )
    for key in need:
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    for key, check in SCHEMA.items():
        problem = check(ckpt[key], ckpt) if key in ckpt else None
        if problem:
            raise CheckpointError(f"{path}: checkpoint {key!r} {problem}")


def check_weights(expected: dict[str, torch.Size], state: dict, path: str | Path, key: str = "model") -> None:
    """`state` (names -> tensors, as SCHEMA checked) has every parameter the model has, with its
    shape, and nothing else: named in one line, where torch's load_state_dict error spans many."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        detail = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model does not"
        raise CheckpointError(f"{path}: checkpoint {key!r} does not fit its config: it {detail}")
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise CheckpointError(
                f"{path}: checkpoint {key!r} does not fit its config: {name!r} has shape "
                f"{tuple(state[name].shape)}, the model needs {tuple(shape)}"
            )


# -- the checks of SCHEMA: each returns what is wrong with the value, or None ---------------------


def _kind(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    text = f"{type(v).__name__} {v!r}"
    if len(text) > 80 and isinstance(v, list | tuple | dict):  # e.g. a list of tensors: its size says enough
        return f"a {type(v).__name__} of {len(v)} items"
    return text[:80]


def _is_int(v) -> bool:
    return type(v) is int  # not bool (an int subclass): True is no size or version


def _is_number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _state_dict(v, _ckpt=None) -> str | None:
    if not isinstance(v, dict):
        return f"must map parameter names to tensors, not {_kind(v)}"
    for name, t in v.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            return f"must map parameter names to tensors; it has {name!r}: {_kind(t)}"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"has NaN or infinite values in {name!r}"
    return None


def _config(v, _ckpt) -> str | None:
    if not isinstance(v, dict):
        return f"must be a mapping of train options, not {_kind(v)}"
    errs = schema_errors(v, "train-config")  # the check a YAML config gets (unknown keys included)
    return f"is not a valid train config: {errs[0]}" if errs else None


def _classes(v, _ckpt) -> str | None:
    if not isinstance(v, list) or not v or not all(isinstance(c, str) for c in v):
        return f"must be a non-empty list of class names, not {_kind(v)}"
    if len(set(v)) != len(v):
        return f"names a class twice: {v!r}"[:200]
    return None


def _fields(v, _ckpt) -> str | None:
    if not isinstance(v, dict):
        return f"must map field names to their manifest entries, not {_kind(v)}"
    for name, meta in v.items():
        if not isinstance(name, str) or not isinstance(meta, dict):
            return f"must map field names to their manifest entries; it has {name!r}: {_kind(meta)}"
        for key, kind in FIELD_TYPES.items():
            value = meta.get(key)
            if not isinstance(value, kind) or (kind is int and not (_is_int(value) and value > 0)):
                return f"entry of field {name!r} has no valid {key!r} (found {_kind(value)})"
    return None


def _dims(v, ckpt) -> str | None:
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_int(d) for k, d in v.items()):
        return f"must map field names to integer sizes, not {_kind(v)}"
    fields = ckpt["fields"]  # checked before dims
    if set(v) != set(fields):
        return f"names fields {sorted(v)}, but the checkpoint's fields are {sorted(fields)}"
    for name, d in v.items():
        if d != fields[name]["dim"]:
            return f"gives field {name!r} size {d}, but its manifest entry says {fields[name]['dim']}"
    return None


def _norm(v, ckpt) -> str | None:
    if not isinstance(v, dict):
        return f"must map field names to [mean, std] tensors, not {_kind(v)}"
    dims = {n: meta["dim"] for n, meta in ckpt["fields"].items()}  # fields are checked before norm
    for name, pair in v.items():
        if name not in dims:
            return f"has statistics for {name!r}, which is not one of the checkpoint's fields"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return f"of field {name!r} must be [mean, std], not {_kind(pair)}"
        for t, label in zip(pair, ("mean", "std"), strict=True):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.shape != (dims[name],):
                return f"{label} of field {name!r} must be {dims[name]} floats, not {_kind(t)}"
            if not bool(torch.isfinite(t).all()) or (label == "std" and not bool((t > 0).all())):
                return f"{label} of field {name!r} holds NaN, infinite or (std) non-positive values"
    return None


def _task_state(v, ckpt) -> str | None:
    """Per-class numbers (multilabel thresholds, regression target mean/std), one per class."""
    if not isinstance(v, dict):
        return f"must be a mapping, not {_kind(v)}"
    n = len(ckpt["classes"])  # classes are checked before task_state
    for key, values in v.items():
        if not isinstance(values, list) or not all(_is_number(x) for x in values):
            return f"{key!r} must be a list of finite numbers, not {_kind(values)}"
        if len(values) != n:
            return f"{key!r} has {len(values)} values for {n} classes"
    return None


def _typed(check: Callable[[object], bool], what: str) -> Callable:
    return lambda v, _ckpt: None if check(v) else f"must be {what}, not {_kind(v)}"


def _byte_tensor(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == torch.uint8


def _count(v) -> bool:
    return _is_int(v) and v >= 0


SCHEMA: dict[str, Callable] = {
    "config": _config,
    "model": _state_dict,
    "classes": _classes,
    "fields": _fields,
    "dims": _dims,
    "norm": _norm,
    "task_state": _task_state,
    # resume (last.pt); torch checks the insides of optimizer and scheduler states as it loads them
    "optimizer": _typed(lambda v: isinstance(v, dict), "a mapping"),
    "scheduler": _typed(lambda v: isinstance(v, dict), "a mapping"),
    "generator": _typed(_byte_tensor, "a byte tensor"),
    "torch_rng": _typed(_byte_tensor, "a byte tensor"),
    "best_state": _state_dict,
    "bad_epochs": _typed(_count, "a count"),
    "epoch": _typed(_count, "a count"),
    "best_epoch": _typed(_is_int, "an epoch number"),
    "best_score": _typed(lambda v: v is None or type(v) in (int, float), "a number"),
    "best_loss": _typed(lambda v: v is None or type(v) in (int, float), "a number"),
    "history": _typed(lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of rows"),
    "data_digest": _typed(lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v), "a sha256"),
}
