"""Run folders: where a training run writes, decided and checked before any work, created only when
the run starts writing.

- No `--out`: a new numbered folder, `runs/<fusion>-NNN`, claimed with an exclusive mkdir so two
  runs started at once never share one.
- An `--out` that does not exist or is empty: used as is.
- An `--out` holding anything else is refused, unless `--overwrite`, which clears it when the run
  starts writing (after every check has passed), and only when it holds an mmfit run: a folder of
  other files is never deleted.
- Resuming from a checkpoint inside `--out` (or with no `--out`) continues that run in its folder."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .paths import check_run_dir

RUNS = Path("runs")
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "report.json")  # what marks a run folder


@dataclass
class RunDir:
    """A checked run folder; `create()` makes it when the run starts writing."""

    path: Path
    numbered: bool = False  # a runs/<stem>-NNN folder: the next free number is claimed on create
    clear: bool = False  # --overwrite of an existing run: emptied on create
    resuming: bool = False  # the run continues in its own folder

    def create(self) -> Path:
        if self.numbered:
            self.path = claim_numbered(self.path.parent, _stem(self.path))
            return self.path
        if self.clear and self.path.exists():
            for p in self.path.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.resuming and not self.clear and any(self.path.iterdir()):
            raise ConfigError(f"--out {self.path} was filled by something else while this run was starting")
        return self.path


def _stem(path: Path) -> str:
    m = re.fullmatch(r"(.+)-\d{3,}", path.name)
    return m.group(1) if m else path.name


def next_numbered(root: Path, stem: str) -> Path:
    """root/<stem>-NNN with NNN one above the highest taken (001 for the first)."""
    taken = [int(m.group(1)) for p in _list(root) if (m := re.fullmatch(re.escape(stem) + r"-(\d{3,})", p.name))]
    return root / f"{stem}-{max(taken, default=0) + 1:03d}"


def claim_numbered(root: Path, stem: str) -> Path:
    """Create the next free root/<stem>-NNN; a number taken meanwhile by another run is skipped."""
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        path = next_numbered(root, stem)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot claim a new run folder under {root}")


def _list(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def plan_run_dir(
    out: str | Path | None, stem: str, overwrite: bool = False, resume: str | Path | None = None
) -> RunDir:
    """The run folder for `out` (None: the next runs/<stem>-NNN), checked; creates nothing."""
    if out is None:
        if resume is not None:  # resuming without --out continues in the checkpoint's folder
            return RunDir(Path(resume).parent, resuming=True)
        path = next_numbered(RUNS, stem)
        check_run_dir(path)
        return RunDir(path, numbered=True)
    path = check_run_dir(out)
    if resume is not None and _same(Path(resume).parent, path):
        return RunDir(path, resuming=True, clear=False)
    if not path.exists() or not any(path.iterdir()):
        return RunDir(path)
    if not overwrite:
        held = [n for n in RUN_FILES if (path / n).exists()]
        what = f"a run ({', '.join(held)})" if held else f"{sum(1 for _ in path.iterdir())} other entries"
        raise ConfigError(
            f"--out {path} already holds {what}; pass --overwrite to replace it, "
            f"or leave --out out for a new numbered run ({next_numbered(RUNS, stem)})"
        )
    if not is_run(path):
        raise ConfigError(
            f"--out {path} holds files that are not an mmfit run (none of {', '.join(RUN_FILES)}); "
            "--overwrite only replaces a run folder: choose another --out"
        )
    return RunDir(path, clear=True)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
