"""`mmfit sweep`: a search over a few train options on Optuna, each trial repeated over seeds.

The space (option -> choices) is checked whole before the first trial: every value, then every
combination, must make a valid train config (mmfit.config.build_config), and the base config's
caches and labels must exist. The study lives in `<out>/study.db` (SQLite) and is appended as each
trial ends, so a sweep that was killed resumes when run again with the same config: finished trials
are kept, a trial cut off is run again (its folder cleared), a finished sweep runs nothing. A folder
holding another sweep config is refused. Samplers: `grid` (every combination once, in order),
`random` (seeded, no combination twice while unseen ones remain) and `tpe`; the budget is `trials`
and/or `minutes`. Hopeless trials are pruned on the monitor reported each epoch (median pruner).
Written in `<out>`: trial-NNN[-seedS]/ (one run per seed), summary.csv, summary.json, best.yaml (the
best trial's full train config: `mmfit train --config best.yaml` trains it into `<out>/best`)."""

from __future__ import annotations

import contextlib
import csv
import difflib
import itertools
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from mmcache.schema import load_schema, schema_errors

from .config import FIELD_NAMES, TrainConfig, build_config
from .errors import ConfigError, TrainingError
from .paths import check_run_dir
from .tasks import TASKS, higher_is_better
from .trainer import train

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = ("grid", "random", "tpe")
NOT_IN_SPACE = {  # options a space may not vary: the trials would no longer be comparable, or collide
    "out": "each trial writes to <out>/trial-NNN",
    "seed": "list seeds under `seeds:` instead",
    "monitor": "trials must be ranked on one monitor; set it in base",
    "task": "trials must be ranked on one task's monitor; set it in base",
}
CONFIG_FILE = "sweep-config.yaml"  # the sweep this folder holds, compared on every run
STUDY_FILE = "study.db"
BUDGET = ("trials", "minutes")  # may change between runs of one sweep (to extend it)
CHECK_ALL_UP_TO = 20_000  # combinations checked one by one up front (beyond: each value)
PRUNING = {"startup_trials": 3, "min_epochs": 2}


@dataclass
class Plan:
    """A sweep config, normalised and checked whole; nothing written yet."""

    out: Path
    base: dict
    space: dict[str, list]  # option -> choices, options sorted
    sampler: str
    sampler_seed: int
    trials: int | None  # None: as many as there are combinations
    minutes: float | None
    seeds: list[int]
    pruning: dict | None  # None: off
    monitor: str
    direction: str  # maximize | minimize

    @property
    def options(self) -> list[str]:
        return list(self.space)

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.space.values())

    def identity(self) -> dict:
        """What makes two runs the same sweep (the budget may change between them)."""
        return {
            "base": self.base,
            "space": self.space,
            "sampler": self.sampler,
            "sampler_seed": self.sampler_seed,
            "seeds": self.seeds,
            "pruning": self.pruning,
        }

    def config(self, params: dict, seed: int, out: str | Path) -> TrainConfig:
        return build_config(**{**self.base, **params, "seed": seed, "out": str(out)})


@dataclass
class SweepResult:
    out: Path
    monitor: str
    direction: str
    rows: list[dict]  # one per trial, by trial number
    best: dict | None  # the best complete trial's row
    ran: int  # trials run by this call
    message: str  # why it stopped
    options: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- config


def load_sweep(path: Path) -> dict:
    try:
        spec = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read sweep config {path}: {e}") from None
    errs = schema_errors(spec, "sweep-config")
    if errs:
        raise ConfigError(f"sweep config {path}: {errs[0]}")
    return spec


def normalise(spec: dict) -> dict:
    """The legacy forms (`grid: {...}`, `random: {trials, space}`) as `space` + `sampler` + `trials`."""
    spec = dict(spec)
    forms = [k for k in ("grid", "random", "space") if k in spec]
    if len(forms) > 1:
        raise ConfigError(f"sweep config: give one of grid, random or space, not {' and '.join(forms)}")
    if "grid" in spec:
        if spec.get("sampler", "grid") != "grid":
            raise ConfigError(f"sweep config: `grid:` runs the grid sampler, not {spec['sampler']!r}; use `space:`")
        spec["space"], spec["sampler"] = spec.pop("grid"), "grid"
    elif "random" in spec:
        legacy = spec.pop("random")
        if spec.get("sampler", "random") != "random" or "trials" in spec:
            raise ConfigError("sweep config: `random: {trials, space}` sets the sampler and trials; use `space:`")
        spec.update(space=legacy["space"], sampler="random", trials=legacy["trials"])
    spec.setdefault("space", {})
    spec.setdefault("sampler", "grid")
    return spec


def plan_sweep(spec: dict) -> Plan:
    """The sweep `spec` asks for, checked whole before anything is written or trained."""
    errs = schema_errors(spec, "sweep-config")
    if errs:
        raise ConfigError(f"sweep config: {errs[0]}")
    spec = normalise(spec)
    out = check_run_dir(spec.get("out", "runs/sweep"))
    base = dict(spec["base"])
    if "out" in base:
        raise ConfigError(f"sweep config: base sets 'out'; {NOT_IN_SPACE['out']} (set the sweep's own `out:`)")
    if "seed" in base:  # one seed given the train way
        if "seeds" in spec:
            raise ConfigError("sweep config: base sets 'seed' and the sweep `seeds:`; keep `seeds:`")
        spec["seeds"] = [base.pop("seed")]
    space = {k: list(spec["space"][k]) for k in sorted(spec["space"])}
    pruning = spec.get("pruning", True)
    pruning = None if pruning is False else {**PRUNING, **(pruning if isinstance(pruning, dict) else {})}
    try:
        cfg = build_config(**base)
    except ConfigError as e:
        raise ConfigError(f"sweep base: {e}") from None
    monitor = TASKS[cfg.task].monitor if cfg.monitor == "auto" else cfg.monitor
    plan = Plan(
        out=out,
        base=base,
        space=space,
        sampler=spec["sampler"],
        sampler_seed=spec.get("sampler_seed", 0),
        trials=spec.get("trials"),
        minutes=spec.get("minutes"),
        seeds=list(spec.get("seeds", [0])),
        pruning=pruning,
        monitor=monitor,
        direction="maximize" if higher_is_better(monitor) else "minimize",
    )
    check_space(plan)
    return plan


def check_space(plan: Plan) -> None:
    """Every option, each of its values, then every combination makes a valid train config; the
    caches and label files named exist. Refused with the option, the value and what would do."""
    if len(set(plan.seeds)) != len(plan.seeds):
        raise ConfigError(f"sweep seeds: {plan.seeds} lists a seed twice")
    props = load_schema("train-config")["properties"]
    for opt, values in plan.space.items():
        if opt in NOT_IN_SPACE:
            raise ConfigError(f"sweep space: {opt!r} cannot be swept; {NOT_IN_SPACE[opt]}")
        if opt not in FIELD_NAMES:
            raise ConfigError(f"sweep space: {opt!r} is not a train option{_did_you_mean(opt, FIELD_NAMES)}")
        keys = [_encode(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"sweep space: {opt} lists a value twice: {values}")
        for v in values:
            try:
                build_config(**{**plan.base, opt: v})
            except ConfigError as e:
                choices = props.get(opt, {}).get("enum")
                if choices and v not in choices:
                    hint = _did_you_mean(v, choices) if isinstance(v, str) else ""
                    valid = ", ".join(map(str, choices))
                    msg = f"sweep space: {opt} {v!r} is not a valid {opt} (choices: {valid}){hint}"
                    raise ConfigError(msg) from None
                raise ConfigError(f"sweep space: {opt}: {v!r}: {e}") from None
    if plan.size <= CHECK_ALL_UP_TO:
        for params in combinations(plan.space):
            try:
                build_config(**{**plan.base, **params})
            except ConfigError as e:
                raise ConfigError(f"sweep space: the combination {params} is not a valid config: {e}") from None
    caches = [plan.base.get("cache", TrainConfig.cache), *plan.space.get("cache", [])]
    labels = [plan.base.get("labels"), *plan.space.get("labels", [])]
    for c in itertools.chain.from_iterable([c] if isinstance(c, str) else c for c in caches):
        if "://" not in c and not c.startswith("pipe:") and not Path(c).is_dir():
            raise ConfigError(f"sweep: cache {c} does not exist (or is not a directory)")
    for lab in labels:
        if lab and "://" not in lab and not Path(lab).is_file():
            raise ConfigError(f"sweep: labels {lab} do not exist")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def combinations(space: dict[str, list]) -> list[dict]:
    """Every combination of the space's choices, in order (options sorted, values as written)."""
    keys = sorted(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(space[k] for k in keys))]


def _encode(v):
    """A choice as Optuna stores it: scalars as they are, lists/mappings (e.g. `fields`) as JSON."""
    return v if v is None or isinstance(v, str | int | float | bool) else json.dumps(v, sort_keys=True)


# ---------------------------------------------------------------- samplers


class _GridInOrder(optuna.samplers.GridSampler):
    """Optuna's grid sampler, visiting the combinations in the order written rather than shuffled:
    trial N of a grid is the same on every machine and every run."""

    def __init__(self, space: dict[str, list]):
        super().__init__(space)
        self._all_grids = list(itertools.product(*self._search_space.values()))

    def after_trial(self, study, trial, state, values) -> None:
        """Nothing: the sweep stops itself when the grid is exhausted (GridSampler's study.stop() works
        only inside study.optimize, and trials here are asked and told)."""


class _RandomNoRepeat(optuna.samplers.RandomSampler):
    """Optuna's random sampler (seeded) drawing whole combinations, never one the study already
    holds while unseen ones remain."""

    def __init__(self, space: dict[str, list], seed: int):
        super().__init__(seed=seed)
        self._space, self._draw = space, np.random.default_rng(seed)

    def infer_relative_search_space(self, study, trial):
        return {k: CategoricalDistribution(v) for k, v in self._space.items()}

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        keys = list(self._space)
        seen = {_combo(t, keys) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
        total = math.prod(len(v) for v in self._space.values())
        if total <= CHECK_ALL_UP_TO:
            unseen = [c for c in itertools.product(*self._space.values()) if c not in seen]
            if unseen:
                return dict(zip(keys, unseen[self._draw.integers(len(unseen))], strict=True))
        for _ in range(1000):  # a large space: draws rarely repeat
            c = tuple(v[self._draw.integers(len(v))] for v in self._space.values())
            if c not in seen:
                break
        return dict(zip(keys, c, strict=True))


def _combo(t, keys) -> tuple:
    params = t.params or t.system_attrs.get("fixed_params", {})
    return tuple(params.get(k) for k in keys)


def _sampler(plan: Plan, space: dict[str, list]):
    if plan.sampler == "grid":
        return _GridInOrder(space)
    if plan.sampler == "random":
        return _RandomNoRepeat(space, plan.sampler_seed)
    return optuna.samplers.TPESampler(seed=plan.sampler_seed)


def _pruner(plan: Plan):
    if plan.pruning is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=plan.pruning["startup_trials"], n_warmup_steps=plan.pruning["min_epochs"]
    )


# ---------------------------------------------------------------- the sweep folder


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One sweep process per folder (a lock the OS drops when the process dies)."""
    try:
        import fcntl
    except ImportError:  # not on Windows: no lock
        yield
        return
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"sweep {out}: another mmfit sweep is running in this folder") from None
        yield


def _claim_folder(plan: Plan) -> None:
    """Refuse a folder holding anything but this sweep; record the sweep in a new one."""
    out, stored = plan.out, plan.out / CONFIG_FILE
    identity = json.loads(json.dumps(plan.identity()))  # as YAML gives it back: lists, plain types
    if stored.exists():
        try:
            held = yaml.safe_load(stored.read_text("utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"sweep {out}: cannot read {stored}: {e}") from None
        held = {k: v for k, v in (held or {}).items() if k not in BUDGET}
        if held != identity and not (out / "summary.csv").exists():
            # no trial ever ended here (e.g. trial 0 refused a misspelt monitor): nothing to keep
            (out / STUDY_FILE).unlink(missing_ok=True)
            for d in out.glob("trial-*"):
                shutil.rmtree(d, ignore_errors=True)
            _record(plan, stored, identity)
            return
        if held != identity:
            diff = [k for k in sorted(set(held) | set(identity)) if held.get(k) != identity.get(k)]
            raise ConfigError(
                f"sweep {out} holds a different sweep ({', '.join(diff)} differ from {stored}); "
                "choose another out, or delete that folder to start over"
            )
        return
    if out.exists() and any(out.iterdir()):
        n = sum(1 for _ in out.iterdir())
        raise ConfigError(
            f"sweep {out} already holds {n} entries and no mmfit sweep ({CONFIG_FILE}); choose another out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _record(plan, stored, identity)


def _record(plan: Plan, stored: Path, identity: dict) -> None:
    budget = {k: getattr(plan, k) for k in BUDGET if getattr(plan, k) is not None}
    stored.write_text(yaml.safe_dump({**identity, **budget}, sort_keys=False))


def _trial_dirs(plan: Plan, number: int) -> list[Path]:
    if len(plan.seeds) == 1:
        return [plan.out / f"trial-{number:03d}"]
    return [plan.out / f"trial-{number:03d}-seed{s}" for s in plan.seeds]


def _interrupted(t) -> bool:
    return t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))


def _recover(study: optuna.Study, storage, plan: Plan) -> None:
    """Trials a killed or interrupted run left behind: marked failed, their folders cleared, and their
    combinations queued to run first."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in trials:
        if not _interrupted(t) or t.number in rerun:
            continue
        if t.state == TrialState.RUNNING:
            tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(tid, "interrupted", True)
            storage.set_trial_state_values(tid, TrialState.FAIL)
        for d in _trial_dirs(plan, t.number):
            shutil.rmtree(d, ignore_errors=True)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})


def _counts(study: optuna.Study, plan: Plan) -> tuple[int, int]:
    """(trials finished so far, distinct combinations finished)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not _interrupted(t)]
    return len(done), len({_combo(t, plan.options) for t in done})


# ---------------------------------------------------------------- running


def run_sweep(
    spec: dict,
    on_trial: Callable[[dict], None] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SweepResult:
    """Run (or resume) the sweep `spec`: every check first, then trials until the budget is spent or
    the space exhausted; `on_trial` gets each trial's row as it ends. `pruner` replaces the one the
    config asks for (a test's, or a custom one)."""
    plan = plan_sweep(spec)
    _claim_folder(plan)
    with _locked(plan.out):
        return _run(plan, on_trial, pruner)


def _run(plan: Plan, on_trial, pruner) -> SweepResult:
    space = {k: [_encode(v) for v in vals] for k, vals in plan.space.items()}
    decode = {k: {_encode(v): v for v in vals} for k, vals in plan.space.items()}
    storage = optuna.storages.RDBStorage(f"sqlite:///{(plan.out / STUDY_FILE).resolve()}")
    try:
        study = optuna.create_study(
            storage=storage,
            study_name="sweep",
            load_if_exists=True,
            direction=plan.direction,
            sampler=_sampler(plan, space),
            pruner=pruner or _pruner(plan),
        )
        _recover(study, storage, plan)
        budget = plan.trials if plan.trials is not None else (plan.size if plan.minutes is None else None)
        deadline = time.monotonic() + plan.minutes * 60 if plan.minutes is not None else None
        ran, message = 0, ""
        while True:
            done, distinct = _counts(study, plan)
            if distinct >= plan.size:
                message = (
                    f"the space is exhausted: all {plan.size} combinations have run"
                    if plan.space
                    else "the base config has run (no space to search)"
                )
                break
            if budget is not None and done >= budget:
                message = f"the budget of {budget} trials is spent" if ran else f"all {budget} trials had run"
                break
            if deadline is not None and time.monotonic() >= deadline:
                message = f"the budget of {plan.minutes:g} minutes is spent"
                break
            trial = study.ask({k: CategoricalDistribution(v) for k, v in space.items()})
            _run_trial(plan, study, trial, decode)
            ran += 1
            frozen = study.get_trials(deepcopy=False)[trial.number]
            _write_summary(plan, study)
            if on_trial:
                on_trial(_row(plan, frozen, decode))
        if ran or not (plan.out / "summary.csv").exists():  # a finished sweep run again rewrites nothing
            _write_summary(plan, study)
        rows = [_row(plan, t, decode) for t in study.get_trials(deepcopy=False)]
        best = _best(plan, study, rows)
        return SweepResult(plan.out, plan.monitor, plan.direction, rows, best, ran, message, plan.options)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _run_trial(plan: Plan, study: optuna.Study, trial: optuna.Trial, decode: dict) -> None:
    """Train the trial once per seed and tell the study how it ended."""
    keys = plan.options
    params = {k: decode[k][trial.params[k]] for k in keys}
    if plan.sampler == "tpe":  # TPE may propose a combination again: its result is reused
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
            if t.number == trial.number or _interrupted(t) or _combo(t, keys) != tuple(trial.params[k] for k in keys):
                continue
            trial.set_user_attr("duplicate_of", t.number)
            for k in ("scores", "std", "test"):
                if k in t.user_attrs:
                    trial.set_user_attr(k, t.user_attrs[k])
            if t.state == TrialState.COMPLETE:
                study.tell(trial, t.value)
            else:
                study.tell(trial, state=t.state)
            return
    dirs = _trial_dirs(plan, trial.number)
    trial.set_user_attr("runs", [d.name for d in dirs])
    scores, tests = [], []
    try:
        for i, (seed, d) in enumerate(zip(plan.seeds, dirs, strict=True)):
            if d.exists():  # left by a run that was cut off
                shutil.rmtree(d)
            report = _reporter(plan, trial) if i == 0 else None
            result = train(plan.config(params, seed, d), on_epoch=report)
            scores.append(result.best_score)
            metric = plan.monitor.split("/", 1)[-1]
            if result.test and isinstance(result.test.get(metric), int | float):
                tests.append(float(result.test[metric]))
            trial.set_user_attr("scores", scores)
    except optuna.TrialPruned as e:
        trial.set_user_attr("note", str(e))
        study.tell(trial, state=TrialState.PRUNED)
        return
    except TrainingError as e:
        trial.set_user_attr("note", str(e))
        study.tell(trial, state=TrialState.FAIL)
        return
    except BaseException:
        trial.set_user_attr("interrupted", True)  # run again when the sweep is
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("std", float(np.std(scores)))
    if tests:
        trial.set_user_attr("test", float(np.mean(tests)))
    study.tell(trial, float(np.mean(scores)))


def _reporter(plan: Plan, trial: optuna.Trial) -> Callable[[dict], None]:
    """The trainer's on_epoch: the monitor goes to the study, which may prune the trial."""

    def on_epoch(row: dict) -> None:
        value = row.get(plan.monitor)
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), step=int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"at epoch {row['epoch']}: {plan.monitor} {value:.4f}")

    return on_epoch


# ---------------------------------------------------------------- results


def _row(plan: Plan, t, decode: dict) -> dict:
    params = t.params or t.system_attrs.get("fixed_params", {})
    state = t.state.name
    note = t.user_attrs.get("note", "")
    if _interrupted(t):
        state, note = "INTERRUPTED", "cut off; run again"
    elif "duplicate_of" in t.user_attrs:
        note = f"same as trial {t.user_attrs['duplicate_of']}"
    scores = t.user_attrs.get("scores", [])
    complete = t.state == TrialState.COMPLETE
    return {
        "trial": t.number,
        "state": state,
        "options": {k: decode[k].get(params[k], params[k]) for k in plan.options if k in params},
        "monitor": plan.monitor,
        "mean": t.value if complete else None,
        "std": t.user_attrs.get("std") if complete else None,
        "scores": scores,
        "test": t.user_attrs.get("test"),
        "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
        "note": note,
    }


def _best(plan: Plan, study: optuna.Study, rows: list[dict]) -> dict | None:
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["mean"] is not None]
    if not complete:
        return None
    sign = 1 if plan.direction == "maximize" else -1
    return max(complete, key=lambda r: (sign * r["mean"], -r["trial"]))


def _write_summary(plan: Plan, study: optuna.Study) -> None:
    """summary.csv and summary.json (every trial so far) and best.yaml (the best trial's config)."""
    decode = {k: {_encode(v): v for v in vals} for k, vals in plan.space.items()}
    rows = [_row(plan, t, decode) for t in study.get_trials(deepcopy=False)]
    head = ["trial", "state", *plan.options, "monitor", "mean", "std", "test", "duration_s", "note"]
    tmp = plan.out / "summary.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in rows:
            opts = [_cell(r["options"].get(k)) for k in plan.options]
            cells = [r["monitor"], r["mean"], r["std"], r["test"], r["duration_s"], r["note"]]
            w.writerow([r["trial"], r["state"], *opts, *map(_cell, cells)])
    tmp.replace(plan.out / "summary.csv")
    (plan.out / "summary.json").write_text(json.dumps(rows, indent=1))
    best = _best(plan, study, rows)
    if best is not None:
        cfg = plan.config(best["options"], plan.seeds[0], plan.out / "best").to_dict()
        text = f"# the best trial of sweep {plan.out}: trial {best['trial']}, {plan.monitor} {best['mean']:.4f}\n"
        (plan.out / "best.yaml").write_text(text + yaml.safe_dump(cfg, sort_keys=False))


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v if isinstance(v, str) else json.dumps(v)


def trial_line(r: dict) -> str:
    """One progress line for a trial that has just ended."""
    score = f"{r['monitor']} {r['mean']:.4f} ± {r['std']:.4f}" if r["mean"] is not None else r["state"].lower()
    note = f" ({r['note']})" if r["note"] else ""
    took = f" in {r['duration_s']:.1f}s" if r["duration_s"] is not None else ""
    return f"trial {r['trial']} {r['options']}: {score}{took}{note}"


def ranked(res: SweepResult) -> list[dict]:
    """The trials best first: complete ones by their mean, then pruned, failed and interrupted ones."""
    sign = -1 if res.direction == "maximize" else 1
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    return sorted(res.rows, key=lambda r: (order.get(r["state"], 3), sign * (r["mean"] or 0), r["trial"]))
