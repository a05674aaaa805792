"""Checkpoints: plain tensors, numbers, strings, lists and dicts only, loaded with
torch.load(weights_only=True) so nothing is ever unpickled."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from mmcache.store.atomic import write_atomic

from .errors import CheckpointError

FORMAT, VERSION = "mmfit-checkpoint", 1


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic write: a crash never leaves a half-written best.pt/last.pt."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    write_atomic(Path(path), buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle refusals, zip errors, truncation: all mean "not ours"
        raise CheckpointError(
            f"{path} is not a readable mmfit checkpoint (refused to unpickle: {str(e).splitlines()[0][:200]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an mmfit checkpoint (format {ckpt.get('format')!r})"
            if isinstance(ckpt, dict)
            else f"{path} is not an mmfit checkpoint"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not supported (expected {VERSION})")
    for key in ("config", "model", "classes", "fields"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt
