"""Output paths checked before any work: a run directory or predictions file that cannot be written
is refused up front, naming the path and why, instead of an OSError traceback after training (or
extraction) has run; the checks create nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import ConfigError


def check_run_dir(path: str | Path) -> Path:
    """A directory `mmfit train` can create (or fill): not a file, below no file, writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file; a run needs a directory (checkpoints, metrics, report)")
    _check_writable(path, path, "run directory")
    return path


def check_output_file(path: str | Path) -> Path:
    """A file `mmfit predict` can write: not a directory, below no file, in a writable place."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path} is a directory; give the CSV file to write, e.g. {path / 'predictions.csv'}")
    _check_writable(path.parent, path, "predictions file")
    return path


def _check_writable(where: Path, out: Path, what: str) -> None:
    """The nearest existing directory at or above `where` takes a new file. Tried with a temporary
    file that deletes itself, as permission bits say nothing for root or on a read-only mount."""
    base = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    if not base.is_dir():
        raise ConfigError(f"--out {out}: cannot create the {what}, {base} is a file")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        why = e.strerror or e
        raise ConfigError(f"--out {out}: cannot write the {what}, {base} takes no new files ({why})") from None
