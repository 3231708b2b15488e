"""A search's study: storage, search space, sampler, the per-trial scope and the budget. The
report at the search's end is in :mod:`.report` (Optuna's pictures, the best trial as a
``dvc exp run`` command).

The sweeper (:mod:`.sweeper`) drives it; :mod:`petvision.search` is what runs inside each trial,
the only part of a search a stage imports. This code lives here, beside its driver, and not in
``petvision.search``: every stage's dvc.yaml deps name that package, so a change to the study
side would rerun every stage. Several worker processes (on one machine or several) share one
study through its SQL storage: Optuna's own distributed mode. Each worker asks the study for a
trial, runs it, tells the result, and stops when the study's budget is spent.

Hydra imports every module of this package at every start: Optuna, SQLAlchemy and Hydra's
override parser are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petvision.core import paths
from petvision.core.errors import ConfigError

log = logging.getLogger(__name__)

PARENT_RUN_ATTR = "mlflow_run_id"  # study user attr: the search's MLflow run
OVERRIDES_ATTR = "overrides"  # trial user attr: the Hydra overrides the trial's job ran with
RUN_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
SEARCH_GROUP = (
    "hparams_search"  # the config group that selects a search: not part of a trial's values
)
STORAGE_ATTEMPTS = 5  # a new storage: workers starting together race to create it
PARENT_WAIT_S = 120.0  # how long a worker waits for the study's creator to record the search's run

# --------------------------------------------------------------------------- storage


def storage_url(url: str) -> str:
    """A relative ``sqlite:///`` path is taken against the project root, not the working
    directory (Hydra jobs change it), so every worker of a checkout finds the same file."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path.split("?", 1)[0]).is_absolute():
            return f"sqlite:///{paths.project_root() / path}"
    return url


def shown_url(url: str) -> str:
    """The storage URL without its password, for logs and MLflow."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy knows: show its scheme only
        return url.split(":", 1)[0] + ":..."


def make_storage(url: str, heartbeat_interval: int) -> Any:
    """Optuna's RDB storage. Workers send a heartbeat while they run a trial; a trial whose
    worker died (no heartbeat for two intervals) is marked failed and its parameters are queued
    again once, so a killed worker loses no point of the search."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers write the same file: wait for the lock rather than fail at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # heartbeats are "experimental" (since Optuna 2.8)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=1
                    ),
                )
        except Exception as exc:  # whatever it is, the storage cannot be used
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # Workers starting together on a new storage race to create its tables: one wins,
            # the others fail on a unique constraint (or a lock), then find the tables made.
            racing = "UNIQUE constraint" in first or "already exists" in first or "locked" in first
            if racing and attempt < STORAGE_ATTEMPTS - 1:
                time.sleep(0.5 * 2**attempt)
                continue
            raise ConfigError(
                f"hydra.sweeper.storage={shown_url(url)}: cannot open the study storage "
                f"({first[:300]})"
            ) from None
    raise AssertionError("unreachable")


def open_study(
    name: str, storage: Any, sampler: Any, pruner: Any, direction: str
) -> tuple[Any, bool]:
    """The study ``name``, created if it does not exist yet; True if this call created it.
    Creating is atomic in the storage (a unique name), so of several workers starting at once
    exactly one is the creator."""
    import optuna

    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,  # type: ignore[arg-type]  # checked by the sweeper
            load_if_exists=False,
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    wanted = (
        optuna.study.StudyDirection.MAXIMIZE
        if direction == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
    )
    if study.direction != wanted:
        raise ConfigError(
            f"hydra.sweeper.direction={direction}: study {name!r} was created to "
            f"{study.direction.name.lower()}; use another hydra.sweeper.study_name"
        )
    return study, False


def wait_for_parent_run(study: Any, created: bool, wait_s: float = PARENT_WAIT_S) -> str | None:
    """The search's MLflow run id recorded in the study; a worker that did not create the study
    waits a little for its creator to record it. None: this worker starts it."""
    deadline = time.monotonic() + (0.0 if created else wait_s)
    while True:
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id or time.monotonic() >= deadline:
            return run_id
        time.sleep(0.5)


# --------------------------------------------------------------------------- sampler


def seeded_per_trial(make: Callable[[int | None], Any], seed: int | None) -> Any:
    """The sampler ``make(seed)`` builds, made afresh for every trial with a seed drawn from
    (``seed``, trial number). One worker then repeats a search exactly, and workers sharing a
    study never draw the same "random" points, as one seed in every worker would make them."""
    import numpy as np
    import optuna

    if seed is None:
        return make(None)

    class SeedPerTrial(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = make(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            trial_seed = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
            self.inner = make(trial_seed)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, param_distribution: Any
        ) -> Any:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def __str__(self) -> str:
            return f"{type(self.inner).__name__}(seed={seed}, per trial)"

    return SeedPerTrial()


# --------------------------------------------------------------------------- search space


@dataclass
class Space:
    """What a trial varies (Optuna distributions by override key) and what it fixes (overrides)."""

    distributions: dict[str, Any]
    fixed: list[str]


def parse_space(params: dict[str, Any], arguments: Sequence[str]) -> Space:
    """``hydra.sweeper.params`` and the command line's overrides, in Hydra's sweep syntax:
    ``choice(a, b)`` a category, ``interval(lo, hi)`` a range (``tag(log, interval(...))`` on a log
    scale; integers give integers), ``range(lo, hi, step=s)`` a grid (``hi`` excluded, as in
    Python). A plain value is fixed. A command line value wins over ``params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    written = [f"{key}={value}" for key, value in params.items()]
    try:
        overrides = parser.parse_overrides(written) + parser.parse_overrides(list(arguments))
    except Exception as exc:  # Hydra's message names the override
        raise ConfigError(f"hydra.sweeper.params: {exc}") from None
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = _distribution(key, override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return Space(distributions, list(fixed.values()))


def _distribution(key: str, override: Any) -> Any:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value: Any = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        choices: list[Any] = list(value.list)
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start: Any = value.start
        stop: Any = value.stop
        step: Any = value.step
        points = math.ceil((stop - start) / step) if step else 0
        if points < 1:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: range({start}, {stop}, step={step}) is empty"
            )
        last = start + (points - 1) * step
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(last), step=int(step))
        return FloatDistribution(float(start), float(last), step=float(step))
    if isinstance(value, IntervalSweep):
        low: Any = value.start
        high: Any = value.end
        if log_scale and low <= 0:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: a log scale needs a positive lower bound, not {low}"
            )
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    raise ConfigError(
        f"hydra.sweeper.params.{key}: {override.input_line!r} is not a choice, range or interval"
    )


def suggest(trial: Any, distributions: dict[str, Any]) -> dict[str, Any]:
    """The trial's values, drawn through Optuna's public suggest API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[key] = trial.suggest_float(
                key, dist.low, dist.high, step=dist.step, log=dist.log
            )
    return values


_PLAIN = re.compile(r"[A-Za-z_][\w\-./]*")


def override_value(value: Any) -> str:
    """``value`` written so that Hydra's override parser (and DVC's ``-S``) reads it back as it
    was."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in ("true", "false", "null", "inf", "nan"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_overrides(space: Space, values: dict[str, Any]) -> list[str]:
    return [*space.fixed, *(f"{key}={override_value(v)}" for key, v in values.items())]


# --------------------------------------------------------------------------- a trial


@contextlib.contextmanager
def trial_scope(trial: Any, objective: str, run_tags: dict[str, str]) -> Iterator[list[str]]:
    """Run a stage job as ``trial``: the stage's hooks (:mod:`petvision.search`) serve it, and the
    MLflow runs it starts get ``run_tags``. Yields the ids of those runs (one: the trial's run)."""
    from petvision import search, tracking

    with search.active_trial(trial, objective), tracking.runs_tagged(run_tags) as started:
        yield started


# --------------------------------------------------------------------------- budget


def fail_stale_trials(study: Any) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped sending heartbeats (it died)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def budget_spent(study: Any, n_trials: int | None) -> bool:
    """Whether the study holds ``n_trials`` trials that count: finished (complete or pruned) or
    running in some worker. Failed trials do not count, so an interrupted search, started
    again, runs what is left."""
    if n_trials is None:
        return False
    from optuna.trial import TrialState

    # A trial of a dead worker is not running: fail it (and queue its parameters again) before
    # counting, or it would hold its place in the budget for ever.
    fail_stale_trials(study)
    counted = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    return len(counted) >= n_trials
